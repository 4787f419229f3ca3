"""The session WebSocket (SPEC §8).

The handler task is the only reader of its socket; one writer task per socket drains a bounded
send queue (events first, then media), so nothing else ever writes to the socket directly.
`session.init` is checked in SPEC's order — 4002 protocol, 4004 unknown session, 4001 bad
token, 4003 not started, 4009 ended — so a wrong token learns nothing about the session.

Fairness between sockets and coalesced control messages: `api.fairness`.

A socket that has not sent `session.init` yet belongs to no session, so ending the sessions
at shutdown does not reach it: it also waits on the app's `ShutdownSignal`, which
`app.end_live_sessions` (`on_shutdown`, run before aiohttp waits for open handlers) sets, and
then closes at once with 1001 "server shutting down", so it never holds the exit. While it
waits, its request carries `keys.waiting_for_init_key`: the connection cap may close it to
make room (`api.server`).

The render workers and the runner factory the session manager uses are `app.live_ctx`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from agenthuman_local import ids, keys, protocol
from agenthuman_local.api.auth import public
from agenthuman_local.api.fairness import ControlCoalescer, MessageBudget
from agenthuman_local.api.server import CLOSE_ANSWER_WAIT_S
from agenthuman_local.jsonsafe import JsonLimits
from agenthuman_local.sessions.live import LiveSession, MediaRefused, SessionClosed
from agenthuman_local.sessions.state import EndReason, SessionState
from agenthuman_local.transports.socket import SocketMediaSink

if TYPE_CHECKING:
    from agenthuman_local.sessions.runner import SessionRunner

log = logging.getLogger(__name__)


CLOSE_GOING_AWAY_REASON = "server shutting down"


class ShutdownSignal:
    """Set once by `on_shutdown`; sockets still waiting for `session.init` wait on it too."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    @property
    def future(self) -> asyncio.Future[None]:
        if self._future is None:  # made on the loop, at first use
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class WsLink:
    """One socket's send side: a bounded event queue (never dropped: overflow closes the
    socket so the events wait in the session's outbox) and a media queue that drops oldest."""

    def __init__(
        self, ws: web.WebSocketResponse, session_id: str, *, max_events: int = 4096
    ) -> None:
        self.ws = ws
        self._events: deque[dict[str, Any]] = deque()
        self._media: deque[bytes] = deque()
        self._max_events = max_events
        self._max_media = 16
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.close_request: asyncio.Future[tuple[int, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._writer = asyncio.create_task(self._write(), name=f"ws:{session_id}:writer")

    def send_event(self, event: dict[str, Any]) -> bool:
        if self._closing or self.ws.closed or len(self._events) >= self._max_events:
            return False
        self._events.append(event)
        self._kick()
        return True

    def send_media(self, data: bytes) -> None:
        if self._closing or self.ws.closed:
            return
        if len(self._media) >= self._max_media:
            self._media.popleft()
        self._media.append(data)
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def take_unsent(self) -> list[dict[str, Any]]:
        unsent = list(self._events)
        self._events.clear()
        return unsent

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._events or self._media:
                    if self._events:
                        await self.ws.send_str(json.dumps(self._events[0]))
                        # Popped only once sent, so a dead socket leaves it for the next one.
                        self._events.popleft()
                    else:
                        await self.ws.send_bytes(self._media.popleft())
                self._idle.set()
        except (ConnectionError, RuntimeError):
            self._closing = True
            self._idle.set()

    async def close(self, code: int, reason: str) -> None:
        """Ask the socket's handler to close it with `code` once what is queued is sent.

        Callable from any task; returns at once, so ending a session never waits on a client.
        The handler itself closes, because aiohttp drops the connection without a clean close
        handshake when a task other than the reader closes the socket.
        """
        if not self.close_request.done():
            self.close_request.set_result((code, reason))

    async def finish(self) -> None:
        """The handler's last step: honour a close request, stop the writer."""
        try:
            if self.close_request.done() and not self.ws.closed:
                code, reason = self.close_request.result()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), 2.0)
                self._closing = True
                await self.ws.close(code=code, message=reason.encode())
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self._closing = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


