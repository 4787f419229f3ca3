"""Reading request bodies and fields strictly: every complaint names the field (SPEC §4).

A body costs the event loop little whatever its shape (issue 12). It is read with a timeout
between chunks (`http.body_timeout_s` → 408) and bounded by `max_request_mb`, or by
`http.max_json_kb` for a JSON route that takes no image (413, by Content-Length before a byte
is read). Each chunk is scanned as it arrives (`BodyScan`): past `http.max_json_items` JSON
values (413) or `http.max_form_parts` form parts (400) the body is refused at once, the rest
unread — the error middleware then closes the connection rather than let aiohttp drain it. A
JSON body nested past `http.max_json_depth` is a 400 (`jsonsafe`: decoding holds the GIL, so
a worker thread would not spare the loop — the bounds do).

Measured with `python -m bench --only hostile` (2 cores): an 11 MB JSON body of 100 000 values
cost the loop ~25 ms in one piece when read, decoded and counted whole (a witness session 24 %
late); 50 000-part multipart bodies ~3 ms each in aiohttp's part parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiohttp
from aiohttp import hdrs, web
from aiohttp.helpers import parse_mimetype

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


class BodyScan:
    """Looks at each chunk of a body as it arrives and raises to refuse it at once, before the
    rest is read: what a bomb costs is then bounded by the limit, not by its size."""

    def feed(self, chunk: bytes) -> None:
        """Raise (an AppError) to refuse the body."""


class JsonItemScan(BodyScan):
    """Counts the JSON values (`,` `[` `{`, as `jsonsafe.item_count`) chunk by chunk: past
    `max_items` → 413, after reading about as many values as the limit allows."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.items = 0

    def feed(self, chunk: bytes) -> None:
        self.items += jsonsafe.item_count(chunk)
        if self.items > self.max_items:
            raise _too_many_values(self.max_items)


class DelimiterScan(BodyScan):
    """Counts a multipart body's boundary delimiters (`CRLF--boundary`, the first one without
    its CRLF) across chunk borders: more than `max_parts` parts → 400 before any is parsed
    (aiohttp parses a part's headers in ~0.2 ms of event loop)."""

    def __init__(self, boundary: bytes, max_parts: int) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.max_parts = max_parts
        self.count = 0
        self._tail = b"\r\n"  # the body's start counts as a line start

    def feed(self, chunk: bytes) -> None:
        window = self._tail + chunk
        self.count += window.count(self.delimiter)
        self._tail = window[-(len(self.delimiter) - 1) :]
        if self.count > self.max_parts + 1:  # the last delimiter closes the body
            raise _too_many_parts(self.max_parts)


def _too_many_values(max_items: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body has more than {max_items} JSON values",
        suggestion="Send fewer values (the limit is the server's http.max_json_items).",
    )


async def read_body(
    request: web.Request, *, limit: int | None = None, scan: BodyScan | None = None
) -> bytes:
    """The whole body: at most `limit` bytes (default: the app's `client_max_size`; a larger
    Content-Length is refused before reading), each chunk shown to `scan` as it arrives, and
    no gap between chunks longer than `http.body_timeout_s` (408), so a stalled client does
    not hold a handler. A body refused here is left unread: the error middleware closes the
    connection instead of letting aiohttp drain it."""
    timeout = request.app[keys.settings_key].http.body_timeout_s
    if limit is None:
        limit = request.client_max_size
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge()
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.readany()
        except TimeoutError as exc:
            raise RequestTimeout() from exc
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        if scan is not None:
            scan.feed(chunk)
        parts.append(chunk)


