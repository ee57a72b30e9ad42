"""DSN and URL forms memstate-pg accepts (no database needed)."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from memstate_pg import ValidationFailed
from memstate_pg.dsn import connect_kwargs, libpq_dsn, sqlalchemy_url


@pytest.mark.parametrize(
    "given",
    [
        "postgresql+psycopg://me:s%40cret@db.example:5433/app?sslmode=require",
        "postgresql+psycopg2://me:s%40cret@db.example:5433/app?sslmode=require",
        "postgres://me:s%40cret@db.example:5433/app?sslmode=require",
        "postgresql://me:s%40cret@db.example:5433/app?sslmode=require",
        "host=db.example port=5433 dbname=app user=me password=s@cret sslmode=require",
    ],
)
def test_every_form_means_the_same_connection(given: str):
    params = conninfo_to_dict(libpq_dsn(given))
    assert params == {
        "host": "db.example",
        "port": "5433",
        "dbname": "app",
        "user": "me",
        "password": "s@cret",
        "sslmode": "require",
    }
    assert conninfo_to_dict(libpq_dsn(sqlalchemy_url(given))) == params


def test_unix_socket_dsn_round_trips():
    dsn = "host=/tmp/pg dbname=x user=postgres"
    url = sqlalchemy_url(dsn)
    assert url.startswith("postgresql+psycopg://postgres@/x?")
    assert conninfo_to_dict(libpq_dsn(url)) == conninfo_to_dict(dsn)


def test_invalid_dsn_is_a_validation_error_without_the_password():
    from memstate_pg import migrations

    with pytest.raises(ValidationFailed) as caught:
        migrations.upgrade("password=hunter2 nonsense")
    assert "hunter2" not in str(caught.value)


def test_a_connect_timeout_unless_the_dsn_has_one(monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert connect_kwargs("dbname=x") == {"connect_timeout": 5}
    assert connect_kwargs("dbname=x connect_timeout=30") == {}
