"""The shape of schema memstate, for comparing two databases object by object."""

from __future__ import annotations

import psycopg

# name -> query returning (key, definition) rows; the version table is not part of the shape
QUERIES: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text || ' rls=' || c.relrowsecurity || ' force='
               || c.relforcerowsecurity || ' options=' || coalesce(c.reloptions::text, '')
               || ' acl=' || coalesce(c.relacl::text, '')
        FROM pg_class c WHERE c.relnamespace = 'memstate'::regnamespace
          AND c.relname NOT LIKE 'alembic_version%'""",
    "columns": """
        SELECT c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
               || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'memstate'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
          AND c.relname <> 'alembic_version' AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'memstate'::regnamespace
          AND conrelid <> coalesce(to_regclass('memstate.alembic_version'), 0)""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'memstate' AND tablename <> 'alembic_version'""",
    "functions": """
        SELECT p.oid::regprocedure::text,
               pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '')
        FROM pg_proc p WHERE p.pronamespace = 'memstate'::regnamespace
          AND p.prokind IN ('f', 'p')""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
        WHERE c.relnamespace = 'memstate'::regnamespace AND c.relkind IN ('v', 'm')""",
    "triggers": """
        SELECT tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'memstate'::regnamespace AND NOT t.tgisinternal""",
    "policies": """
        SELECT tablename || '.' || policyname,
               permissive || ' ' || cmd || ' ' || roles::text || ' using=' || coalesce(qual, '')
               || ' check=' || coalesce(with_check, '')
        FROM pg_policies WHERE schemaname = 'memstate'""",
    "config": "SELECT key, value::text FROM memstate.config",
}


def shape(dsn: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with psycopg.connect(dsn) as conn:
        for name, query in QUERIES.items():
            rows = conn.execute(query).fetchall()
            out[name] = {key: definition for key, definition in rows}
    return out


def differences(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> list[str]:
    """Readable differences: '<kind> <name>: only in A / only in B / differs'."""
    diffs = []
    for kind in QUERIES:
        left, right = a[kind], b[kind]
        for key in sorted(left.keys() | right.keys()):
            if key not in right:
                diffs.append(f"{kind} {key}: only in the first")
            elif key not in left:
                diffs.append(f"{kind} {key}: only in the second")
            elif left[key] != right[key]:
                diffs.append(f"{kind} {key}: differs")
    return diffs
