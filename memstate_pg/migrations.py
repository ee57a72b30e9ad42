"""memstate-pg's schema migrations (alembic revisions in memstate_pg/alembic/versions, each
applying its frozen SQL file from memstate_pg/sql/migrations).

The version table is ``memstate.alembic_version``: an application's own alembic history
(``public.alembic_version``) in the same database is never read or written. Three ways in:

(a) ``memstate-pg migrate`` / ``MemoryStore.migrate()`` / ``upgrade(dsn)``;
(b) from an application's own alembic ``env.py``, inside its run::

        from memstate_pg import migrations as memstate_migrations

        with connectable.connect() as connection:
            memstate_migrations.upgrade(connection)  # our revisions, our version table
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                include_schemas=True,
                include_name=memstate_migrations.include_name,  # (c) autogenerate
                include_object=memstate_migrations.include_object,  # leaves memstate alone
            )
            with context.begin_transaction():
                context.run_migrations()

    (never add our versions folder to the application's ``version_locations``);
(c) ``include_object`` / ``include_name``: alembic hooks that keep schema ``memstate`` out of
    the application's autogenerate.

`upgrade()` runs every pending revision in ONE transaction, the ``CREATE SCHEMA`` and
pgvector's ``CREATE EXTENSION`` included: a failed first migration leaves nothing behind.
Concurrent migrators serialise on ``LOCK TABLE memstate.alembic_version`` (a lock only the
schema's owner can take, so no tenant can hold it) and, on a database without the schema
yet, on the catalog row of ``CREATE SCHEMA`` itself. Every lock is waited for at most
`lock_timeout` seconds; the error then names the sessions holding locks in schema memstate.
Errors are MemStateError subclasses whose message says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dsn import connect_kwargs, libpq_dsn
from .errors import (
    MemStateError,
    MigrationError,
    NotMigrated,
    PermissionDenied,
    Unavailable,
    ValidationFailed,
    translate,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

    Target = str | Connection | Engine

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"
SCHEMA = "memstate"
VERSION_TABLE = "alembic_version"

#: Seconds upgrade() waits for any lock (a concurrent migrator, a session reading a table the
#: migration alters) before it gives up and names the holders.
DEFAULT_LOCK_TIMEOUT = 60.0

_REMEDY = "run memstate-pg migrate"


# --- the revisions -------------------------------------------------------------------------


def alembic_config() -> Config:
    """An alembic Config for our script directory (for alembic's own commands)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


@cache
def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(ALEMBIC_DIR))


def head() -> str:
    """The newest revision this memstate-pg ships."""
    current_head = script_directory().get_current_head()
    if current_head is None:  # pragma: no cover - the package ships revisions
        raise MigrationError(f"no alembic revisions found in {ALEMBIC_DIR}")
    return current_head


def revision_bind(bind: Connection | None) -> Connection:
    """The connection a revision runs on: the one memstate_pg.migrations passes to it.

    Without one, the revision is being run by another alembic environment — our versions
    folder in an application's `version_locations` — which would record our revisions in the
    application's version table and later report a false "at head": refused."""
    if bind is None:
        raise MigrationError(
            "memstate-pg's revisions were run by another alembic environment (is "
            "memstate_pg/alembic/versions in your version_locations?): remove it from there "
            "and call memstate_pg.migrations.upgrade(connection) from your env.py instead"
        )
    return bind


def _known_revisions() -> set[str]:
    return {script.revision for script in script_directory().walk_revisions()}


# --- public API ----------------------------------------------------------------------------


def upgrade(
    target: Target,
    revision: str = "head",
    *,
    rls: bool = False,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
) -> None:
    """Bring schema memstate to `revision` (idempotent; safe from many processes at once).

    `target` is a DSN (libpq string, ``postgres://`` or SQLAlchemy URL such as
    ``postgresql+psycopg://``), a SQLAlchemy Engine, or a SQLAlchemy Connection — e.g. the one
    of an application's own alembic env.py. A Connection inside a transaction is migrated in
    a savepoint of that transaction (committed with it); otherwise we commit.

    With `rls`, also (re)apply sql/rls.sql in the same transaction (see SECURITY.md). A
    database with RLS on gets it re-applied whenever an upgrade reaches head, so policy
    fixes of a release reach it without --rls; one with RLS off (sql/unrls.sql) stays off.

    A database already at head is left alone without locking or creating anything, so
    least-privilege roles (which may not CREATE) can call this too.

    Raises Unavailable (server unreachable, lock wait over `lock_timeout` seconds, naming the
    holders), PermissionDenied (missing CREATE or superuser rights, with the remedy),
    MigrationError (anything else), all MemStateError."""
    script = script_directory()

    def steps(heads: Any, _ctx: Any) -> Any:
        return script._upgrade_revs(revision, heads)

    with _translated(), _connection(target) as conn:
        _migrate(
            conn,
            _library_runner(steps),
            rls=rls,
            lock_timeout=lock_timeout,
            done=(lambda heads: heads == (head(),)) if revision == "head" and not rls else None,
        )