def _nothing_to_interrupt() -> dict[str, Any]:
    """What the session answers an interrupt with when nothing is queued or playing."""
    event = protocol.interrupt_confirmed(None, 0, 0)
    event["dropped_samples"] = 0  # as speech.interrupt adds
    return event


def _answer_repeat(runner: SessionRunner, link: WsLink, cmd: protocol.Command) -> None:
    """The reply the session would give a repeat, on the socket's queue (the session's own
    events go there too, so the order holds); through the session if the queue is full."""
    match cmd:
        case protocol.Interrupt():
            if not link.send_event(_nothing_to_interrupt()):
                runner.interrupt()
        case protocol.KeepAlive():
            if not link.send_event(protocol.keep_alive_ack()):
                runner.keep_alive()
        case _:  # a listening cue the session already has: nothing to answer
            pass


async def _reject(ws: web.WebSocketResponse, close_code: int, code: str, message: str) -> None:
    await ws.send_json(protocol.error_event(code, message))
    await ws.close(code=close_code, message=message.encode()[:120])


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse, init: protocol.SessionInit
) -> LiveSession | None:
    """SPEC §8's order of checks; None after the socket was rejected and closed."""
    manager = request.app[keys.manager_key]
    url_session_id = request.match_info.get("session_id")
    session = None
    if url_session_id is None or url_session_id == init.session_id:
        session = await manager.lookup(init.session_id)
    if session is None:
        await _reject(
            ws, protocol.CLOSE_UNKNOWN_SESSION, protocol.E_SESSION_NOT_FOUND, "Session not found"
        )
        return None
    if not ids.secret_matches(init.token, session.token_hash):
        await _reject(ws, protocol.CLOSE_BAD_TOKEN, protocol.E_UNAUTHORIZED, "Invalid token")
        return None
    if session.status is SessionState.CREATED:
        await _reject(
            ws,
            protocol.CLOSE_NOT_STARTED,
            protocol.E_NOT_STARTED,
            "Session not started: call start first",
        )
        return None
    live = manager.live(init.session_id)
    if session.status is SessionState.ENDED or live is None:
        await _reject(ws, protocol.CLOSE_ENDED, protocol.E_SESSION_ENDED, "Session has ended")
        return None
    return live


def _dispatch(runner: SessionRunner, cmd: protocol.Command) -> None:
    match cmd:
        case protocol.Speak(pcm=pcm, sample_rate_hz=rate):
            runner.speak(pcm, rate)
        case protocol.SpeakEnd():
            runner.speak_end()
        case protocol.Interrupt():
            runner.interrupt()
        case protocol.Listening(active=active):
            runner.set_listening(active)
        case protocol.KeepAlive():
            runner.keep_alive()
        case protocol.SessionInit():
            runner.emit_error(protocol.E_PROTOCOL, "session.init was already received")


