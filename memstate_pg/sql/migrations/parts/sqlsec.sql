-- sqlsec (issue 11, isolation round 2): the DDL that CREATE OR REPLACE of sql/functions.sql,
-- sql/rls.sql and sql/roles.sql cannot carry. Idempotent. Order in migration 0003:
--   1. the ALTER TABLE below (functions.sql's _facts_rules and delete paths use the column);
--   2. the new sql/functions.sql (every function redefined with a pinned search_path, the new
--      helpers memstate._check_sizes, _vector_dims, _vector_norm, _vector_schema,
--      _mirror_access, _versions_rules, _facts_delete; the views current_facts (one
--      statement, security_invoker) and the NEW view memstate.mirror_info);
--   3. (the new triggers are in sql/functions.sql itself);
--   4. where installed, sql/rls.sql and sql/roles.sql again (`memstate-pg rls on`,
--      `memstate-pg roles`): roles.sql now grants memstate_app column-level UPDATE and no
--      DELETE on facts, no INSERT on outbox, no SELECT on mirrors (mirror_info instead).

-- item 4: deletes mark the row; the facts_delete trigger (SECURITY DEFINER) removes it.
ALTER TABLE memstate.facts ADD COLUMN IF NOT EXISTS deleted_by bigint;

-- (the triggers fact_versions_rules, facts_delete and the INSERT-firing commits_append_only
-- are CREATE OR REPLACE TRIGGER statements in sql/functions.sql, which 0003 re-runs after
-- the parts: they need the functions this release adds.)
