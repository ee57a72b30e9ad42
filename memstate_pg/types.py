"""Fact types and input checks that run in Python before anything reaches Postgres.

Python validates with the type's pydantic model (rich error messages) and derives the
content to embed; the database validates the payload's shape again from the model's JSON
schema (memstate.validate_payload), so SQL callers get the same refusals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from .errors import ValidationFailed
from .models import Constraint

NAME_LIMIT = 200
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20


@dataclass(frozen=True)
class FactType:
    name: str
    model: type[BaseModel] | None
    constraint: Constraint
    text_field: str | None
    json_schema: dict[str, Any] | None

    def validate(self, payload: Any) -> dict[str, Any]:
        """The payload as it will be stored: validated and normalised by the model."""
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        if not isinstance(payload, dict):
            raise ValidationFailed(f"payload of type {self.name!r} must be a JSON object")
        if self.model is None:
            return payload
        try:
            return self.model.model_validate(payload).model_dump(mode="json")
        except PydanticValidationError as exc:
            raise ValidationFailed(
                f"invalid payload for type {self.name!r}: {exc.error_count()} error(s): "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                errors=exc.errors(include_url=False),
            ) from None

    def content_of(self, payload: dict[str, Any]) -> str:
        """Same rule as memstate.derive_content: payload[text_field] when it is a string;
        without a text_field, payload["content"] or payload["text"] when a string; else the
        payload's JSON text."""
        keys = (self.text_field,) if self.text_field is not None else ("content", "text")
        for key in keys:
            value = payload.get(key)
            if isinstance(value, str):
                return value
        return json.dumps(payload, ensure_ascii=False, sort_keys=True)

    @classmethod
    def schemaless(cls, name: str) -> FactType:
        """A type nobody registered: any JSON object, no singleton key, mutable."""
        return cls(name, None, Constraint(), None, None)


def make_type(
    name: str,
    model: type[BaseModel] | None,
    constraint: Constraint | None,
    text_field: str | None,
) -> FactType:
    check_name("type", name)
    constraint = constraint or Constraint()
    schema = model.model_json_schema() if model is not None else None
    if model is not None:
        fields = model.model_fields
        for label, field in (
            ("singleton_key", constraint.singleton_key),
            ("text_field", text_field),
        ):
            if field is not None and field not in fields:
                raise ValidationFailed(f"{label} {field!r} is not a field of {model.__name__}")
    return FactType(name, model, constraint, text_field, schema)


def check_name(label: str, value: Any, *, optional: bool = False, limit: int = NAME_LIMIT) -> None:
    """Namespaces, types, sessions, actors: non-empty text without NUL, at most `limit` chars."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValidationFailed(f"{label} must be a non-empty string")
    if len(value) > limit:
        raise ValidationFailed(f"{label} is limited to {limit} characters")
    check_text(label, value)


def check_text(label: str, value: str) -> None:
    if "\x00" in value:
        raise ValidationFailed(f"{label} contains a NUL byte, which PostgreSQL text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(f"{label} is not valid Unicode (lone surrogate)") from None


def check_json(label: str, value: Any, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Checks that `value` is JSON PostgreSQL's jsonb accepts and returns its text:
    string keys, finite numbers, no NUL (jsonb refuses \\u0000), valid Unicode, bounded size."""
    _walk(label, value, depth=0)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ValidationFailed(f"{label} is not valid JSON: {exc}") from None
    if size > max_bytes:
        raise ValidationFailed(f"{label} is {size} bytes, over the limit of {max_bytes}")
    return text


def _walk(label: str, value: Any, depth: int) -> None:
    if depth > 200:
        raise ValidationFailed(f"{label} is nested deeper than 200 levels")
    if isinstance(value, str):
        check_text(label, value)
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationFailed(f"{label} contains {value}, which JSON cannot hold")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationFailed(f"{label} has a non-string key {key!r}")
            check_text(f"{label} key", key)
            _walk(label, item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _walk(label, item, depth + 1)
    else:
        raise ValidationFailed(f"{label} holds a {type(value).__name__}, which is not JSON")


def filter_document(filters: Any) -> dict[str, Any] | None:
    """Equality filters on payload paths -> a jsonb containment document for `@>`.

    `{"role": "preference", "address.city": "Berlin"}` matches payloads whose `role` is
    "preference" and whose `address.city` is "Berlin". Keys are dotted paths; values are
    JSON scalars (or lists/objects, which match by containment)."""
    if filters is None:
        return None
    if not isinstance(filters, dict):
        raise ValidationFailed("filters must be a dict of payload path -> value")
    doc: dict[str, Any] = {}
    for path, value in filters.items():
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            raise ValidationFailed(f"filter key {path!r} must be a dotted payload path like 'a.b'")
        check_json("filter", value)
        node = doc
        parts = path.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ValidationFailed(f"filter paths conflict at {part!r}")
            node = nxt
        if parts[-1] in node:
            raise ValidationFailed(f"filter path {path!r} given twice or conflicts with another")
        node[parts[-1]] = value
    check_json("filter", doc)
    return doc
