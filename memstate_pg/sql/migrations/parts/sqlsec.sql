-- sqlsec (issue 11, isolation round 2): the DDL that CREATE OR REPLACE of sql/functions.sql,
-- sql/rls.sql and sql/roles.sql cannot carry. Idempotent. Order in migration 0003:
--   1. the ALTER TABLE below (functions.sql's _facts_rules and delete paths use the column);
--   2. the new sql/functions.sql (every function redefined with a pinned search_path, the new
--      helpers memstate._check_sizes, _vector_dims, _vector_norm, _vector_schema,
--      _mirror_access, _versions_rules, _facts_delete; the views current_facts (one
--      statement, security_invoker) and the NEW view memstate.mirror_info);
--   3. the triggers below;
--   4. where installed, sql/rls.sql and sql/roles.sql again (`memstate-pg rls on`,
--      `memstate-pg roles`): roles.sql now grants memstate_app column-level UPDATE and no
--      DELETE on facts, no INSERT on outbox, no SELECT on mirrors (mirror_info instead).

-- item 4: deletes mark the row; the facts_delete trigger (SECURITY DEFINER) removes it.
ALTER TABLE memstate.facts ADD COLUMN IF NOT EXISTS deleted_by bigint;

-- item 3 and 5: fact ids belong to one namespace, versions are contiguous, size limits hold
-- for raw INSERTs (memstate._versions_rules, SECURITY DEFINER).
CREATE OR REPLACE TRIGGER fact_versions_rules BEFORE INSERT ON memstate.fact_versions
    FOR EACH ROW EXECUTE FUNCTION memstate._versions_rules();

-- item 4
CREATE OR REPLACE TRIGGER facts_delete AFTER UPDATE OF deleted_by ON memstate.facts
    FOR EACH ROW WHEN (NEW.deleted_by IS NOT NULL) EXECUTE FUNCTION memstate._facts_delete();

-- item 13: a commit is born without bookkeeping (undoes, undone_by, result) and only gains it.
CREATE OR REPLACE TRIGGER commits_append_only BEFORE INSERT OR UPDATE OR DELETE ON memstate.commits
    FOR EACH ROW EXECUTE FUNCTION memstate._append_only();
