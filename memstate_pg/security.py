"""Row Level Security by namespace, least-privilege roles, and namespace grants.

The SQL is in sql/rls.sql, sql/unrls.sql and sql/roles.sql (re-runnable); this module runs
it and manages ``memstate.namespace_grants``. Everything here is an administrator's action:
it needs the owner of schema ``memstate`` (the role that runs migrations), and CREATEROLE
for :func:`create_roles`. See SECURITY.md for the model.

Patterns are globs: ``*`` matches any run of characters, every other character (``%`` and
``_`` included) matches itself, ``\\*`` is a literal star and ``\\\\`` a literal backslash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from .errors import MemStateError, NotFound, ValidationFailed, translate
from .sqlfiles import read_sql
from .types import check_name

__all__ = [
    "GROUP_ROLES",
    "Grant",
    "LockHolder",
    "RoleInfo",
    "SchemaRisk",
    "create_login",
    "create_risks",
    "create_roles",
    "drop_login",
    "disable_rls",
    "enable_rls",
    "grant",
    "list_grants",
    "list_roles",
    "lock_holders",
    "revoke",
    "rls_status",
]

#: The NOLOGIN group roles of sql/roles.sql.
GROUP_ROLES = ("memstate_app", "memstate_reader", "memstate_sync")

#: The tables sql/rls.sql puts under Row Level Security (lg_ttl only when installed).
RLS_TABLES = ("facts", "fact_versions", "commits", "outbox", "mirrors", "lg_ttl")

PATTERN_LIMIT = 200

Target = str | psycopg.Connection


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of memstate.namespace_grants."""

    role: str
    pattern: str
    granted_at: datetime
    granted_by: str


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """A memstate group role, whether it exists, and the roles that are members of it."""

    role: str
    exists: bool
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SchemaRisk:
    """A schema on the search path (or pgvector's) in which `grantee` may CREATE: there it
    could plant a function or operator that a better-matching overload resolution picks in
    other roles' unqualified SQL (memstate's own functions pin their search_path)."""

    schema: str
    grantee: str  # "PUBLIC", a memstate group role, or one of their members


@dataclass(frozen=True, slots=True)
class LockHolder:
    """A session of a non-administrator role holding a table lock on a memstate table that
    blocks ordinary writes (SHARE or stronger; INSERT/UPDATE/DELETE take ROW EXCLUSIVE)."""

    pid: int
    role: str
    table: str
    mode: str
    since: datetime | None  # start of the holding transaction


#: Lock modes that conflict with ROW EXCLUSIVE (every INSERT, UPDATE and DELETE).
BLOCKING_LOCK_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


@contextlib.contextmanager
def _transaction(target: Target) -> Iterator[psycopg.Connection]:
    """One transaction on a DSN (own connection) or on the caller's connection. Database
    errors come out as MemStateError subclasses, like the store's."""
    try:
        if isinstance(target, psycopg.Connection):
            with target.transaction():
                yield target
        else:
            with psycopg.connect(target) as conn, conn.transaction():
                yield conn
    except psycopg.Error as exc:
        err = translate(exc)
        if err is exc:
            raise MemStateError(f"{type(exc).__name__}: {exc}") from exc
        raise err from exc


def _run_file(target: Target, name: str) -> None:
    with _transaction(target) as conn:
        conn.execute(read_sql(name))


def enable_rls(target: Target, *, force: bool = False) -> None:
    """Install and switch on namespace RLS (sql/rls.sql; idempotent). With `force`, the
    tables' owner is bound by the policies too (FORCE ROW LEVEL SECURITY) and then needs
    grants of its own; superusers and BYPASSRLS roles are never bound."""
    with _transaction(target) as conn:
        conn.execute(read_sql("rls.sql"))
        verb = "FORCE" if force else "NO FORCE"
        for table in _present(conn, RLS_TABLES):
            conn.execute(f"ALTER TABLE memstate.{table} {verb} ROW LEVEL SECURITY")


def disable_rls(target: Target) -> None:
    """Switch namespace RLS off (sql/unrls.sql). Grants are kept for a later enable_rls."""
    _run_file(target, "unrls.sql")


def rls_status(target: Target) -> dict[str, str]:
    """Per memstate table under RLS: "off", "on" or "forced"."""
    with _transaction(target) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'memstate' AND c.relname = ANY (%s)",
            [list(RLS_TABLES)],
        ).fetchall()
    return {name: ("forced" if forced else "on") if on else "off" for name, on, forced in rows}


