-- memstate-pg Row Level Security by namespace (opt-in; see SECURITY.md).
--
-- Applied by `memstate-pg migrate --rls`, memstate_pg.security.enable_rls(dsn), or by hand
-- after schema.sql and functions.sql (re-runnable; run it again after every upgrade):
--     psql "$DSN" -v ON_ERROR_STOP=1 -1 -f sql/rls.sql
-- sql/unrls.sql turns it off again (the grants are kept).
--
-- The boundary is the database ROLE. Which namespaces a role may touch is written in
-- memstate.namespace_grants (role, pattern): a row applies to that role and to every role
-- that has its privileges (a member with INHERIT), exactly like a GRANT. Patterns are globs:
--     `*` matches any run of characters (also none); every other character matches itself,
--     `%`, `_` and `?` included; `\*` is a literal star and `\\` a literal backslash.
--     'tenant-42' -> just that namespace, 'tenant-42/*' -> its sub-namespaces, '*' -> all.
-- The session setting `memstate.namespace` (SET [LOCAL] memstate.namespace = 'x') only
-- NARROWS: when set, a row must also have exactly that namespace. Any client can change a
-- setting, so it is defence in depth for a well-behaved client, never the boundary.
--
-- Policies cover every table whose rows carry a namespace: facts, fact_versions, commits,
-- outbox (and lg_ttl through its fact), plus mirrors by the namespaces they cover. Without
-- a matching grant a role sees nothing and writes nothing: fail closed.
--
-- RLS is ENABLEd, not FORCEd: the owner of the tables (the role that runs migrations) is
-- the administrator and keeps seeing every row, as a superuser does; it could switch RLS
-- off anyway. Never run agents as the owner: give them login roles IN memstate_app
-- (sql/roles.sql). memstate_pg.security.enable_rls(dsn, force=True) adds FORCE for
-- deployments where the owner must be bound too (then it needs grants of its own).
--
-- Every helper pins search_path, and the policy expressions are bound when created
-- (schema-qualified operators), so a caller's search_path cannot change their meaning.

CREATE SCHEMA IF NOT EXISTS memstate;

CREATE TABLE IF NOT EXISTS memstate.namespace_grants (
    role       name NOT NULL,
    pattern    text NOT NULL CHECK (length(pattern) BETWEEN 1 AND 200),
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name NOT NULL DEFAULT current_user,
    PRIMARY KEY (role, pattern)
);

-- ---------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------