@public
async def session_ws(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[keys.settings_key]
    # No permessage-deflate: the output is JPEG/PCM media, which does not compress.
    ws = web.WebSocketResponse(
        max_msg_size=int(settings.ws.max_message_mb * 2**20),
        compress=False,
        timeout=CLOSE_ANSWER_WAIT_S,
    )
    await ws.prepare(request)
    try:
        first = await _first_message(request, ws, settings.ws.connect_timeout_s)
    except TimeoutError:
        await _reject(
            ws, protocol.CLOSE_PROTOCOL, protocol.E_PROTOCOL, protocol.FIRST_MESSAGE_MUST_BE_INIT
        )
        return ws
    if first is None:  # the server is shutting down
        await ws.close(code=WSCloseCode.GOING_AWAY, message=CLOSE_GOING_AWAY_REASON.encode())
        return ws
    if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return ws
    try:
        if first.type is not WSMsgType.TEXT:
            raise protocol.ProtocolError(protocol.E_PROTOCOL, protocol.FIRST_MESSAGE_MUST_BE_INIT)
        limits = JsonLimits(settings.http.max_json_depth, settings.http.max_json_items)
        init = protocol.parse_init(first.data, limits=limits)
    except protocol.ProtocolError as exc:
        await _reject(ws, protocol.CLOSE_PROTOCOL, exc.code, exc.message)
        return ws
    live = await _authenticate(request, ws, init)
    if live is None:
        return ws
    manager = request.app[keys.manager_key]
    manager.mark_connected(init.session_id)
    link = WsLink(ws, init.session_id)
    sink: SocketMediaSink | None = None
    try:
        try:
            runner, _ = await live.connect(link, init)
        except SessionClosed:
            await _reject(ws, protocol.CLOSE_ENDED, protocol.E_SESSION_ENDED, "Session has ended")
            return ws
        except MediaRefused as exc:  # too big, or no room for it: the session keeps its seat
            manager.mark_refused(init.session_id)  # until the connect timeout, from now
            await _reject(ws, exc.close_code, exc.code, exc.message)
            return ws
        except Exception:
            # The renderer could not be made (e.g. an avatar's files are gone): SPEC §11.
            log.exception("session %s: media failed to start", init.session_id)
            manager.end_soon(init.session_id, EndReason.ERROR)
            await _reject(
                ws,
                WSCloseCode.INTERNAL_ERROR,
                protocol.E_MEDIA_FAILED,
                "The avatar could not be loaded",
            )
            return ws
        if init.output.video_jpeg or init.output.video_rgb24 or init.output.audio:
            sink = SocketMediaSink(
                init.session_id,
                link.send_media,
                video_jpeg=init.output.video_jpeg,
                video_rgb24=init.output.video_rgb24,
                audio=init.output.audio,
                sample_rate_hz=init.sample_rate_hz,
            )
            runner.add_sink(sink)
        rate = settings.ws.max_messages_per_s
        budget = MessageBudget(rate, asyncio.get_running_loop().time) if rate else None
        coalescer = ControlCoalescer(1.0 / runner.options.fps, asyncio.get_running_loop().time)
        await _read(ws, runner, init.sample_rate_hz, link, limits, budget, coalescer)
    finally:
        if sink is not None:
            runner.remove_sink(sink)
            await sink.aclose()
        live.disconnect(link)
        await link.finish()
    return ws


async def _first_message(
    request: web.Request, ws: web.WebSocketResponse, timeout_s: float
) -> WSMessage | None:
    """The first message (TimeoutError past `timeout_s`), or None once the server shuts down.

    Meanwhile the request is marked `keys.waiting_for_init_key`: the connection cap may evict
    it."""
    signal = request.app.get(keys.ws_shutdown_key)
    stopping = signal.future if signal is not None else None
    if stopping is not None and stopping.done():
        return None
    request[keys.waiting_for_init_key] = True
    try:
        if stopping is None:
            return await ws.receive(timeout=timeout_s)
        receive: asyncio.Future[Any] = asyncio.ensure_future(ws.receive(timeout=timeout_s))
        waiting: set[asyncio.Future[Any]] = {receive, stopping}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if receive.done():
            first: WSMessage = receive.result()
            return first
        receive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receive
        return None
    finally:
        request[keys.waiting_for_init_key] = False


async def _read(
    ws: web.WebSocketResponse,
    runner: SessionRunner,
    sample_rate_hz: int,
    link: WsLink,
    limits: JsonLimits,
    budget: MessageBudget | None,
    coalescer: ControlCoalescer,
) -> None:
    """Until the client goes or someone asks `link` to close the socket."""
    while True:
        if budget is not None and (delay := budget.take()) > 0:
            if budget.should_warn():
                runner.emit_error(
                    protocol.E_RATE_LIMITED,
                    f"More than {budget.rate:g} messages a second: the server reads this socket "
                    "more slowly; nothing is dropped",
                )
            await asyncio.wait({link.close_request}, timeout=delay)
            if link.close_request.done():
                return
        receive: asyncio.Future[Any] = asyncio.ensure_future(ws.receive())
        waiting: set[asyncio.Future[Any]] = {receive, link.close_request}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not receive.done():
            receive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receive
            return
        msg = receive.result()
        try:
            if msg.type is WSMsgType.TEXT:
                cmd = protocol.parse_text(msg.data, limits=limits)
            elif msg.type is WSMsgType.BINARY:
                cmd = protocol.parse_binary(msg.data, sample_rate_hz)
            else:
                return
            if coalescer.absorb(cmd):
                _answer_repeat(runner, link, cmd)
            else:
                _dispatch(runner, cmd)
        except protocol.ProtocolError as exc:
            runner.emit_error(exc.code, exc.message)
