-- Removes everything memstate-pg created except its alembic version table (the downgrade
-- of revision 0001). The pgvector extension stays: other schemas may use it.
DROP VIEW IF EXISTS memstate.current_facts, memstate.mirror_info;
DROP TABLE IF EXISTS memstate.compactions, memstate.reembed_vectors, memstate.namespace_models, memstate.sync_slots, memstate.outbox, memstate.mirrors, memstate.fact_versions, memstate.facts,
    memstate.commits, memstate.types, memstate.embedding_models, memstate.config CASCADE;
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'memstate' LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', f);
    END LOOP;
END $$;
