"""Request bodies from hostile and careless clients (issue 12): each limit on a body (its size,
its form parts, its JSON values and depth, non-finite numbers, its metadata) refuses in the JSON
error shape and cheaply: by the Content-Length before a byte is read, or as soon as the chunk
that crosses the limit arrives, the connection then closed rather than drained; a body that
stops arriving is a 408. How much a neighbour session suffers is the bench's (`python -m bench
--only hostile`); these tests show that the server stops reading."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agenthuman_local import jsonsafe
from agenthuman_local.api import parsing
from tests.conftest import ApiClient, MakeClient
from tests.test_errors import assert_error

_PART = b'--xx\r\nContent-Disposition: form-data; name="j"\r\n\r\na\r\n'


def _multipart_parts(n: int, name: str = "j") -> bytes:
    part = f'--xx\r\nContent-Disposition: form-data; name="{name}"\r\n\r\na\r\n'.encode()
    return part * n


async def raw_exchange(
    api: ApiClient, head: bytes, body: bytes, *, closed: bool = False
) -> tuple[int, dict[str, str], Any]:
    """Send `head` + `body` over a bare socket without finishing the body; → (status, headers,
    JSON). `closed`: also assert the server then closed the connection, the body still unsent."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = await reader.readexactly(int(headers["content-length"]))
            if closed:
                assert await reader.read() == b""
        return int(status_line.split()[1]), headers, json.loads(payload)
    finally:
        writer.close()


async def _raw_request(api: ApiClient, head: bytes, body: bytes) -> tuple[int, dict[str, Any]]:
    """`raw_exchange` → (status, JSON)."""
    status, _, answer = await raw_exchange(api, head, body)
    return status, answer


async def _refused(api: ApiClient, head: bytes, body: bytes) -> tuple[int, dict[str, str], Any]:
    """Send `head` + `body`, never the rest of the body the head promises; → (status, headers,
    JSON), once the server has closed the connection."""
    return await raw_exchange(api, head, body, closed=True)