def downgrade(
    target: Target, revision: str = "base", *, lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT
) -> None:
    """Undo revisions down to `revision` ("base" removes everything memstate-pg created but
    its version table; the pgvector extension stays)."""
    script = script_directory()

    def steps(heads: Any, _ctx: Any) -> Any:
        return script._downgrade_revs(revision, heads)

    with _translated(), _connection(target) as conn:
        _migrate(conn, _library_runner(steps), rls=False, lock_timeout=lock_timeout, done=None)


def current(target: Target) -> str | None:
    """The revision the database is at, or None before the first migration (read-only)."""
    with _translated(), _connection(target) as conn:
        heads = _read_heads(conn)
    return heads[0] if heads else None


def check_current(target: Target) -> None:
    """Raise unless the database is at this memstate-pg's head; never runs DDL (for
    read-only commands). NotMigrated ("run memstate-pg migrate") when unmigrated or older;
    MigrationError when the database is newer than this package; Unavailable /
    PermissionDenied when it cannot be read."""
    with _translated(), _connection(target) as conn:
        heads = _read_heads(conn)
        database = _database_name(conn)
    want = head()
    if heads == (want,):
        return
    if not heads:
        raise NotMigrated(
            f'database "{database}" has no memstate schema (or an unmigrated one): {_REMEDY}'
        )
    unknown = sorted(set(heads) - _known_revisions())
    if unknown:
        raise MigrationError(
            f'database "{database}" is at memstate revision {", ".join(unknown)}, which this '
            f"memstate-pg (head {want}) does not know: upgrade the memstate-pg package"
        )
    raise NotMigrated(
        f'database "{database}" is at memstate revision {", ".join(heads)}, this memstate-pg '
        f"needs {want}: {_REMEDY}"
    )


def include_object(
    object: Any,  # noqa: A002 - alembic's hook signature
    name: str | None,
    type_: str,
    reflected: bool,
    compare_to: Any,
) -> bool:
    """alembic's `include_object` hook: False for everything in schema memstate, so an
    application's autogenerate (include_schemas=True) neither drops nor alters our tables."""
    return _schema_of(object) != SCHEMA


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """alembic's `include_name` hook: skip reflecting schema memstate at all (faster, and no
    "unknown type vector" warnings). Use it together with include_object."""
    if type_ == "schema":
        return name != SCHEMA
    return parent_names.get("schema_name") != SCHEMA


def _schema_of(obj: Any) -> str | None:
    schema = getattr(obj, "schema", None)
    if schema is None:  # indexes, columns, constraints: their table's schema
        table = getattr(obj, "table", None)
        schema = getattr(table, "schema", None)
    return schema


# --- running -------------------------------------------------------------------------------

Runner = Callable[["Connection"], None]


def _library_runner(steps: Callable[[Any, Any], Any]) -> Runner:
    """Run our revisions with a MigrationContext of our own: alembic's global `context`
    and `op` proxies (which an application's alembic run may be using) stay untouched."""

    def run(conn: Connection) -> None:
        from alembic.runtime.migration import MigrationContext

        ctx = MigrationContext.configure(
            connection=conn,
            opts={
                "fn": steps,
                "version_table": VERSION_TABLE,
                "version_table_schema": SCHEMA,
                "transactional_ddl": True,
            },
        )
        ctx.run_migrations(bind=conn)

    return run


def run_alembic_env(target: Target, context: Any, *, rls: bool = False) -> None:
    """What memstate_pg/alembic/env.py does when the alembic CLI runs our revisions (there
    the global `context` is ours)."""

    def run(conn: Connection) -> None:
        context.configure(
            connection=conn,
            target_metadata=None,
            version_table=VERSION_TABLE,
            version_table_schema=SCHEMA,
            transactional_ddl=True,
        )
        context.run_migrations(bind=conn)

    with _translated(), _connection(target) as conn:
        _migrate(conn, run, rls=rls, lock_timeout=DEFAULT_LOCK_TIMEOUT, done=None)


