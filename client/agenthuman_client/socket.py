"""The session WebSocket (SPEC §8) as one object: commands out, typed events and media in.

    sock = await SessionSocket.connect(session, output_video="jpeg", output_audio=True)
    await sock.speak(pcm)            # PCM s16le (bytes, int16 or float samples) at any rate
    await sock.speak_end()
    async for item in sock:          # events (events.py) and media (media.py), in arrival order
        ...

Speech at the socket's `sample_rate` goes as binary messages; at any other rate as
`agent.speak` with its `sample_rate`, which the server resamples. A socket that drops without
the client asking is resumed (a new socket, the same `session.init`) within `resume_for_s`;
commands sent meanwhile wait for it. The socket never negotiates permessage-deflate and takes
messages of any size (a 1080p rgb24 frame is 6 MB).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import numpy as np

from agenthuman_client.events import (
    ConnectionEstablished,
    Event,
    ServerError,
    SocketClosed,
    SocketResumed,
    parse_event,
)
from agenthuman_client.media import Media, decode_media, to_pcm16
from agenthuman_client.rest import Session

E = TypeVar("E")

DEFAULT_SAMPLE_RATE = 16000
# Close codes after which resuming is pointless (SPEC §8): replaced by another socket, bad
# token, bad init, not started, unknown session, ended.
FINAL_CLOSE_CODES = frozenset({4000, 4001, 4002, 4003, 4004, 4009})
MAX_BINARY_CHUNK = 1 << 20


class SocketRefused(Exception):
    """The server refused `session.init`: its `error` event's code and the close code."""

    def __init__(self, code: str, message: str, close_code: int | None) -> None:
        super().__init__(f"{code}: {message} (close {close_code})")
        self.code = code
        self.message = message
        self.close_code = close_code


