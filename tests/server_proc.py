"""A real `python run.py` (bench/server.py) killed with -9 mid-speech, then started again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.server import Client, Conn, Server


@contextlib.asynccontextmanager
async def two_servers(sets: dict[str, str], data_dir: Path) -> AsyncIterator[tuple[Server, Server]]:
    """(first, second): two `run.py` servers on one data dir, both cleaned up after."""
    first, second = Server(sets, data_dir=data_dir), Server(sets, data_dir=data_dir)
    try:
        yield first, second
    finally:
        first.cleanup()
        second.cleanup()


async def kill_9_while_speaking(
    server: Server, pcm: bytes, *, width: int, height: int, after_s: float
) -> str:
    """Start `server`, a session speaking `pcm`, kill -9 the server `after_s` into it; → its id."""
    await server.start()
    client = Client(server)
    try:
        session, _ = await client.create_start()
        conn = await Conn.open(client.http, session, video_width=width, video_height=height)
        await conn.speak(pcm)
        await conn.until("agent.speak_started")
        await asyncio.sleep(after_s)
        server.kill9()
        await conn.aclose()
    finally:
        await client.aclose()
    return str(session["session_id"])


async def session_after_restart(server: Server, session_id: str) -> dict[str, Any]:
    """Start `server` on the killed one's data dir; → the session as it now reads."""
    await server.start()
    client = Client(server)
    try:
        return dict(await client.session(session_id))
    finally:
        await client.aclose()