def _migrate(
    conn: Connection,
    run: Runner,
    *,
    rls: bool,
    lock_timeout: float | None,
    done: Callable[[tuple[str, ...]], bool] | None,
) -> None:
    """Run `run` in one transaction (a savepoint when `conn` is already in one), after
    creating the schema and locking the version table; retried when a concurrent first
    migrator created the schema or version table under us."""
    outer = conn.in_transaction()
    for attempt in range(3):
        if done is not None:
            # a savepoint inside the caller's transaction, so a failed read does not abort it
            check = conn.begin_nested() if outer else conn.begin()
            try:
                heads = _read_heads(conn)
            except Exception:  # no right to read the version table: let the migration decide
                heads = ()
            finally:
                check.rollback()
            if done(heads):
                return
        tx = conn.begin_nested() if outer else conn.begin()
        try:
            with tx:
                saved = _prepare(conn, lock_timeout, outer=outer)
                before = _read_heads(conn)
                run(conn)
                after = _read_heads(conn)
                if rls or (after != before and after == (head(),) and _rls_on(conn)):
                    # RLS was switched on (migrate --rls): bring its policies and helpers to
                    # this release too, in the same transaction (sql/rls.sql is re-runnable)
                    from .sqlfiles import execute_sql_file

                    execute_sql_file(conn, "rls.sql")
                if saved is not None:  # inside the caller's transaction: leave it as it was
                    conn.exec_driver_sql(
                        "SELECT pg_catalog.set_config('lock_timeout', %(v)s, true)", {"v": saved}
                    )
                if not outer and _scalar(conn, _HAS_VERSION_TABLE) is None:
                    tx.rollback()  # nothing was migrated (alembic current/history): no schema
            return
        except Exception as exc:
            orig = getattr(exc, "orig", None) or exc
            diag = getattr(orig, "diag", None)
            if (
                _sqlstate(orig) == "23505"
                and (getattr(diag, "constraint_name", None) or "").startswith("pg_")
                and attempt < 2
            ):
                # CREATE SCHEMA / the version table raced a concurrent first migrator that
                # committed (a catalog unique index): start again, behind its version lock
                continue
            explained = _explain(conn, exc, outer=outer, lock_timeout=lock_timeout)
            if explained is exc:
                raise
            raise explained from orig  # the driver's error (not SQLAlchemy's wrapper)


_HAS_VERSION_TABLE = "SELECT pg_catalog.to_regclass('memstate.alembic_version')"


def _prepare(conn: Connection, lock_timeout: float | None, *, outer: bool) -> str | None:
    """Lock timeout, schema, version table lock. Returns the caller's lock_timeout to
    restore when running inside the caller's transaction (else None)."""
    saved = None
    if outer:
        saved = _scalar(conn, "SELECT pg_catalog.current_setting('lock_timeout')")
    millis = 0 if not lock_timeout else max(1, int(lock_timeout * 1000))
    conn.exec_driver_sql(
        "SELECT pg_catalog.set_config('lock_timeout', %(v)s, true)", {"v": f"{millis}ms"}
    )
    if _scalar(conn, "SELECT pg_catalog.to_regnamespace('memstate')") is None:
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS memstate")
    if _scalar(conn, _HAS_VERSION_TABLE) is not None:
        # EXCLUSIVE: only migrators conflict (readers' ACCESS SHARE does not), and only roles
        # with UPDATE/DELETE/TRUNCATE on the table - its owner - may take a conflicting lock
        conn.exec_driver_sql("LOCK TABLE memstate.alembic_version IN EXCLUSIVE MODE")
    return saved


def _rls_on(conn: Connection) -> bool:
    return bool(
        _scalar(
            conn,
            "SELECT c.relrowsecurity FROM pg_catalog.pg_class c "
            "WHERE c.oid = pg_catalog.to_regclass('memstate.facts')",
        )
    )


def _read_heads(conn: Connection) -> tuple[str, ...]:
    if _scalar(conn, _HAS_VERSION_TABLE) is None:
        return ()
    rows = conn.exec_driver_sql("SELECT version_num FROM memstate.alembic_version").fetchall()
    return tuple(sorted(row[0] for row in rows))


def _scalar(conn: Connection, sql: str) -> Any:
    return conn.exec_driver_sql(sql).scalar()


@contextlib.contextmanager
def _connection(target: Target) -> Iterator[Connection]:
    from sqlalchemy.engine import Connection, Engine

    if isinstance(target, Connection):
        yield target
        return
    if isinstance(target, Engine):
        engine = target
    elif isinstance(target, str):
        engine = _engine(target)
    else:
        raise ValidationFailed(
            "migrations need a DSN, a SQLAlchemy Engine or a SQLAlchemy Connection, "
            f"not {type(target).__name__}"
        )
    with engine.connect() as conn:
        yield conn


def _engine(dsn: str) -> Engine:
    import psycopg
    from sqlalchemy import create_engine, pool

    conninfo = libpq_dsn(dsn)
    kwargs = connect_kwargs(conninfo)
    return create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo, **kwargs),
        poolclass=pool.NullPool,
    )


