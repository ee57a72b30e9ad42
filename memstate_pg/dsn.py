"""Connection strings: what memstate-pg takes wherever it takes a DSN."""

from __future__ import annotations

import re

from .errors import ValidationFailed

_DRIVER_URL = re.compile(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", re.IGNORECASE)


def libpq_dsn(dsn: str) -> str:
    """The libpq form of `dsn`: a libpq key=value string or postgresql:// URL as it is,
    and a SQLAlchemy URL (`postgresql+psycopg://`, `postgresql+psycopg2://`, ...) without
    its driver part, so an app can hand memstate-pg the URL it gives SQLAlchemy."""
    if not isinstance(dsn, str):
        raise ValidationFailed(f"a DSN must be a string, not {type(dsn).__name__}")
    return _DRIVER_URL.sub(lambda m: f"{m.group(1)}://", dsn.strip(), count=1)
