"""What an upload may make the server do (issue 12): fetch an `image_url` (never from a loopback,
private or link-local address, every redirect hop checked, one deadline for all of them, its
resolver closed) and decode an image (its declared pixels checked before decoding, at most
`upload.max_concurrent` at once, its name bounded)."""

from __future__ import annotations

import asyncio
import struct
import threading
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agenthuman_local import errors
from agenthuman_local.api import avatars, fetch
from tests.conftest import ApiClient, MakeClient
from tests.test_errors import assert_error

# -- image_url: no loopback, private or link-local fetches --------------------------------------


@pytest.fixture
async def redirecting_server(aiohttp_server: Any) -> TestServer:
    """On 127.0.0.1: /to?url=U redirects to U, /loop redirects to itself (/slow-loop after
    0.3 s), /nowhere is a 302 with no Location."""

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow_loop(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        raise web.HTTPFound("/slow-loop")

    async def nowhere(request: web.Request) -> web.Response:
        return web.Response(status=302)

    app = web.Application()
    app.router.add_get("/to", to)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow-loop", slow_loop)
    app.router.add_get("/nowhere", nowhere)
    server: TestServer = await aiohttp_server(app)
    return server


async def test_image_url_to_loopback_private_or_link_local_is_refused(
    make_client: MakeClient,
) -> None:
    api = await make_client(upload__allow_private_urls=False)
    own = api.client.server
    urls = [
        f"http://127.0.0.1:{own.port}/healthz",  # the server's own routes: an open port
        "http://127.0.0.1:1/face.jpg",  # a closed one: the same answer
        f"http://localhost:{own.port}/metrics",  # a name that resolves to loopback
        "http://[::1]:1/x.jpg",
        "http://[::ffff:127.0.0.1]:1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x.jpg",
        "http://192.168.0.1/x.jpg",
    ]
    messages = set()
    for url in urls:
        response = await api.post("/v1/avatars/upload-face", json={"image_url": url})
        error = await assert_error(response, 400, "VALIDATION_ERROR")
        messages.add(error["message"])
    assert len(messages) == 1 and "private" in messages.pop()


async def test_redirects_are_followed_and_checked_at_every_hop(
    make_client: MakeClient,
    redirecting_server: TestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """127.0.0.1 stands in for a public host (is_public says so); 127.0.0.2 stays private."""
    monkeypatch.setattr(fetch, "is_public", lambda address: address == "127.0.0.1")
    api = await make_client(upload__allow_private_urls=False)
    hop = f"http://127.0.0.2:{redirecting_server.port}/face.jpg"
    url = str(redirecting_server.make_url("/to").with_query(url=hop))
    response = await api.post("/v1/avatars/upload-face", json={"image_url": url})
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert "private" in error["message"]
    response = await api.post(
        "/v1/avatars/upload-face", json={"image_url": str(redirecting_server.make_url("/loop"))}
    )
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert "redirects" in error["message"]


async def _fetch(url: str, *, allow_private: bool = True) -> bytes:
    """`fetch.fetch_image` of `url` as `image_url`, 1000 bytes at most."""
    return await fetch.fetch_image(
        url,
        "image_url",
        max_bytes=1000,
        too_large=errors.PayloadTooLarge,
        allow_private=allow_private,
    )


async def test_one_fetch_deadline_covers_every_redirect_hop(
    redirecting_server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six 0.3 s hops, each well inside a 0.8 s limit, are 1.8 s together: unreachable, not
    'more than 5 redirects'."""
    monkeypatch.setattr(fetch, "FETCH_TIMEOUT_S", 0.8)
    with pytest.raises(errors.ValidationError, match="is unreachable"):
        await _fetch(str(redirecting_server.make_url("/slow-loop")))


async def test_a_redirect_without_a_location_says_so(redirecting_server: TestServer) -> None:
    with pytest.raises(errors.ValidationError, match="HTTP 302 without a Location"):
        await _fetch(str(redirecting_server.make_url("/nowhere")))


async def test_the_fetch_closes_its_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    original = fetch.PublicResolver.close

    async def close(self: fetch.PublicResolver) -> None:
        closed.append(True)
        await original(self)

    monkeypatch.setattr(fetch.PublicResolver, "close", close)
    with pytest.raises(errors.ValidationError, match="private"):
        await _fetch("http://localhost:1/x.jpg", allow_private=False)
    assert closed == [True]


def test_public_addresses() -> None:
    assert fetch.is_public("8.8.8.8") and fetch.is_public("2001:4860:4860::8888")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "100.64.0.1", "169.254.1.1", "::1"):
        assert not fetch.is_public(address), address
    assert not fetch.is_public("::ffff:10.0.0.1") and not fetch.is_public("224.0.0.1")
    assert not fetch.is_public("fe80::1%eth0") and not fetch.is_public("0.0.0.0")
    # IPv6 forms that carry a loopback or private IPv4 address: compatible, 6to4, NAT64.
    for address in ("::127.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1", "64:ff9b::10.0.0.1"):
        assert not fetch.is_public(address), address
    assert fetch.is_public("64:ff9b::8.8.8.8")


# -- uploads: pixels declared before decoding, uploads at once, names ---------------------------


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim width×height."""
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


async def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(
    api: ApiClient,
) -> None:
    data = _jpeg_claiming(7000, 7000)  # 49 MP in under 1 KB
    form = aiohttp.FormData()
    form.add_field("file", data, filename="big.jpg", content_type="image/jpeg")
    response = await api.post("/v1/avatars/upload-face", data=form)
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert "7000×7000" in error["message"] and "limit is 25 megapixels" in error["message"]
    assert error["details"] == {"field": "file"}  # the field the image came in


async def test_uploads_run_at_most_max_concurrent_at_once(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_client(upload__max_concurrent=2)
    release = threading.Event()
    lock = threading.Lock()
    running = [0]
    most = [0]

    def slow(data: bytes, avatar_dir: Path, max_pixels: int) -> dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        raise errors.NoFace()

    monkeypatch.setattr(avatars, "_prepare_and_save", slow)
    jpeg = _jpeg_claiming(64, 64)

    async def upload() -> int:
        form = aiohttp.FormData()
        form.add_field("file", jpeg, filename="a.jpg", content_type="image/jpeg")
        return (await api.post("/v1/avatars/upload-face", data=form)).status

    tasks = [asyncio.create_task(upload()) for _ in range(5)]
    for _ in range(200):
        if most[0] >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # a third would have started by now; the others wait their turn
    assert running[0] == 2
    release.set()
    assert await asyncio.gather(*tasks) == [400] * 5
    assert most[0] == 2


async def test_upload_names_are_bounded(api: ApiClient) -> None:
    form = aiohttp.FormData()
    form.add_field("file", _jpeg_claiming(64, 64), filename="a.jpg", content_type="image/jpeg")
    form.add_field("name", "n" * 201)
    response = await api.post("/v1/avatars/upload-face", data=form)
    error = await assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"field": "name"}