-- A glob (see above) as a LIKE pattern with the default escape character `\`. Backslashes
-- are written as E'' strings: the body compiles the same under standard_conforming_strings
-- = off (a plain '\' would be an unterminated string there, and every policy would fail).
CREATE OR REPLACE FUNCTION memstate.glob_to_like(p_pattern text)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_out text := '';
    v_c   text;
    v_esc boolean := false;
BEGIN
    FOR i IN 1 .. length(p_pattern) LOOP
        v_c := substr(p_pattern, i, 1);
        IF v_esc THEN
            v_out := v_out || CASE WHEN v_c IN ('%', '_', E'\\') THEN E'\\' || v_c ELSE v_c END;
            v_esc := false;
        ELSIF v_c = E'\\' THEN
            v_esc := true;
        ELSIF v_c = '*' THEN
            v_out := v_out || '%';
        ELSIF v_c IN ('%', '_') THEN
            v_out := v_out || E'\\' || v_c;
        ELSE
            v_out := v_out || v_c;
        END IF;
    END LOOP;
    IF v_esc THEN
        v_out := v_out || E'\\\\';  -- a trailing backslash stands for itself
    END IF;
    RETURN v_out;
END $$;

-- Whether a grant row written for `p_role` applies to the current role: it is that role,
-- or has its privileges (member with INHERIT). A role that no longer exists applies to no one.
CREATE OR REPLACE FUNCTION memstate.grant_applies(p_role name)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.rolname = p_role AND pg_catalog.pg_has_role(r.oid, 'USAGE'))
$$;

-- The LIKE patterns of the namespaces the current role may touch (its grants and those of
-- the roles it inherits from). Evaluated once per statement by the policies.
CREATE OR REPLACE FUNCTION memstate.namespace_patterns()
RETURNS text[] LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(memstate.glob_to_like(g.pattern) ORDER BY g.pattern), '{}')
    FROM memstate.namespace_grants g
    WHERE memstate.grant_applies(g.role)
$$;

-- The narrowing namespace of this session or transaction (`memstate.namespace`), or NULL.
CREATE OR REPLACE FUNCTION memstate.namespace_setting()
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(current_setting('memstate.namespace', true), '')
$$;

-- The rule of every policy, for one namespace: granted, and equal to the narrowing
-- setting when there is one. NULL namespaces are never accessible.
CREATE OR REPLACE FUNCTION memstate.may_access(p_namespace text)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(p_namespace LIKE ANY (memstate.namespace_patterns())
                    AND (memstate.namespace_setting() IS NULL OR p_namespace = memstate.namespace_setting()),
                    false)
$$;

-- Whether the current role sees every namespace of `p_namespaces` (NULL: every namespace
-- there is, which takes a '*' grant). Always true where RLS does not bind the role (RLS
-- off, owner, superuser, BYPASSRLS). Reconciliation needs this before it deletes "ghosts":
-- a fact it cannot see is not a ghost.
CREATE OR REPLACE FUNCTION memstate.sees_all(p_namespaces text[] DEFAULT NULL)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT coalesce(pg_catalog.row_security_active('memstate.facts'::regclass), false)
        OR CASE WHEN p_namespaces IS NULL
                THEN '%' = ANY (memstate.namespace_patterns()) AND memstate.namespace_setting() IS NULL
                ELSE NOT EXISTS (SELECT 1 FROM unnest(p_namespaces) n WHERE NOT memstate.may_access(n))
           END
$$;

-- sees_all() for the namespaces a registered mirror covers (NULL when the mirror is unknown
-- or invisible to this role).
CREATE OR REPLACE FUNCTION memstate.can_reconcile(p_mirror text)
RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT memstate.sees_all(m.namespaces) FROM memstate.mirrors m WHERE m.name = p_mirror
$$;

-- ---------------------------------------------------------------------------------------
-- Policies
-- ---------------------------------------------------------------------------------------

-- The grants table itself: a role reads only the rows that apply to it (and the owner all);
-- only the owner writes it (no INSERT/UPDATE/DELETE privilege is granted to anyone).
ALTER TABLE memstate.namespace_grants ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_grants ON memstate.namespace_grants;
CREATE POLICY own_grants ON memstate.namespace_grants FOR SELECT
    USING (memstate.grant_applies(role));
GRANT SELECT ON memstate.namespace_grants TO PUBLIC;

DO $rls$
DECLARE
    v_path text := pg_catalog.current_setting('search_path');
    -- `namespace` is granted and matches the narrowing setting; both sub-selects are
    -- evaluated once per statement (init plans), not once per row.
    v_ok constant text :=
        '(namespace OPERATOR(pg_catalog.~~) ANY ((SELECT memstate.namespace_patterns())::text[]) '
        'AND ((SELECT memstate.namespace_setting()) IS NULL '
        '     OR namespace OPERATOR(pg_catalog.=) (SELECT memstate.namespace_setting())))';
    -- a mirror is visible when it covers every namespace (NULL) or one the role may touch
    v_mirror constant text :=
        '(namespaces IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.unnest(namespaces) AS n(ns) '
        ' WHERE n.ns OPERATOR(pg_catalog.~~) ANY ((SELECT memstate.namespace_patterns())::text[]) '
        '   AND ((SELECT memstate.namespace_setting()) IS NULL '
        '        OR n.ns OPERATOR(pg_catalog.=) (SELECT memstate.namespace_setting()))))';
    v_table text;
    v_policy record;
BEGIN
    -- what runs here resolves in pg_catalog only (restored at the end), as in the functions
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    -- start from a clean slate on every memstate table we manage
    FOR v_policy IN
        SELECT p.policyname, p.tablename FROM pg_catalog.pg_policies p
        WHERE p.schemaname = 'memstate' AND p.policyname LIKE E'ns\\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON memstate.%I', v_policy.policyname, v_policy.tablename);
    END LOOP;

    -- current state: read and write rows of the granted namespaces only
    ALTER TABLE memstate.facts ENABLE ROW LEVEL SECURITY;
    EXECUTE format('CREATE POLICY ns_facts ON memstate.facts FOR ALL USING %s WITH CHECK %s', v_ok, v_ok);

    -- the version log: append-only, and a version row must belong to a commit of its own
    -- namespace that this role can see (else a client that forges the setting
    -- memstate.open_commits could hang its versions on another tenant's commit)
    ALTER TABLE memstate.fact_versions ENABLE ROW LEVEL SECURITY;
    EXECUTE format('CREATE POLICY ns_versions_read ON memstate.fact_versions FOR SELECT USING %s', v_ok);
    EXECUTE format(
        'CREATE POLICY ns_versions_append ON memstate.fact_versions FOR INSERT WITH CHECK (%s AND EXISTS ('
        'SELECT 1 FROM memstate.commits c WHERE c.seq OPERATOR(pg_catalog.=) fact_versions.seq '
        'AND c.namespace OPERATOR(pg_catalog.=) fact_versions.namespace))', v_ok);

    -- commits: created and marked undone in granted namespaces; never deleted
    ALTER TABLE memstate.commits ENABLE ROW LEVEL SECURITY;
    EXECUTE format('CREATE POLICY ns_commits_read ON memstate.commits FOR SELECT USING %s', v_ok);
    EXECUTE format('CREATE POLICY ns_commits_insert ON memstate.commits FOR INSERT WITH CHECK %s', v_ok);
    EXECUTE format('CREATE POLICY ns_commits_update ON memstate.commits FOR UPDATE USING %s WITH CHECK %s',
                   v_ok, v_ok);

    -- outbox: written by the writers' trigger, claimed and deleted by sync workers
    -- (a row names a fact of its own namespace, so a writer cannot queue another tenant's
    -- facts: the worker would only re-send their current state, but there is no need to)
    ALTER TABLE memstate.outbox ENABLE ROW LEVEL SECURITY;
    EXECUTE format('CREATE POLICY ns_outbox_read ON memstate.outbox FOR SELECT USING %s', v_ok);
    EXECUTE format(
        'CREATE POLICY ns_outbox_insert ON memstate.outbox FOR INSERT WITH CHECK (%s AND EXISTS ('
        'SELECT 1 FROM memstate.fact_versions v WHERE v.fact_id OPERATOR(pg_catalog.=) outbox.fact_id '
        'AND v.namespace OPERATOR(pg_catalog.=) outbox.namespace))', v_ok);
    EXECUTE format('CREATE POLICY ns_outbox_update ON memstate.outbox FOR UPDATE USING %s WITH CHECK %s',
                   v_ok, v_ok);
    EXECUTE format('CREATE POLICY ns_outbox_delete ON memstate.outbox FOR DELETE USING %s', v_ok);

    -- mirrors: visible (and their status updatable) when they cover a granted namespace.
    -- Only memstate_sync reads the registry (sql/roles.sql); writers need not: the outbox
    -- trigger runs with its owner's rights, and status() reads memstate.mirror_info, which
    -- hides the namespace lists and reconcile reports a role may not fully see.
    -- No INSERT/DELETE policy: registering and removing mirrors is for the owner.
    ALTER TABLE memstate.mirrors ENABLE ROW LEVEL SECURITY;
    EXECUTE format('CREATE POLICY ns_mirrors_read ON memstate.mirrors FOR SELECT USING %s', v_mirror);
    EXECUTE format('CREATE POLICY ns_mirrors_status ON memstate.mirrors FOR UPDATE USING %s WITH CHECK %s',
                   v_mirror, v_mirror);

    -- LangGraph store TTL clocks (sql/langgraph.sql), when installed: keyed by fact id, so
    -- a clock is visible exactly when its fact is.
    IF pg_catalog.to_regclass('memstate.lg_ttl') IS NOT NULL THEN
        ALTER TABLE memstate.lg_ttl ENABLE ROW LEVEL SECURITY;
        EXECUTE 'CREATE POLICY ns_lg_ttl ON memstate.lg_ttl FOR ALL '
                'USING (EXISTS (SELECT 1 FROM memstate.facts f WHERE f.fact_id OPERATOR(pg_catalog.=) lg_ttl.fact_id)) '
                'WITH CHECK (EXISTS (SELECT 1 FROM memstate.facts f WHERE f.fact_id OPERATOR(pg_catalog.=) lg_ttl.fact_id))';
    END IF;

    -- A view runs with its owner's rights unless it is security_invoker (PostgreSQL 15+):
    -- without this, memstate.current_facts would show every namespace to anyone who may
    -- select from it. On older servers nobody but the owner may read it.
    IF pg_catalog.to_regclass('memstate.current_facts') IS NOT NULL THEN
        IF current_setting('server_version_num')::int >= 150000 THEN
            ALTER VIEW memstate.current_facts SET (security_invoker = true);
            FOR v_table IN SELECT unnest(ARRAY['memstate_app', 'memstate_reader']) LOOP
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_table) THEN
                    EXECUTE format('GRANT SELECT ON memstate.current_facts TO %I', v_table);  -- sql/roles.sql
                END IF;
            END LOOP;
        ELSE
            REVOKE ALL ON memstate.current_facts FROM PUBLIC;
            FOR v_table IN SELECT unnest(ARRAY['memstate_app', 'memstate_reader', 'memstate_sync']) LOOP
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_table) THEN
                    EXECUTE format('REVOKE ALL ON memstate.current_facts FROM %I', v_table);
                END IF;
            END LOOP;
        END IF;
    END IF;
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$rls$;
