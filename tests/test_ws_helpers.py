"""Helpers for the session-socket tests (no tests here): a live app on a virtual clock with a fake
renderer, and a client connection that collects events and media."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from agenthuman_local import keys
from tests.fakes import FakeRenderer, VirtualClock

FPS = 25


def fake_renderer_ctx(clock: VirtualClock | None) -> Callable[[web.Application], Any]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async def make(spec: Any) -> FakeRenderer:
            return FakeRenderer(spec.width, spec.height)

        app[keys.renderer_factory_key] = make
        if clock is not None:
            app[keys.clock_key] = clock
        yield

    return ctx


class Live:
    """An app whose sessions run on `clock` (None: the wall clock)."""

    def __init__(self, api: Any, clock: VirtualClock | None) -> None:
        self.api = api
        self.clock = clock

    @classmethod
    async def make(
        cls, make_client: Any, *, virtual: bool = True, contexts: Any = (), **overrides: Any
    ) -> Live:
        clock = VirtualClock() if virtual else None
        api = await make_client(contexts=[fake_renderer_ctx(clock), *contexts], **overrides)
        return cls(api, clock)

    async def started_session(self) -> tuple[str, str]:
        session = await self.api.create_session()
        await self.api.start_session(session["session_id"])
        return session["session_id"], session["access_token"]

    async def connect(
        self, session_id: str, token: str, *, era: str = "B", path: str | None = None, **fields: Any
    ) -> Conn:
        conn = await self.raw(path or f"/v1/sessions/{session_id}/ws")
        if era == "B":
            init = {
                "type": "session.init",
                "config": {"session_id": session_id, "access_token": token, **fields},
            }
        else:
            init = {
                "type": "session.init",
                "session_id": session_id,
                "session_token": token,
                **fields,
            }
        await conn.ws.send_json(init)
        conn.established = await conn.next_event()
        return conn

    async def raw(self, path: str) -> Conn:
        return Conn(await self.api.client.ws_connect(path), self)

    async def tick(self, n: int = 1, sessions: int = 1) -> None:
        """Advance the virtual clock `n` frames, every frame rendered in time."""
        assert self.clock is not None
        worker = self.api.app[keys.render_pool_key].get("cpu")
        for _ in range(n):
            await worker.drain()
            self.clock.advance(1 / FPS)
            await self.clock.settled(2 * sessions)

    async def settle(self, sessions: int = 1) -> None:
        assert self.clock is not None
        await self.clock.settled(2 * sessions)


class Conn:
    def __init__(self, ws: Any, live: Live) -> None:
        self.ws = ws
        self.live = live
        self.events: list[dict[str, Any]] = []
        self.media: list[bytes] = []
        self.established: dict[str, Any] | None = None
        self.close_code: int | None = None

    async def _read(self) -> bool:
        msg = await self.ws.receive(timeout=10)
        if msg.type is WSMsgType.TEXT:
            self.events.append(json.loads(msg.data))
        elif msg.type is WSMsgType.BINARY:
            self.media.append(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            self.close_code = msg.data  # the code the server sent
            return False
        else:
            self.close_code = self.ws.close_code
            return False
        return True

    async def next_event(self) -> dict[str, Any]:
        n = len(self.events)
        while len(self.events) == n:
            if not await self._read():
                raise AssertionError(f"socket closed ({self.close_code}) waiting for an event")
        return self.events[-1]

    async def until(self, kind: str) -> dict[str, Any]:
        while True:
            event = await self.next_event()
            if event["type"] == kind:
                return event

    async def barrier(self) -> None:
        """Every message sent before has been handled and its replies received."""
        await self.ws.send_json({"type": "session.keep_alive"})
        await self.until("session.keep_alive.ack")

    async def closed(self) -> int | None:
        while await self._read():
            pass
        return self.close_code

    async def media_count(self, n: int) -> None:
        """Until `n` binary messages have arrived (the media sink lags the events a little)."""
        while len(self.media) < n:
            assert await self._read(), "socket closed while waiting for media"

    async def speak(self, pcm: bytes, sample_rate: int | None = None) -> None:
        msg: dict[str, Any] = {"type": "agent.speak", "audio": base64.b64encode(pcm).decode()}
        if sample_rate is not None:
            msg["sample_rate"] = sample_rate
        await self.ws.send_json(msg)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def counting_pcm(n: int, start: int = 1) -> np.ndarray:
    """Nonzero int16 samples that count up, so order, gaps and repeats are visible."""
    return (np.arange(start, start + n) % 30000 + 1).astype(np.int16)


async def wait_for(predicate: Callable[[], Any], limit_s: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)