def create_roles(target: Target, *, revoke_create: bool = False) -> list[str]:
    """Create the group roles if missing and (re)grant their privileges (sql/roles.sql).
    Returns the roles that did not exist before. With `revoke_create`, also revoke CREATE on
    the schemas create_risks() names (from PUBLIC where PUBLIC holds it: PostgreSQL 15's
    default for `public`, which affects every role of the database)."""
    with _transaction(target) as conn:
        before = _existing_roles(conn, GROUP_ROLES)
        conn.execute(read_sql("roles.sql"))
        if revoke_create:
            from psycopg import sql

            for risk in _create_risks(conn):
                grantee = (
                    sql.SQL("PUBLIC") if risk.grantee == "PUBLIC" else sql.Identifier(risk.grantee)
                )
                conn.execute(
                    sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(
                        sql.Identifier(risk.schema), grantee
                    )
                )
    return [r for r in GROUP_ROLES if r not in before]


def create_risks(target: Target) -> list[SchemaRisk]:
    """Who may CREATE in a schema that other roles' SQL resolves names in: the schemas on
    this session's search_path and the vector extension's schema, checked for PUBLIC, the
    memstate group roles and their members (owners of the schema and superusers aside).
    A tenant that may CREATE there can plant a better-matching overload of a function or
    operator (e.g. `hashtextextended(text, integer)`) that runs with the rights of whoever
    calls the unqualified name: revoke it (`create_roles(..., revoke_create=True)`,
    `memstate-pg roles --revoke-create`). PostgreSQL 15+ no longer grants CREATE on public
    to PUBLIC, but databases created before (or pg_upgrade'd) still do."""
    with _transaction(target) as conn:
        return _create_risks(conn)


def _create_risks(conn: psycopg.Connection) -> list[SchemaRisk]:
    rows = conn.execute(
        """
        WITH schemas AS (
            SELECT n.oid, n.nspname, n.nspowner, coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
            FROM pg_namespace n
            WHERE n.nspname = ANY (current_schemas(false))
               OR n.oid IN (SELECT e.extnamespace FROM pg_extension e WHERE e.extname = 'vector')
        ), roles AS (
            SELECT r.oid, r.rolname FROM pg_roles r
            WHERE NOT r.rolsuper AND (r.rolname = ANY (%(groups)s) OR EXISTS (
                SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                WHERE m.member = r.oid AND g.rolname = ANY (%(groups)s)))
        )
        SELECT s.nspname::text, 'PUBLIC' FROM schemas s, aclexplode(s.acl) a
        WHERE a.grantee = 0 AND a.privilege_type = 'CREATE'
        UNION
        SELECT s.nspname::text, r.rolname::text FROM schemas s, roles r
        WHERE r.oid <> s.nspowner AND NOT pg_has_role(r.oid, s.nspowner, 'MEMBER')
          AND EXISTS (SELECT 1 FROM aclexplode(s.acl) a
                      WHERE a.grantee = r.oid AND a.privilege_type = 'CREATE')
        ORDER BY 1, 2
        """,
        {"groups": list(GROUP_ROLES)},
    ).fetchall()
    return [SchemaRisk(schema, grantee) for schema, grantee in rows]


def lock_holders(target: Target) -> list[LockHolder]:
    """Sessions holding a lock on a memstate table that blocks every writer (SHARE mode or
    stronger), other than superusers and the table's owner. A role with a table-level
    UPDATE, DELETE or TRUNCATE privilege may `LOCK TABLE` in any mode: memstate_app holds
    none on memstate.facts, but memstate_sync keeps DELETE on memstate.outbox
    (acknowledgement), so a compromised sync role can stall every writer; this finds it.
    End such a session with pg_terminate_backend(pid)."""
    with _transaction(target) as conn:
        rows = conn.execute(
            """
            SELECT l.pid, r.rolname::text, c.relname::text, l.mode, a.xact_start
            FROM pg_locks l
            JOIN pg_class c ON c.oid = l.relation
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'memstate'
            JOIN pg_stat_activity a ON a.pid = l.pid
            JOIN pg_roles r ON r.oid = a.usesysid
            WHERE l.locktype = 'relation' AND l.granted AND l.mode = ANY (%s)
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.pid <> pg_backend_pid()
              AND NOT r.rolsuper AND NOT pg_has_role(r.oid, c.relowner, 'MEMBER')
            ORDER BY a.xact_start, l.pid, c.relname
            """,
            [list(BLOCKING_LOCK_MODES)],
        ).fetchall()
    return [LockHolder(*row) for row in rows]


def list_roles(target: Target) -> list[RoleInfo]:
    """The group roles, whether each exists, and their members."""
    with _transaction(target) as conn:
        rows = conn.execute(
            "SELECT g.rolname, array_remove(array_agg(m.rolname ORDER BY m.rolname), NULL) "
            "FROM pg_roles g LEFT JOIN pg_auth_members a ON a.roleid = g.oid "
            "LEFT JOIN pg_roles m ON m.oid = a.member "
            "WHERE g.rolname = ANY (%s) GROUP BY g.rolname",
            [list(GROUP_ROLES)],
        ).fetchall()
    found = {name: tuple(members) for name, members in rows}
    return [RoleInfo(r, r in found, found.get(r, ())) for r in GROUP_ROLES]


