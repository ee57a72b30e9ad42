-- memstate-pg least-privilege roles (see SECURITY.md). Re-runnable; run it again after every
-- upgrade (new tables get their grants) with `memstate-pg roles`,
-- memstate_pg.security.create_roles(dsn), or by hand after schema.sql and functions.sql:
--     psql "$DSN" -v ON_ERROR_STOP=1 -1 -f sql/roles.sql
--
-- Three NOLOGIN group roles; nobody logs in as them. Create a login role per agent, tenant
-- or service IN one of them, then say which namespaces it may touch (with RLS on, sql/rls.sql):
--     CREATE ROLE agent_t42 LOGIN PASSWORD '...' IN ROLE memstate_app;
--     INSERT INTO memstate.namespace_grants (role, pattern) VALUES ('agent_t42', 'tenant-42/*');
--         -- or: memstate-pg grant agent_t42 'tenant-42/*'
--     CREATE ROLE memstate_worker LOGIN PASSWORD '...' IN ROLE memstate_sync;
--     INSERT INTO memstate.namespace_grants (role, pattern) VALUES ('memstate_worker', '*');
-- A grant written for a group role applies to all its members, like a GRANT.
--
--   memstate_reader  read and search: facts, history, as_of, commits, mirror status
--                    (memstate.mirror_info, never the registry memstate.mirrors).
--   memstate_app     memstate_reader + write facts through the SQL functions: put, update,
--                    delete, transactions, rollback, revert, sessions. Not: register types or
--                    embedding models (global, they affect every tenant; register_model also
--                    builds an index, which takes ownership of memstate.facts), DDL, grants,
--                    mirrors, the outbox, changing or deleting history. No table-level
--                    UPDATE or DELETE anywhere: either would allow LOCK TABLE, which would
--                    stall every tenant (deletes of facts go through the facts_delete trigger).
--   memstate_sync    the sync worker and reconciliation: read current facts and mirrors,
--                    claim (SELECT ... FOR UPDATE), back off and delete outbox rows, update
--                    the mirror status columns. Nothing else: it cannot write facts,
--                    versions or commits. Its DELETE on the outbox also allows LOCK TABLE
--                    memstate.outbox (memstate-pg roles reports such lock holders).
-- Types and models are registered by the administrator (the owner of schema memstate,
-- which also runs migrations); app processes may call register_schema() for a type that is
-- already registered with the same definition only if their store skips unchanged types.
--
-- Identity columns (commits.seq, outbox.id) need no sequence privilege: PostgreSQL draws
-- their values without a permission check, so no role gets USAGE on a sequence.
-- Functions keep PostgreSQL's default EXECUTE for PUBLIC: they are SECURITY INVOKER and can
-- do nothing the caller's table privileges and policies do not allow, except four trigger
-- functions (SECURITY DEFINER, see sql/functions.sql), which cannot be called directly, and
-- the compaction functions (memstate.compact_*, SECURITY DEFINER), whose EXECUTE
-- sql/functions.sql revokes from PUBLIC: only the owner compacts. memstate.compactions
-- (the horizons) is granted to nobody.
-- The LangGraph checkpointer tables (lg_checkpoints, lg_blobs, lg_writes) carry no memstate
-- namespace, so none of these roles gets them; grant them to a dedicated role if you use
-- MemStateCheckpointer under these roles (see SECURITY.md).

DO $roles$
DECLARE
    v_path text := pg_catalog.current_setting('search_path');
    v_role text;
