-- Turns memstate-pg Row Level Security off again (the inverse of sql/rls.sql):
--     psql "$DSN" -v ON_ERROR_STOP=1 -1 -f sql/unrls.sql
-- or memstate_pg.security.disable_rls(dsn) / `memstate-pg rls off`.
--
-- The policies are dropped and RLS is disabled on every memstate table, so every role sees
-- every namespace its table privileges allow. memstate.namespace_grants and the helper
-- functions stay (with their data): running sql/rls.sql again restores the same boundary.
-- memstate.current_facts stays security_invoker, which is harmless without policies.

DO $unrls$
DECLARE
    v_path text := pg_catalog.current_setting('search_path');
    v_policy record;
    v_table  text;
BEGIN
    -- what runs here resolves in pg_catalog only (restored at the end), as in the functions
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    FOR v_policy IN
        SELECT p.policyname, p.tablename FROM pg_catalog.pg_policies p
        WHERE p.schemaname = 'memstate' AND p.policyname LIKE E'ns\\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON memstate.%I', v_policy.policyname, v_policy.tablename);
    END LOOP;
    FOR v_table IN
        SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'memstate' AND c.relkind IN ('r', 'p')
          AND c.relname IN ('facts', 'fact_versions', 'commits', 'outbox', 'mirrors', 'lg_ttl')
    LOOP
        EXECUTE format('ALTER TABLE memstate.%I NO FORCE ROW LEVEL SECURITY', v_table);
        EXECUTE format('ALTER TABLE memstate.%I DISABLE ROW LEVEL SECURITY', v_table);
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$unrls$;
