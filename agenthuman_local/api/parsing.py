"""Reading request bodies and fields strictly: every complaint names the field (SPEC §4)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from agenthuman_local.errors import InvalidJson, ValidationError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`. Oversized bodies raise 413 here."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidJson() from exc
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def optional_str(body: dict[str, Any], field: str, *, label: str | None = None) -> str | None:
    """`body[field]` if it is a string, None if absent or null; else a 400 naming the field."""
    value = body.get(field)
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(label or field, "must be a string")


def required_str(body: dict[str, Any], field: str, *, label: str | None = None) -> str:
    value = optional_str(body, field, label=label)
    if not value:
        raise ValidationError(label or field, "is required")
    return value


def optional_object(
    body: dict[str, Any], field: str, *, label: str | None = None
) -> dict[str, Any] | None:
    value = body.get(field)
    if value is None or isinstance(value, dict):
        return value
    raise ValidationError(label or field, "must be a JSON object")
