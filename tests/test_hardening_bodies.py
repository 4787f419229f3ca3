"""Bombs refused cheaply (issue 12): a body over a limit is refused by its Content-Length before
it is read, or as soon as the chunk that crosses the limit arrives, and the connection is then
closed rather than drained. How much a neighbour session suffers is the bench's (`python -m
bench --only hostile`); these tests show that the server stops reading."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from agenthuman_local.api import parsing
from tests.conftest import ApiClient, MakeClient
from tests.test_hardening import raw_exchange

_PART = b'--xx\r\nContent-Disposition: form-data; name="j"\r\n\r\na\r\n'


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
