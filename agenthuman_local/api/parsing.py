"""Reading request bodies and fields strictly: every complaint names the field (SPEC §4).

A body costs the event loop little whatever its shape: it is read with a timeout between
chunks (`http.body_timeout_s` → 408), bounded by `max_request_mb` (413), and a JSON body larger
than `THREAD_DECODE_BYTES` is decoded on a worker thread; nesting past `http.max_json_depth` is
a 400 (`jsonsafe`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agenthuman_local import jsonsafe, keys
from agenthuman_local.errors import InvalidJson, PayloadTooLarge, RequestTimeout, ValidationError

# Decoding JSON runs at ~100-300 MB/s: 64 KB is well under a millisecond on the loop, a 16 MB
# body about a tenth of a second or more, which would stall every live session.
THREAD_DECODE_BYTES = 64 * 1024


async def read_body(request: web.Request) -> bytes:
    """The whole body: at most the app's `client_max_size` (413), and no gap between chunks
    longer than `http.body_timeout_s` (408), so a stalled client does not hold a handler."""
    timeout = request.app[keys.settings_key].http.body_timeout_s
    limit = request.client_max_size
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge()
    body = bytearray()
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.readany()
        except TimeoutError as exc:
            raise RequestTimeout() from exc
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge()


def decode_json(raw: bytes, max_depth: int) -> Any:
    """`raw` as JSON (UTF-8, no NaN, at most `max_depth` deep), else a 400."""
    try:
        return jsonsafe.loads(raw.decode("utf-8"), max_depth=max_depth)
    except jsonsafe.JsonTooDeep as exc:
        raise InvalidJson(
            f"Request body nests arrays or objects deeper than {max_depth} levels",
            suggestion="Flatten the JSON (the limit is the server's http.max_json_depth).",
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError is one
        raise InvalidJson() from exc


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`. Oversized bodies raise 413 here."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    max_depth = request.app[keys.settings_key].http.max_json_depth
    if len(raw) > THREAD_DECODE_BYTES:
        body = await asyncio.to_thread(decode_json, raw, max_depth)
    else:
        body = decode_json(raw, max_depth)
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