def decode_json(raw: bytes, limits: JsonLimits, *, counted: bool = False) -> Any:
    """`raw` as JSON (UTF-8, no NaN, within `limits`), else a 400 or 413. `counted`: its
    values were already counted (`JsonItemScan`)."""
    try:
        return jsonsafe.loads(raw.decode("utf-8"), limits, counted=counted)
    except jsonsafe.JsonTooBig as exc:
        raise _too_many_values(limits.max_items) from exc
    except jsonsafe.JsonTooDeep as exc:
        raise InvalidJson(
            f"Request body nests arrays or objects deeper than {limits.max_depth} levels",
            suggestion="Flatten the JSON (the limit is the server's http.max_json_depth).",
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError is one
        raise InvalidJson() from exc


async def json_object(request: web.Request, *, image: bool = False) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`. At most `http.max_json_kb` (413, by
    Content-Length before reading), or `max_request_mb` for a route that takes an `image`
    in base64; past `http.max_json_items` values, 413 as soon as they have arrived."""
    http = request.app[keys.settings_key].http
    limit = None if image else int(http.max_json_kb * 1024)
    if limit is not None and (request.content_length or 0) > limit:
        raise PayloadTooLarge(
            f"A JSON body here is at most {limit} bytes",
            suggestion="Send a smaller body (the limit is the server's http.max_json_kb).",
        )
    raw = await read_body(request, limit=limit, scan=JsonItemScan(http.max_json_items))
    if not raw.strip():
        return {}
    body = decode_json(raw, JsonLimits(http.max_json_depth, http.max_json_items), counted=True)
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


class FieldScan(BodyScan):
    """Counts a urlencoded body's `&` as they arrive: `max_parts` fields or more → 400."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        self.count += chunk.count(b"&")  # parse_qsl splits on `&` only (Python ≥ 3.10)
        if self.count >= self.max_parts:
            raise _too_many_parts(self.max_parts)


async def urlencoded_fields(request: web.Request) -> dict[str, bytes | str]:
    """The text fields of a urlencoded body; past `http.max_form_parts` fields → 400 as soon
    as they arrive, before any is parsed (counting separators is cheap, parsing 16 MB of `a&`
    is not). `parse_qsl` is pure Python (~0.6 s for a 10 MB `image_base64`), so it runs on a
    thread: unlike the C JSON decoder it lets the loop run at every switch interval."""
    max_parts = request.app[keys.settings_key].http.max_form_parts
    raw = await read_body(request, scan=FieldScan(max_parts))
    text = raw.decode("utf-8", "replace")
    pairs = await asyncio.to_thread(parse_qsl, text, keep_blank_values=True)
    return {k: v for k, v in pairs}


def _boundary(request: web.Request) -> bytes:
    boundary = parse_mimetype(request.headers.get(hdrs.CONTENT_TYPE, "")).parameters.get(
        "boundary", ""
    )
    if not boundary or len(boundary) > 70:  # RFC 2046: 1-70 characters
        raise ValueError("multipart body without a valid boundary")
    return boundary.strip('"').encode("latin-1", "replace")


def _in_memory(request: web.Request, body: bytes) -> aiohttp.StreamReader:
    """`body`, already read, as the stream a MultipartReader parses: a high-water mark above
    its size, so the stream never asks the connection to pause or resume."""
    stream = aiohttp.StreamReader(request.protocol, len(body) + 1, loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    return stream


async def multipart_fields(
    request: web.Request,
    text_fields: tuple[str, ...],
    *,
    max_file_bytes: int,
    file_too_large: Callable[[], AppError],
    max_name_chars: int,
) -> dict[str, bytes | str]:
    """`file` as bytes (more than `max_file_bytes` → `file_too_large()`), the `text_fields` as
    str (a file's name, cut to `max_name_chars`, is the default `name`); other parts are
    dropped. aiohttp raises ValueError for a body without a boundary or one that does not
    follow it.

    The body is read whole first, bounded like any (`read_body`: `max_request_mb`, 413), its
    boundary delimiters counted as it arrives: more than `http.max_form_parts` parts → 400
    at once, before aiohttp parses any (~0.2 ms of event loop a part) and without reading the
    rest. Then aiohttp parses the parts from memory."""
    max_parts = request.app[keys.settings_key].http.max_form_parts
    boundary = _boundary(request)
    body = await read_body(request, scan=DelimiterScan(boundary, max_parts))
    reader = aiohttp.MultipartReader(request.headers, _in_memory(request, body))
    fields: dict[str, bytes | str] = {}
    count = 0
    while (part := await reader.next()) is not None:
        count += 1
        if count > max_parts:  # delimiters inside a nested body, or a preamble's
            raise _too_many_parts(max_parts)
        if not isinstance(part, aiohttp.BodyPartReader):
            raise ValidationError("body", "must not nest multipart bodies")
        if part.name == "file":
            fields["file"] = await _read_part(part, max_file_bytes, file_too_large)
            if part.filename:
                # Clients percent-encode what a quoted header value cannot hold (HTML spec).
                stem = Path(unquote(part.filename)).stem[:max_name_chars]
                fields.setdefault("name", stem)
        elif part.name in text_fields:
            raw = await _read_part(part, len(body), file_too_large)
            fields[part.name] = raw.decode("utf-8", "replace")
        else:
            await part.release()  # from memory: bounded by the body already read
    return fields


async def _read_part(
    part: aiohttp.BodyPartReader, limit: int, file_too_large: Callable[[], AppError]
) -> bytes:
    """A multipart part's bytes, refusing (413) more than `limit`."""
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise file_too_large() if part.name == "file" else PayloadTooLarge()
    return bytes(data)
