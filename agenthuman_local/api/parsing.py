"""Reading request bodies and fields strictly: every complaint names the field (SPEC §4).

A body costs the event loop little whatever its shape: it is read with a timeout between
chunks (`http.body_timeout_s` → 408) and bounded by `max_request_mb` (413); a JSON body with
more than `http.max_json_items` values is refused (413) before it is decoded and one nested
past `http.max_json_depth` is a 400 (`jsonsafe`: decoding holds the GIL, so a worker thread
would not spare the loop — the bound does).

A form body (multipart or urlencoded, which upload-face takes) is bounded the same way, and its
part count by `http.max_form_parts` (400) before the parts cost the loop more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import aiohttp
from aiohttp import web

from agenthuman_local import jsonsafe, keys
from agenthuman_local.errors import (
    AppError,
    InvalidJson,
    PayloadTooLarge,
    RequestTimeout,
    ValidationError,
)
from agenthuman_local.jsonsafe import JsonLimits

_CHUNK_BYTES = 64 * 1024
_T = TypeVar("_T")


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


def decode_json(raw: bytes, limits: JsonLimits) -> Any:
    """`raw` as JSON (UTF-8, no NaN, within `limits`), else a 400 or 413."""
    try:
        return jsonsafe.loads(raw.decode("utf-8"), limits)
    except jsonsafe.JsonTooBig as exc:
        raise PayloadTooLarge(
            f"Request body has more than {limits.max_items} JSON values",
            suggestion="Send fewer values (the limit is the server's http.max_json_items).",
        ) from exc
    except jsonsafe.JsonTooDeep as exc:
        raise InvalidJson(
            f"Request body nests arrays or objects deeper than {limits.max_depth} levels",
            suggestion="Flatten the JSON (the limit is the server's http.max_json_depth).",
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError is one
        raise InvalidJson() from exc


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`. Oversized bodies raise 413 here."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    http = request.app[keys.settings_key].http
    body = decode_json(raw, JsonLimits(http.max_json_depth, http.max_json_items))
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


# -- forms (upload-face's multipart and urlencoded bodies) -----------------------------------------


def _too_many_parts(max_parts: int) -> ValidationError:
    return ValidationError(
        "body",
        f"has more than {max_parts} form fields",
        suggestion="Send the image as one `file` part, with `name` at most.",
    )


async def urlencoded_fields(request: web.Request) -> dict[str, bytes | str]:
    """The text fields of a urlencoded body; past `http.max_form_parts` fields → 400 before
    any is parsed (counting separators is cheap, parsing 16 MB of `a&` is not). `parse_qsl`
    is pure Python (~0.6 s for a 10 MB `image_base64`), so it runs on a thread: unlike the
    C JSON decoder it lets the loop run at every switch interval."""
    raw = await read_body(request)
    max_parts = request.app[keys.settings_key].http.max_form_parts
    if raw.count(b"&") >= max_parts:  # parse_qsl splits on `&` only (Python ≥ 3.10)
        raise _too_many_parts(max_parts)
    text = raw.decode("utf-8", "replace")
    pairs = await asyncio.to_thread(parse_qsl, text, keep_blank_values=True)
    return {k: v for k, v in pairs}


async def multipart_fields(
    request: web.Request,
    text_fields: tuple[str, ...],
    *,
    max_file_bytes: int,
    file_too_large: Callable[[], AppError],
    max_name_chars: int,
) -> dict[str, bytes | str]:
    """`file` as bytes (more than `max_file_bytes` → `file_too_large()`), the `text_fields` as
    str (a file's name, cut to `max_name_chars`, is the default `name`); other parts are read
    and dropped. aiohttp raises ValueError for a body without a boundary or one that does not
    follow it.

    Parsing costs ~0.2 ms of event loop per part, so the part count is bounded
    (`http.max_form_parts`): the refusal comes after at most that many parts are read. The
    whole body, parts skipped unread included, is bounded by `max_request_mb` (413): aiohttp's
    `client_max_size` does not apply to a streamed multipart body."""
    settings = request.app[keys.settings_key]
    limit = request.client_max_size
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge()
    max_parts = settings.http.max_form_parts
    fields: dict[str, bytes | str] = {}
    reader = await request.multipart()
    timeout = settings.http.body_timeout_s

    def check_total() -> None:
        # Every byte the body has delivered so far, boundaries and skipped parts included.
        if request.content.total_bytes > limit:
            raise PayloadTooLarge()

    count = 0
    while (part := await _stalls_after(timeout, reader.next())) is not None:
        check_total()
        count += 1
        if count > max_parts:
            raise _too_many_parts(max_parts)
        if not isinstance(part, aiohttp.BodyPartReader):
            raise ValidationError("body", "must not nest multipart bodies")
        if part.name == "file":
            fields["file"] = await _read_part(
                part, max_file_bytes, timeout, check_total, file_too_large
            )
            if part.filename:
                # Clients percent-encode what a quoted header value cannot hold (HTML spec).
                stem = Path(unquote(part.filename)).stem[:max_name_chars]
                fields.setdefault("name", stem)
        elif part.name in text_fields:
            raw = await _read_part(part, limit, timeout, check_total, file_too_large)
            fields[part.name] = raw.decode("utf-8", "replace")
        else:  # read and dropped chunk by chunk: part.release() has no bound at all
            while await _stalls_after(timeout, part.read_chunk(part.chunk_size)):
                check_total()
    check_total()
    return fields


async def _stalls_after(stall_s: float, step: Awaitable[_T]) -> _T:
    """`await step`, or 408 if the client sends nothing for `stall_s` seconds meanwhile."""
    try:
        async with asyncio.timeout(stall_s):
            return await step
    except TimeoutError as exc:
        raise RequestTimeout() from exc


async def _read_part(
    part: aiohttp.BodyPartReader,
    limit: int,
    stall_s: float,
    check_total: Callable[[], None],
    file_too_large: Callable[[], AppError],
) -> bytes:
    """A multipart part's bytes, refusing (413) more than `limit`, or once the whole body is
    past its own bound (`check_total`): aiohttp's body limit does not apply to streamed
    multipart parts."""
    data = bytearray()
    while chunk := await _stalls_after(stall_s, part.read_chunk(_CHUNK_BYTES)):
        data += chunk
        if len(data) > limit:
            raise file_too_large() if part.name == "file" else PayloadTooLarge()
        check_total()
    return bytes(data)