BEGIN
    -- what runs here resolves in pg_catalog only (restored at the end), as in the functions
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    FOREACH v_role IN ARRAY ARRAY['memstate_app', 'memstate_reader', 'memstate_sync'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent run
            END;
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$roles$;

DO $grants$
DECLARE
    v_path text := pg_catalog.current_setting('search_path');
    v_roles constant text := 'memstate_app, memstate_reader, memstate_sync';
    v_schema name;
BEGIN
    -- what runs here resolves in pg_catalog only (restored at the end), as in the functions
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    -- start from nothing, so that this file alone says what the roles hold
    EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA memstate FROM ' || v_roles;
    EXECUTE 'REVOKE ALL ON ALL SEQUENCES IN SCHEMA memstate FROM ' || v_roles;

    EXECUTE 'GRANT USAGE ON SCHEMA memstate TO ' || v_roles;
    SELECT n.nspname INTO v_schema FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector';
    IF v_schema IS NOT NULL THEN  -- the vector type lives there
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', v_schema, v_roles);
    END IF;

    -- what every role reads: the registries, and the migration state (so a client can tell
    -- the schema is current without trying to migrate it)
    EXECUTE 'GRANT SELECT ON memstate.types, memstate.embedding_models, memstate.config TO ' || v_roles;
    IF pg_catalog.to_regclass('memstate.alembic_version') IS NOT NULL THEN
        EXECUTE 'GRANT SELECT ON memstate.alembic_version TO ' || v_roles;
    END IF;

    -- the mirrors as each role may know them (memstate.status()); the registry itself
    -- (memstate.mirrors: every namespace a mirror covers, its options) is the worker's
    IF pg_catalog.to_regclass('memstate.mirror_info') IS NOT NULL THEN
        EXECUTE 'GRANT SELECT ON memstate.mirror_info TO ' || v_roles;
    END IF;

    -- memstate_reader: read and search
    GRANT SELECT ON memstate.facts, memstate.fact_versions, memstate.commits, memstate.outbox
        TO memstate_reader;

    -- memstate_app: read, and the write path of sql/functions.sql
    GRANT SELECT ON memstate.facts, memstate.fact_versions, memstate.commits, memstate.outbox
        TO memstate_app;
    -- INSERT and column-level UPDATE only: a table-level UPDATE or DELETE privilege would
    -- also allow LOCK TABLE memstate.facts, stalling every tenant. Deletes mark the row
    -- (deleted_by) and the facts_delete trigger removes it (sql/functions.sql).
    GRANT INSERT ON memstate.facts TO memstate_app;
    GRANT UPDATE (session_id, payload, content, embedding, embedding_model, version, commit_seq,
                  updated_at, deleted_by)
        ON memstate.facts TO memstate_app;
    GRANT INSERT ON memstate.fact_versions TO memstate_app;               -- append-only log
    GRANT INSERT ON memstate.commits TO memstate_app;
    GRANT UPDATE (undoes, undone_by, result) ON memstate.commits TO memstate_app;  -- undo bookkeeping
    -- (no outbox privilege beyond SELECT: the outbox trigger runs with its owner's rights)

    -- memstate_sync: current state, outbox claiming, mirror status
    GRANT SELECT ON memstate.facts, memstate.mirrors, memstate.outbox TO memstate_sync;
    GRANT UPDATE (attempts, last_error, available_at, dead_at), DELETE ON memstate.outbox TO memstate_sync;
    GRANT UPDATE (last_synced_seq, last_synced_at, last_reconciled_at, last_reconcile)
        ON memstate.mirrors TO memstate_sync;
    -- the per-fact locks of the sync path (FOR UPDATE needs UPDATE); nobody else may lock them
    IF pg_catalog.to_regclass('memstate.sync_slots') IS NOT NULL THEN
        GRANT SELECT, UPDATE ON memstate.sync_slots TO memstate_sync;
    END IF;

    -- the view, only while it runs with the caller's rights (security_invoker, PostgreSQL 15+,
    -- set by sql/rls.sql): otherwise it would read every namespace with its owner's rights
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class
               WHERE oid = 'memstate.current_facts'::regclass
                 AND 'security_invoker=true' = ANY (coalesce(reloptions, '{}'))) THEN
        GRANT SELECT ON memstate.current_facts TO memstate_reader, memstate_app;
    END IF;

    -- LangGraph store TTL clocks, when installed (their rows follow their fact's namespace)
    IF pg_catalog.to_regclass('memstate.lg_ttl') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON memstate.lg_ttl TO memstate_app;
        GRANT SELECT ON memstate.lg_ttl TO memstate_reader;
    END IF;
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$grants$;