def create_login(target: Target, name: str, group: str, *, password: str | None = None) -> None:
    """``CREATE ROLE name LOGIN [PASSWORD …] IN ROLE group``: a login for one agent, tenant
    or worker in one of the GROUP_ROLES. Its namespaces come from grant()."""
    check_name("role", name, limit=63)
    if group not in GROUP_ROLES:
        raise ValidationFailed(f"group must be one of {', '.join(GROUP_ROLES)}, not {group!r}")
    if password is not None:
        check_name("password", password, limit=1000)
    from psycopg import sql

    with _transaction(target) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN {} IN ROLE {}").format(
                sql.Identifier(name),
                sql.SQL("PASSWORD {}").format(sql.Literal(password))
                if password is not None
                else sql.SQL(""),
                sql.Identifier(group),
            )
        )


def drop_login(target: Target, name: str) -> None:
    """Drop a login role made by create_login: its sessions are ended and its grants in this
    database removed (grants in other databases stay until revoked there). Refuses to drop
    a group role."""
    check_name("role", name, limit=63)
    if name in GROUP_ROLES:
        raise ValidationFailed(f"{name!r} is a group role, not a login")
    from psycopg import sql

    with _transaction(target) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name]
        )
        if _grants_table_exists(conn):
            conn.execute("DELETE FROM memstate.namespace_grants WHERE role = %s", [name])
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def check_pattern(pattern: object) -> str:
    """A namespace glob: 1 to 200 characters of valid text without NUL."""
    check_name("pattern", pattern, limit=PATTERN_LIMIT)
    return pattern  # type: ignore[return-value]


def grant(target: Target, role: str, patterns: Iterable[str]) -> int:
    """Let `role` (and the roles that inherit from it) touch the namespaces matching
    `patterns`. Returns the number of grants added (existing ones are kept)."""
    patterns = [check_pattern(p) for p in _as_list(patterns)]
    with _transaction(target) as conn:
        _require_grants_table(conn)
        _require_role(conn, role)
        added = 0
        for pattern in dict.fromkeys(patterns):
            cur = conn.execute(
                "INSERT INTO memstate.namespace_grants (role, pattern) VALUES (%s, %s) "
                "ON CONFLICT (role, pattern) DO NOTHING",
                [role, pattern],
            )
            added += cur.rowcount
    return added


def revoke(target: Target, role: str, patterns: Iterable[str] | None = None) -> int:
    """Remove grants of `role`: the given patterns, or all of them when `patterns` is None.
    Returns the number removed. Takes effect for statements that start afterwards."""
    check_name("role", role, limit=63)
    with _transaction(target) as conn:
        _require_grants_table(conn)
        if patterns is None:
            cur = conn.execute("DELETE FROM memstate.namespace_grants WHERE role = %s", [role])
        else:
            wanted = [check_pattern(p) for p in _as_list(patterns)]
            cur = conn.execute(
                "DELETE FROM memstate.namespace_grants WHERE role = %s AND pattern = ANY (%s)",
                [role, wanted],
            )
        return cur.rowcount


def list_grants(target: Target, role: str | None = None) -> list[Grant]:
    """The grants (of one role, or all), by role and pattern."""
    with _transaction(target) as conn:
        _require_grants_table(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT role::text AS role, pattern, granted_at, granted_by::text AS granted_by "
                "FROM memstate.namespace_grants WHERE %(role)s::text IS NULL OR role = %(role)s "
                "ORDER BY role, pattern",
                {"role": role},
            )
            return [Grant(**r) for r in cur.fetchall()]


# -- helpers -----------------------------------------------------------------------------


def _as_list(patterns: Iterable[str]) -> list[str]:
    if isinstance(patterns, str):
        return [patterns]
    found = list(patterns)
    if not found:
        raise ValidationFailed("give at least one namespace pattern")
    return found


def _present(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    rows = conn.execute(
        "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass('memstate.' || quote_ident(t)) "
        "IS NOT NULL",
        [list(tables)],
    ).fetchall()
    return [r[0] for r in rows]


def _existing_roles(conn: psycopg.Connection, roles: Iterable[str]) -> set[str]:
    rows = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY (%s)", [list(roles)]
    ).fetchall()
    return {r[0] for r in rows}


def _require_role(conn: psycopg.Connection, role: str) -> None:
    check_name("role", role, limit=63)
    if not _existing_roles(conn, [role]):
        raise NotFound(f"no database role {role!r}: CREATE ROLE it first (see sql/roles.sql)")


def _grants_table_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('memstate.namespace_grants')").fetchone()
    assert row is not None, "SELECT without FROM returns one row"
    return row[0] is not None


def _require_grants_table(conn: psycopg.Connection) -> None:
    if not _grants_table_exists(conn):
        raise NotFound(
            "memstate.namespace_grants does not exist: enable RLS first "
            "(memstate-pg migrate --rls, or memstate_pg.security.enable_rls)"
        )