# --- errors --------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Every database or alembic failure as a MemStateError."""
    try:
        yield
    except MemStateError:
        raise
    except Exception as exc:
        err = _as_memstate_error(exc)
        if err is None:
            raise
        raise err from (getattr(exc, "orig", None) or exc)  # the driver's error, unwrapped


def _as_memstate_error(exc: BaseException) -> MemStateError | None:
    import psycopg
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError, OperationalError

    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(orig, CommandError):
        return MigrationError(
            f"{orig} (this memstate-pg knows the revisions up to {head()}; a database at a "
            "newer revision needs a newer memstate-pg: upgrade the memstate-pg package)"
        )
    if isinstance(orig, psycopg.Error):
        err = translate(orig)
        if isinstance(err, MemStateError):
            return err
    elif isinstance(exc, DBAPIError):  # another driver under a caller's engine (psycopg2)
        state = _sqlstate(orig)
        if state == "42501":
            return PermissionDenied(_primary(orig))
        if not state and isinstance(exc, OperationalError) or exc.connection_invalidated:
            return Unavailable(f"database unavailable: {_primary(orig)}")
    else:
        return None
    return MigrationError(f"migration failed: {_primary(orig)} (SQLSTATE {_sqlstate(orig)})")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg (sqlstate) or psycopg2 (pgcode) error."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def _primary(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    message = getattr(diag, "message_primary", None) or str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def _explain(
    conn: Connection, exc: BaseException, *, outer: bool, lock_timeout: float | None
) -> BaseException:
    """A failed migration as an error a person can act on."""
    orig = getattr(exc, "orig", None) or exc
    state = _sqlstate(orig)
    if not state:
        return exc  # alembic's CommandError, lost connections: _translated() maps them
    message = _primary(orig)
    database, role = _database_name(conn), _role_name(conn)
    if state == "42501" and 'extension "vector"' in message:
        return PermissionDenied(
            f'pgvector is not installed in database "{database}" and role "{role}" may not '
            f"install it ({message}): ask an admin to run CREATE EXTENSION vector in database "
            f'"{database}" once; the database owner can then migrate without superuser'
        )
    if state in ("0A000", "58P01", "42704") and "vector" in message:
        return MigrationError(
            f'pgvector is not available on the server of database "{database}" ({message}): '
            "install pgvector on the server (https://github.com/pgvector/pgvector), then ask an "
            f'admin to run CREATE EXTENSION vector in database "{database}"'
        )
    if state == "42501" and "database" in message:
        return PermissionDenied(
            f'role "{role}" may not create schema memstate in database "{database}" '
            f"({message}): run memstate-pg migrate as the database owner, or ask an admin "
            f'to GRANT CREATE ON DATABASE "{database}" TO "{role}"'
        )
    if state == "42501":
        return PermissionDenied(
            f'role "{role}" may not migrate schema memstate ({message}): run memstate-pg '
            "migrate as the role that owns schema memstate (the one that ran the first "
            "migration)"
        )
    if state == "55P03":
        holders = _lock_holders(conn, outer=outer)
        waited = f"{lock_timeout:g} s" if lock_timeout else "the lock timeout"
        return Unavailable(
            f"migration gave up after waiting {waited} for a lock ({message}); held by: "
            f"{holders or 'no session any more'}: end those sessions (or wait for them) and "
            "run memstate-pg migrate again"
        )
    return exc


def _lock_holders(conn: Connection, *, outer: bool) -> str:
    """Sessions holding locks on objects of schema memstate, for the error message."""
    try:
        rows = conn.exec_driver_sql("""
            SELECT l.pid, coalesce(a.usename::text, '?'), coalesce(a.state, '?'),
                   string_agg(DISTINCT l.mode || ' on memstate.' || c.relname, ', ')
            FROM pg_catalog.pg_locks l
            JOIN pg_catalog.pg_class c ON c.oid = l.relation
            LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
            WHERE l.granted AND l.locktype = 'relation'
              AND l.pid <> pg_catalog.pg_backend_pid()
              AND c.relnamespace = pg_catalog.to_regnamespace('memstate')
            GROUP BY 1, 2, 3 ORDER BY 1 LIMIT 5""").fetchall()
    except Exception:
        rows = []
    finally:
        if not outer:
            with contextlib.suppress(Exception):
                conn.rollback()
    return "; ".join(
        f"pid {pid} (role {role}, {state}) {locks}" for pid, role, state, locks in rows
    )


def _driver_info(conn: Connection) -> Any:
    with contextlib.suppress(Exception):
        return conn.connection.driver_connection.info  # type: ignore[union-attr]
    return None


def _database_name(conn: Connection) -> str:
    return getattr(_driver_info(conn), "dbname", None) or "?"


def _role_name(conn: Connection) -> str:
    return getattr(_driver_info(conn), "user", None) or "?"
