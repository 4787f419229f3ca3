"""The viewer page (`viewer_url`) and its media socket, served from the app's `ViewerHub`.

Routes (no API key: the URL carries the session's viewer token, SPEC §2):

    GET /v1/sessions/{session_id}/viewer?token=…      viewer_page   the HTML
    GET /v1/sessions/{session_id}/viewer/ws?token=…   viewer_socket frames, audio, state
    GET /viewer/{name}                                viewer_asset  viewer.js, viewer-worklet.js

The app provides two things: `app[keys.viewer_hub_key]`, the hub the session runners publish into,
and `app[keys.viewer_tokens_key]`, an async function session id → that session's viewer token (None
for an unknown session), e.g. from `SessionManager.lookup`. A wrong token looks exactly like an
unknown session.

The socket handler is the only reader of its socket; one named task writes what the hub queues
for this viewer, so a slow page only loses its own oldest messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from agenthuman_local import keys
from agenthuman_local.api.auth import public
from agenthuman_local.api.server import CLOSE_ANSWER_WAIT_S
from agenthuman_local.errors import NotFound, SessionNotFound
from agenthuman_local.transports.viewer import Viewer

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_ASSETS = {
    "viewer.js": "text/javascript",
    "viewer-worklet.js": "text/javascript",
}
# The page loads only its own scripts and talks only to its own origin.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self' ws: wss:"
)

ViewerTokenLookup = Callable[[str], Awaitable[str | None]]


async def _authorize(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    token = request.query.get("token", "")
    expected = await request.app[keys.viewer_tokens_key](session_id)
    # As bytes: compare_digest refuses a str that is not ASCII (a TypeError, so a 500).
    if not token or expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
        raise SessionNotFound()
    return session_id


@public
async def viewer_page(request: web.Request) -> web.StreamResponse:
    await _authorize(request)
    return web.FileResponse(
        STATIC_DIR / "viewer.html",
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            "Content-Security-Policy": _CSP,
            "Referrer-Policy": "no-referrer",  # the URL holds the token
        },
    )


async def viewer_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = _ASSETS.get(name)
    if content_type is None:
        raise NotFound()
    return web.FileResponse(
        STATIC_DIR / name,
        headers={"Content-Type": f"{content_type}; charset=utf-8", "Cache-Control": "no-cache"},
    )


@public
async def viewer_socket(request: web.Request) -> web.StreamResponse:
    session_id = await _authorize(request)
    hub = request.app[keys.viewer_hub_key]
    # No permessage-deflate: JPEG and PCM do not compress, deflating them only costs CPU.
    # A page that stopped reading (a frozen tab) never answers a close: wait 1 s, not 10.
    ws = web.WebSocketResponse(
        heartbeat=20.0, max_msg_size=64 * 1024, compress=False, timeout=CLOSE_ANSWER_WAIT_S
    )
    await ws.prepare(request)
    try:
        viewer = hub.connect(session_id)
    except RuntimeError:  # the server is shutting down
        await ws.close(code=WSCloseCode.GOING_AWAY)
        return ws
    writer = asyncio.create_task(_write(ws, viewer), name=f"viewer:{session_id}:send")
    try:
        async for msg in ws:  # the page sends nothing we need; reading notices the close
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.disconnect(viewer)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await ws.close()
    return ws


async def _write(ws: web.WebSocketResponse, viewer: Viewer) -> None:
    try:
        while (message := await viewer.get()) is not None:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
    except (ConnectionError, RuntimeError) as exc:  # the page went away mid-send
        log.debug("viewer of %s gone: %s", viewer.session_id, exc)
    # The hub closed this viewer (shutdown): closing the socket ends the reading loop too.
    await ws.close()