class SessionSocket:
    """One session's socket. Build it with `connect`."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        own_http: bool,
        ws_uri: str,
        session_id: str,
        init_config: dict[str, Any],
        era: str = "B",
        auto_resume: bool,
        resume_for_s: float,
        keep_alive_s: float | None,
        connect_timeout_s: float,
    ) -> None:
        self.http = http
        self._own_http = own_http
        self.ws_uri = ws_uri
        self.session_id = session_id
        self._init = init_config
        self.era = era
        self.sample_rate = int(init_config.get("sample_rate") or DEFAULT_SAMPLE_RATE)
        self.auto_resume = auto_resume
        self.resume_for_s = resume_for_s
        self.keep_alive_s = keep_alive_s
        self.connect_timeout_s = connect_timeout_s
        self.established: ConnectionEstablished | None = None
        self.events: deque[Event] = deque(maxlen=10_000)
        self.resumes = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._queue: asyncio.Queue[Event | Media] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._closing = False
        self._closed: SocketClosed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[Event | Media], None]] = []

    # --- connecting ------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        session: Session,
        *,
        http: aiohttp.ClientSession | None = None,
        video_width: int | None = None,
        video_height: int | None = None,
        fps: int | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        output_video: str | None = None,
        output_audio: bool = False,
        room: dict[str, Any] | None = None,
        auto_resume: bool = True,
        resume_for_s: float = 10.0,
        keep_alive_s: float | None = 30.0,
        connect_timeout_s: float = 30.0,
    ) -> SessionSocket:
        """Open `session.ws_uri` and send `session.init`; raises `SocketRefused` on a refusal.

        `output_video` is "jpeg", "rgb24" or None; `output_audio` asks for the frames' audio."""
        if not session.ws_uri or not session.access_token:
            raise ValueError("the session needs ws_uri and access_token: create and start it")
        config: dict[str, Any] = {"session_id": session.session_id, "sample_rate": sample_rate}
        # Era [B] names the token `access_token` inside `config`; era [C] `session_token`, at
        # the top level, on the fixed `/v1/ws` URL (SPEC §8).
        config["session_token" if session.era == "C" else "access_token"] = session.access_token
        for key, value in (("video_width", video_width), ("video_height", video_height)):
            if value is not None:
                config[key] = value
        if fps is not None:
            config["fps"] = fps
        if room is not None:
            config["room"] = room
        if output_video or output_audio:
            config["output"] = {"video": output_video, "audio": output_audio}
        sock = cls(
            http or aiohttp.ClientSession(),
            own_http=http is None,
            ws_uri=_fixed_ws_uri(session) if session.era == "C" else session.ws_uri,
            session_id=session.session_id,
            init_config=config,
            era=session.era,
            auto_resume=auto_resume,
            resume_for_s=resume_for_s,
            keep_alive_s=keep_alive_s,
            connect_timeout_s=connect_timeout_s,
        )
        try:
            await sock._open()
        except BaseException:
            if sock._own_http:
                await sock.http.close()
            raise
        sock._reader = asyncio.create_task(sock._read(), name=f"agenthuman:{sock.session_id}:read")
        if keep_alive_s:
            sock._pinger = asyncio.create_task(
                sock._keep_alive(), name=f"agenthuman:{sock.session_id}:keep-alive"
            )
        return sock

    async def _open(self) -> ConnectionEstablished:
        ws = await self.http.ws_connect(
            self.ws_uri,
            max_msg_size=0,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
        )
        try:
            if self.era == "C":
                init = {"type": "session.init", **self._init}
            else:
                init = {"type": "session.init", "config": self._init}
            await ws.send_str(json.dumps(init))
            msg = await ws.receive(timeout=self.connect_timeout_s)
            first = json.loads(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else None
            if not isinstance(first, dict) or first.get("type") != "connection.established":
                event = parse_event(first) if isinstance(first, dict) else None
                with contextlib.suppress(Exception):
                    await ws.receive(timeout=2.0)  # the close frame that follows
                code, text = (
                    (event.code, event.error)
                    if isinstance(event, ServerError)
                    else ("PROTOCOL_ERROR", f"unexpected first message {msg.type}")
                )
                raise SocketRefused(code, text, ws.close_code)
        except BaseException:
            await ws.close()
            raise
        established = parse_event(first)
        assert isinstance(established, ConnectionEstablished)
        self.established = established
        self._ws = ws
        self._ready.set()
        self._record(established)
        return established

    @property
    def width(self) -> int:
        return self.established.width if self.established else 0

    @property
    def height(self) -> int:
        return self.established.height if self.established else 0

    @property
    def fps(self) -> int:
        return self.established.fps if self.established else 0

    @property
    def closed(self) -> SocketClosed | None:
        """Set once the socket is gone for good."""
        return self._closed

    # --- reading ---------------------------------------------------------------------------

    def _record(self, item: Event | Media) -> None:
        if not isinstance(item, Media):
            self.events.append(item)
            self._changed.set()
        for listener in list(self.listeners):
            listener(item)
        self._queue.put_nowait(item)

    async def _read(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        obj = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        self._record(parse_event(obj))
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    media = decode_media(
                        msg.data,
                        width=self.width,
                        height=self.height,
                        sample_rate=self.sample_rate,
                    )
                    if media is not None:
                        self._record(media)
            self._ready.clear()
            code = ws.close_code
            if self._closing or not self.auto_resume or code in FINAL_CLOSE_CODES:
                break
            if not await self._resume():
                break
        self._finish(SocketClosed(ws.close_code, str(ws.exception() or "")))

    async def _resume(self) -> bool:
        deadline = time.monotonic() + self.resume_for_s
        attempts = 0
        while not self._closing and time.monotonic() < deadline:
            attempts += 1
            try:
                await self._open()
            except SocketRefused:
                return False
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(min(0.2 * attempts, 1.0))
                continue
            self.resumes += 1
            self._record(SocketResumed(attempts))
            return True
        return False

    def _finish(self, closed: SocketClosed) -> None:
        if self._closed is None:
            self._closed = closed
            self._record(closed)

    def backlog(self) -> int:
        """Items received and not yet taken by the iterator: how far a consumer is behind."""
        return self._queue.qsize()

    def __aiter__(self) -> AsyncIterator[Event | Media]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event | Media]:
        while True:
            item = await self._queue.get()
            yield item
            if isinstance(item, SocketClosed):
                return

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] | None = None,
        *,
        timeout_s: float = 30.0,
        after: int = 0,
    ) -> E:
        """The first event of `kind` (matching `predicate`) among `events[after:]`, waiting."""
        deadline = time.monotonic() + timeout_s
        while True:
            for event in list(self.events)[after:]:
                if isinstance(event, kind) and (predicate is None or predicate(event)):
                    return event
            if self._closed is not None:
                raise ConnectionError(f"socket closed before {kind.__name__}: {self._closed}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind.__name__} in {timeout_s} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    # --- commands --------------------------------------------------------------------------

    async def _socket(self) -> aiohttp.ClientWebSocketResponse:
        if self._closed is not None or self._closing:
            raise ConnectionError(f"session socket is closed: {self._closed}")
        if not self._ready.is_set():
            await asyncio.wait_for(self._ready.wait(), self.resume_for_s + 5)
        assert self._ws is not None
        return self._ws

    async def send_json(self, obj: dict[str, Any]) -> None:
        ws = await self._socket()
        await ws.send_str(json.dumps(obj))

    async def speak(self, audio: bytes | np.ndarray, sample_rate: int | None = None) -> int:
        """Queue speech: PCM s16le mono bytes, int16 samples, or floats in [-1, 1].

        → the number of messages sent (each gets one `agent.speak.confirmed`)."""
        pcm = to_pcm16(audio)
        if not pcm:
            return 0
        rate = sample_rate or self.sample_rate
        if rate == self.sample_rate:
            ws = await self._socket()
            sent = 0
            for start in range(0, len(pcm), MAX_BINARY_CHUNK):
                await ws.send_bytes(pcm[start : start + MAX_BINARY_CHUNK])
                sent += 1
            return sent
        encoded = base64.b64encode(pcm).decode()
        await self.send_json({"type": "agent.speak", "audio": encoded, "sample_rate": rate})
        return 1

    async def speak_end(self) -> None:
        await self.send_json({"type": "agent.speak_end"})

    async def interrupt(self) -> None:
        await self.send_json({"type": "agent.interrupt"})

    async def start_listening(self) -> None:
        await self.send_json({"type": "agent.start_listening"})

    async def stop_listening(self) -> None:
        await self.send_json({"type": "agent.stop_listening"})

    async def keep_alive(self) -> None:
        await self.send_json({"type": "session.keep_alive"})

    async def _keep_alive(self) -> None:
        assert self.keep_alive_s
        while self._closed is None:
            await asyncio.sleep(self.keep_alive_s)
            with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError):
                await self.keep_alive()

    # --- closing ---------------------------------------------------------------------------

    async def drop(self) -> None:
        """Close the current socket as a network loss would (for fault tests): with
        `auto_resume` the session resumes on a new socket."""
        if self._ws is not None:
            self._ready.clear()
            await self._ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    async def aclose(self) -> None:
        """Close the socket (the session ends after the server's reconnect grace unless it
        is ended over REST first)."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        for task in (self._pinger, self._reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._finish(SocketClosed(self._ws.close_code if self._ws else None, "closed by client"))
        if self._own_http:
            await self.http.close()

    async def __aenter__(self) -> SessionSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _fixed_ws_uri(session: Session) -> str:
    """The one fixed URL era-[C] clients connect to: `…/v1/ws` beside `…/v1/sessions/{id}/ws`."""
    assert session.ws_uri is not None
    tail = f"/sessions/{session.session_id}/ws"
    return session.ws_uri[: -len(tail)] + "/ws" if session.ws_uri.endswith(tail) else session.ws_uri
