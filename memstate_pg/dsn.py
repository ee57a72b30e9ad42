"""Connection strings: what memstate-pg takes wherever it takes a DSN.

- a libpq connection string: ``host=db dbname=app user=me`` or ``postgresql://me@db/app``;
- a ``postgres://`` URL (Heroku and many PaaS);
- a SQLAlchemy URL: ``postgresql+psycopg://``, ``postgresql+psycopg2://``, ... (the driver
  part is dropped: memstate-pg talks psycopg 3).

``libpq_dsn()`` turns any of them into what psycopg/libpq take; ``sqlalchemy_url()`` goes the
other way (for SQLAlchemy/alembic code that wants a URL); ``connect_kwargs()`` adds a
connect timeout unless the DSN has one.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import ValidationFailed

_DRIVER_URL = re.compile(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", re.IGNORECASE)

#: Seconds libpq waits for a connection unless the DSN says otherwise (libpq's own default is
#: to wait forever; a wrong host must fail fast, with its cause).
DEFAULT_CONNECT_TIMEOUT = 5


def libpq_dsn(dsn: str) -> str:
    """The libpq form of `dsn`: a libpq key=value string or postgresql:// URL as it is,
    and a SQLAlchemy URL (`postgresql+psycopg://`, `postgresql+psycopg2://`, ...) without
    its driver part, so an app can hand memstate-pg the URL it gives SQLAlchemy."""
    if not isinstance(dsn, str):
        raise ValidationFailed(f"a DSN must be a string, not {type(dsn).__name__}")
    return _DRIVER_URL.sub(lambda m: f"{m.group(1)}://", dsn.strip(), count=1)


def connect_kwargs(dsn: str) -> dict[str, Any]:
    """Keyword arguments for psycopg.connect() next to `libpq_dsn(dsn)`: a connect timeout
    unless the DSN (or PGCONNECT_TIMEOUT) sets one. An unparsable DSN gets none (connecting
    then raises psycopg's own error, which errors.translate() maps)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return {}
    if "connect_timeout" in params or os.environ.get("PGCONNECT_TIMEOUT"):
        return {}
    return {"connect_timeout": DEFAULT_CONNECT_TIMEOUT}


def sqlalchemy_url(dsn: str, driver: str = "psycopg") -> str:
    """`dsn` as a SQLAlchemy URL string (``postgresql+psycopg://...``), password included."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {k: str(v) for k, v in conninfo_to_dict(libpq_dsn(dsn)).items()}
    host = params.pop("host", None)
    port = params.pop("port", None)
    query = dict(params)
    for key in ("user", "password", "dbname"):
        query.pop(key, None)
    if host and (host.startswith("/") or "," in host):  # a socket directory or a host list
        query["host"] = host
        host = None
    if port and "," in port:
        query["port"] = port
        port = None
    url = URL.create(
        f"postgresql+{driver}",
        username=params.get("user"),
        password=params.get("password"),
        host=host,
        port=int(port) if port else None,
        database=params.get("dbname"),
        query=query,
    )
    return url.render_as_string(hide_password=False)