def _head(api: ApiClient, path: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {api.key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_create_body_over_max_json_kb_is_413_before_a_byte_is_read(
    make_client: MakeClient,
) -> None:
    """11 MB promised, nothing sent: the answer comes at once (before the session code read the
    old 408 after `http.body_timeout_s`), and the connection is closed."""
    api = await make_client(http__body_timeout_s=0.5, http__max_json_kb=4)
    head = _head(api, "/v1/sessions", "application/json", 11_000_000)
    status, headers, answer = await _refused(api, head, b"")
    assert status == 413, answer
    assert answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "http.max_json_kb" in answer["error"]["suggestion"]
    assert headers["connection"].lower() == "close"
    # At the limit: read and created (negative control).
    metadata = {"k": "x" * (4 * 1024 - 40)}
    assert len(json.dumps({"metadata": metadata})) <= 4 * 1024
    await api.json("POST", "/v1/sessions", 201, json={"metadata": metadata})


async def test_json_values_are_counted_as_they_arrive(make_client: MakeClient) -> None:
    """upload-face takes a base64 image in JSON (up to `max_request_mb`), so its bound is the
    value count: the chunk that crosses `http.max_json_items` brings the 413, the rest of the
    body never sent."""
    api = await make_client(http__body_timeout_s=0.5, http__max_json_items=100)
    head = _head(api, "/v1/avatars/upload-face", "application/json", 1_000_000)
    status, headers, answer = await _refused(api, head, b'{"image_base64": [' + b"1," * 200)
    assert status == 413, answer
    assert "more than 100 JSON values" in answer["error"]["message"]
    assert headers["connection"].lower() == "close"


async def test_a_many_part_body_is_refused_before_aiohttp_parses_a_part(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 000 parts promised, 300 sent: 400 from the delimiter count alone (aiohttp's part
    parser costs ~0.2 ms of event loop a part), and the connection closed, not drained."""
    parsed: list[object] = []
    next_part = aiohttp.MultipartReader.next

    async def spy(self: aiohttp.MultipartReader) -> Any:
        parsed.append(self)
        return await next_part(self)

    monkeypatch.setattr(aiohttp.MultipartReader, "next", spy)
    api = await make_client()
    head = _head(
        api, "/v1/avatars/upload-face", "multipart/form-data; boundary=xx", len(_PART) * 50_000
    )
    status, headers, answer = await _refused(api, head, _PART * 300)
    assert status == 400, answer
    assert "more than 16 form fields" in answer["error"]["message"]
    assert headers["connection"].lower() == "close"
    assert parsed == []
    # A form within the limit is parsed (negative control for the spy).
    response = await api.post(
        "/v1/avatars/upload-face",
        data=_PART * 2 + b"--xx--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert response.status == 400  # no image
    assert parsed


def test_the_delimiter_count_spans_chunk_borders_and_ignores_lookalikes() -> None:
    body = _PART * 17 + b"--xx--\r\n"
    scan = parsing.DelimiterScan(b"xx", 16)
    with pytest.raises(Exception, match="more than 16 form fields"):
        for i in range(len(body)):  # one byte at a time: every delimiter split somewhere
            scan.feed(body[i : i + 1])
    assert scan.count == 18  # refused at the 18th delimiter: a 17th part
    at_limit = parsing.DelimiterScan(b"xx", 16)
    for i in range(0, len(body) - len(_PART), 7):
        at_limit.feed(body[len(_PART) :][i : i + 7])
    assert at_limit.count == 17  # 16 parts and the closing delimiter: no refusal
    # `--xx` inside a value, not at a line start, is no delimiter.
    lookalike = parsing.DelimiterScan(b"xx", 1)
    lookalike.feed(b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\na--xx b--xx\r\n--xx--')
    assert lookalike.count == 2


async def test_a_refusal_before_the_body_closes_the_connection(api: ApiClient) -> None:
    """A 401 to a POST whose body was never read: `Connection: close`, no drain."""
    head = _head(api, "/v1/sessions", "application/json", 5_000_000).replace(
        f"x-api-key: {api.key}".encode(), b"x-api-key: nope"
    )
    status, headers, answer = await _refused(api, head, b"{")
    assert status == 401, answer
    assert headers["connection"].lower() == "close"


# -- item 1: many-part and large bodies ---------------------------------------------------------


async def test_a_many_part_multipart_body_is_refused_after_the_limit_is_read(
    make_client: MakeClient,
) -> None:
    """50 000 parts promised, 300 sent (aiohttp's reader looks a chunk ahead) and the rest never:
    the 400 comes anyway, so the server stopped at the limit (16 parts) instead of parsing every
    part on the loop."""
    api = await make_client()
    body = _multipart_parts(300)
    head = (
        b"POST /v1/avatars/upload-face HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=xx\r\n"
        + f"Content-Length: {len(_multipart_parts(1)) * 50_000}\r\n\r\n".encode()
    )
    status, answer = await _raw_request(api, head, body)
    assert status == 400
    assert answer["error"]["code"] == "VALIDATION_ERROR"
    assert "more than 16 form fields" in answer["error"]["message"]
    assert (await api.get("/healthz")).status == 200


async def test_many_parts_in_a_whole_body_and_a_urlencoded_form_are_400(
    make_client: MakeClient,
) -> None:
    api = await make_client(http__max_form_parts=4)
    multipart = _multipart_parts(5) + b"--xx--\r\n"
    response = await api.post(
        "/v1/avatars/upload-face",
        data=multipart,
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    await assert_error(response, 400, "VALIDATION_ERROR")
    form = "&".join(f"f{i}=a" for i in range(5))
    response = await api.post(
        "/v1/avatars/upload-face",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"field": "body"}
    # `;` is not a separator (parse_qsl splits on `&` only): a value full of them is one field.
    response = await api.post(
        "/v1/avatars/upload-face",
        data="name=a;b;c;d;e;f",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] != {"field": "body"}, error


def _junk_body(total: int) -> bytes:
    """A multipart body of exactly `total` bytes: one part the server skips (`junk`)."""
    head = b'--xx\r\nContent-Disposition: form-data; name="junk"\r\n\r\n'
    tail = b"\r\n--xx--\r\n"
    return head + b"a" * (total - len(head) - len(tail)) + tail


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_multipart_body_over_max_request_mb_is_413_skipped_parts_included(
    make_client: MakeClient, chunked: bool
) -> None:
    """A part the server does not use still counts: one byte over the limit is a 413 whether
    the body says its length up front or not; at the limit it is read (400, no image)."""
    api = await make_client(max_request_mb=0.5)
    limit = 512 * 1024
    headers = {"Content-Type": "multipart/form-data; boundary=xx"}
    for total, status, code in [(limit + 1, 413, "PAYLOAD_TOO_LARGE"), (limit, 400, None)]:
        body = _junk_body(total)
        data: Any = _chunked(body) if chunked else body
        response = await api.post("/v1/avatars/upload-face", data=data, headers=headers)
        error = await assert_error(response, status, code or "VALIDATION_ERROR")
        if status == 413:
            assert "max_request_mb" in error["suggestion"]


async def test_a_json_body_of_many_values_is_refused_before_decoding(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 MB of tiny values take seconds to decode (holding the GIL, so no thread helps): the
    count of separators is checked first."""
    decoded: list[str] = []
    loads = jsonsafe.json.loads

    def spy(text: Any, **kwargs: Any) -> Any:
        decoded.append(text)
        return loads(text, **kwargs)

    monkeypatch.setattr(jsonsafe.json, "loads", spy)
    api = await make_client(http__max_json_items=100)
    bomb = {"metadata": {"k": [{"a": 1}] * 60}}  # 60 objects + 59 commas + 3 brackets
    error = await assert_error(await api.post("/v1/sessions", json=bomb), 413, "PAYLOAD_TOO_LARGE")
    assert "more than 100 JSON values" in error["message"]
    assert json.dumps(bomb) not in decoded  # refused without decoding
    await api.json("POST", "/v1/sessions", 201, json={"metadata": {"k": [1] * 90}})
    image = {"metadata": {"png": "data:image/png;base64," + "A" * 200_000}}
    await assert_error(await api.post("/v1/sessions", json=image), 413, "PAYLOAD_TOO_LARGE")
    assert json.dumps(image) in decoded  # a long string is one value (then over the metadata limit)
    await assert_error(
        await api.post(
            "/v1/sessions", data=b"[" * 100_000, headers={"Content-Type": "application/json"}
        ),
        413,
        "PAYLOAD_TOO_LARGE",
    )


# -- item 6: deeply nested JSON, metadata over its limit ----------------------------------------


@pytest.mark.parametrize("depth", [33, 500, 980])
async def test_deep_metadata_is_a_400_and_nothing_is_stored(api: ApiClient, depth: int) -> None:
    raw = '{"metadata": {"a": ' + "[" * depth + "]" * depth + "}}"
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    error = await assert_error(response, 400, "INVALID_JSON")
    assert "deeper than 32 levels" in error["message"]
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
async def test_a_non_finite_number_is_invalid_json_not_a_storage_outage(
    api: ApiClient, number: str
) -> None:
    raw = '{"metadata": {"a": ' + number + "}}"
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "INVALID_JSON")
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []
    assert jsonsafe.loads('{"a": 1e308, "b": -0.0}', jsonsafe.DEFAULT_LIMITS)["a"] == 1e308


async def test_metadata_as_deep_as_the_limit_is_stored(api: ApiClient) -> None:
    metadata: Any = "leaf"
    for _ in range(31):  # the body object is the 32nd level
        metadata = {"a": metadata}
    created = await api.create_session({"metadata": metadata})
    got = await api.json("GET", f"/v1/sessions/{created['session_id']}")
    assert got["session"]["metadata"] == metadata


async def test_metadata_over_its_limit_is_413_and_at_the_limit_is_stored(
    make_client: MakeClient,
) -> None:
    api = await make_client(session__max_metadata_kb=1)
    await api.create_session({"metadata": {"k": "x" * 1000}})  # 1 008 bytes: stored
    response = await api.post("/v1/sessions", json={"metadata": {"k": "x" * 1020}})
    error = await assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert "limit is 1024" in error["message"]
    assert len((await api.json("GET", "/v1/sessions"))["sessions"]) == 1
    # A body under the limit whose metadata grows when stored: 1e5 is kept as 100000.0.
    raw = '{"metadata": {"k": [' + ",".join(["1e5"] * 200) + "]}}"
    assert len(raw) < 1024
    response = await api.post(
        "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert len((await api.json("GET", "/v1/sessions"))["sessions"]) == 1


# -- item 4: a body that stops arriving ---------------------------------------------------------


async def test_a_body_that_stops_arriving_is_408(make_client: MakeClient) -> None:
    api = await make_client(http__body_timeout_s=0.3)
    head = (
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    status, answer = await _raw_request(api, head, b'{"metadata": ')
    assert (status, answer["error"]["code"]) == (408, "REQUEST_TIMEOUT")
    head = (
        b"POST /v1/avatars/upload-face HTTP/1.1\r\nHost: x\r\n"
        + f"x-api-key: {api.key}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 100000\r\n\r\n"
    )
    part = b'--xx\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + b"\xff\xd8" * 9000
    status, answer = await _raw_request(api, head, part)
    assert (status, answer["error"]["code"]) == (408, "REQUEST_TIMEOUT")
