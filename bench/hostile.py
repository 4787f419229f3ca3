"""Hostile neighbours (in `make bench`; alone: `python -m bench --only hostile`; issue 12): a
witness session speaks real speech at real time while, window by window, another client attacks
the server.

Windows, each BENCH_HOSTILE_S seconds (default 8): a baseline; a multipart bomb (bodies of
50 000 tiny parts, one after another); a JSON bomb (11 MB create bodies of 100 000 values, one
after another); a message storm (a second session's socket sending keep-alives and tiny speaks
as fast as the server reads them). Per window: the witness's late frames (the delta of its
live `stats`; goal ≤ 1 %) and the slowest `/healthz` answer of a probe asking every 50 ms (the
event loop's worst stall; goal ≤ 100 ms). The attacker runs on the same machine, so on a small
or busy one its own CPU use shows up in the late frames; the probe shows the server's stalls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np

from bench import Figure
from bench.live import SIZE
from bench.server import Client, Conn, Server, chunks, speech_pcm

SECTION = "hostile"
GOAL = "<= 1"
PROBE_GOAL = "<= 100"
PROBE_EVERY_S = 0.05

_PART = b'--xx\r\nContent-Disposition: form-data; name="j"\r\n\r\na\r\n'
_MULTIPART = _PART * 50_000 + b"--xx--\r\n"
_JSON = json.dumps({"metadata": {"k": ["x" * 100] * 100_000}}).encode()  # ~11 MB


async def _speak_forever(conn: Conn, speech: np.ndarray) -> None:
    """The witness: 200 ms chunks at real time, the speech file over and over."""
    while True:
        for chunk in chunks(speech, 200):
            await conn.speak(chunk)
            await asyncio.sleep(0.2)


async def _repeat(n: int, attack: Callable[[], Awaitable[None]]) -> None:
    async def one() -> None:
        while True:
            with contextlib.suppress(Exception):
                await attack()

    await asyncio.gather(*(one() for _ in range(n)))


# The probe runs in its own process, so the attacker's loop (this process) cannot delay it.
_PROBE = """
import sys, time, urllib.request
url, until, every = sys.argv[1], time.monotonic() + float(sys.argv[2]), float(sys.argv[3])
worst = 0.0
while time.monotonic() < until:
    t0 = time.perf_counter()
    urllib.request.urlopen(url, timeout=30).read()
    worst = max(worst, time.perf_counter() - t0)
    time.sleep(every)
print(worst * 1000)
"""


async def _probe(base_url: str, seconds: float) -> float:
    """The slowest /healthz answer (ms) over `seconds`, asked every PROBE_EVERY_S."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        f"{base_url}/healthz",
        str(seconds),
        str(PROBE_EVERY_S),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return float(out.decode().strip() or "nan")


async def _window(
    client: Client, witness: str, seconds: float, attack: Callable[[], Awaitable[None]] | None
) -> tuple[int, int, float]:
    """(frames published, frames late) by the witness while `attack` runs, and the slowest
    /healthz answer (ms)."""
    before = (await client.session(witness))["stats"]
    task = asyncio.create_task(attack()) if attack is not None else None
    worst_ms = await _probe(client.server.base_url, seconds)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    after = (await client.session(witness))["stats"]
    return (
        after["frames_published"] - before["frames_published"],
        after["frames_late"] - before["frames_late"],
        worst_ms,
    )


async def _run() -> list[Figure]:
    seconds = float(os.environ.get("BENCH_HOSTILE_S", 8))
    speech = speech_pcm()
    server = Server({"devices.cpu_sessions": 4, "devices.cuda_sessions": 4})
    figures: list[Figure] = []
    try:
        await server.start()
        client = Client(server)
        conns: list[Conn] = []
        speaker: asyncio.Task[None] | None = None
        try:
            session, _ = await client.create_start()
            witness = await Conn.open(client.http, session, **SIZE)
            conns.append(witness)
            speaker = asyncio.create_task(_speak_forever(witness, speech), name="bench:witness")
            other, _ = await client.create_start()
            stormer = await Conn.open(client.http, other, video_width=128, video_height=128)
            conns.append(stormer)
            await asyncio.sleep(2)  # past the first frames

            async def multipart() -> None:
                async with client.http.post(
                    "/v1/avatars/upload-face",
                    data=_MULTIPART,
                    headers={"Content-Type": "multipart/form-data; boundary=xx"},
                ) as r:
                    await r.read()

            async def json_bomb() -> None:
                async with client.http.post(
                    "/v1/sessions", data=_JSON, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()

            tiny = base64.b64encode(np.zeros(16, np.int16).tobytes()).decode()

            async def storm() -> None:
                while True:
                    await stormer.ws.send_json({"type": "session.keep_alive"})
                    await stormer.ws.send_json({"type": "agent.speak", "audio": tiny})

            windows: list[tuple[str, Callable[[], Awaitable[None]] | None]] = [
                ("baseline", None),
                ("multipart bomb", lambda: _repeat(1, multipart)),
                ("JSON bomb", lambda: _repeat(1, json_bomb)),
                ("message storm", storm),
            ]
            for name, attack in windows:
                t0 = time.monotonic()
                published, late, worst_ms = await _window(
                    client, session["session_id"], seconds, attack
                )
                cond = (
                    f"witness 960x720 speaking at real time; {published} frames in "
                    f"{time.monotonic() - t0:.1f} s"
                )
                figures.append(
                    Figure(
                        SECTION,
                        f"witness late frames, {name}",
                        100 * late / max(published, 1),
                        "%",
                        GOAL,
                        cond,
                    )
                )
                figures.append(
                    Figure(SECTION, f"slowest /healthz, {name}", worst_ms, "ms", PROBE_GOAL, cond)
                )
        finally:
            if speaker is not None:
                speaker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await speaker
            # The storm leaves ~1-2 MB of messages in the socket buffers, which the server
            # reads at `ws.max_messages_per_s`: a graceful close would wait minutes behind
            # them. Drop that connection at once (what a client that goes away does).
            if len(conns) > 1:
                transport = conns[1].ws._conn.transport if conns[1].ws._conn else None
                if transport is not None:
                    transport.abort()
            for conn in conns:
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with asyncio.timeout(5):
                        await conn.aclose()
            await client.aclose()
        await server.stop()
    finally:
        server.cleanup()
    return figures


def run() -> list[Figure]:
    return asyncio.run(_run())
