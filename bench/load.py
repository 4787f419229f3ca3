"""Load (opt-in: `python -m bench --only load`): N sessions over real sockets for a bounded time.

The server is a `python run.py` subprocess; this process is the client. Every session has a
viewer attached and talks real speech (random pieces of tests/data/speech.wav, 200 ms chunks at
4× real time), and a random share of utterances is interrupted part-way. Reported: late frames,
event-order violations (SPEC §8: each utterance one speak_started at most, then exactly one
speak_ended), error events, and the server's RSS over time.

Knobs (environment): BENCH_LOAD_SESSIONS (default 4), BENCH_LOAD_S (default 60),
BENCH_LOAD_SEED (default 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

import numpy as np

from agenthuman_local import protocol
from bench import Figure
from bench.live import SIZE
from bench.server import Client, Conn, Server, speak_utterance, speech_pcm, viewer

SECTION = "load"
RSS_EVERY_S = 2.0
INTERRUPT_SHARE = 0.3


async def _session_loop(conn: Conn, speech: np.ndarray, rng: random.Random, until: float) -> None:
    while time.monotonic() < until:
        n = rng.randint(16000, 64000)  # 1–4 s of speech
        start = rng.randint(0, len(speech) - n)
        first = len(conn.events)
        await speak_utterance(conn, speech[start : start + n])
        if rng.random() < INTERRUPT_SHARE:
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            await conn.send(protocol.AGENT_INTERRUPT)
            kind = protocol.AGENT_INTERRUPT_CONFIRMED
        else:
            kind = protocol.AGENT_SPEAK_ENDED
        left_s = until - time.monotonic()
        if left_s <= 0:
            return
        try:
            await conn.until(kind, first, limit_s=left_s)
        except TimeoutError:
            return
        await asyncio.sleep(rng.uniform(0, 0.5))


async def _rss(server: Server, samples: list[tuple[float, float]], t0: float) -> None:
    while True:
        samples.append((time.monotonic() - t0, server.rss_mb()))
        await asyncio.sleep(RSS_EVERY_S)


async def _run() -> list[Figure]:
    n = int(os.environ.get("BENCH_LOAD_SESSIONS", 4))
    seconds = float(os.environ.get("BENCH_LOAD_S", 60))
    rng = random.Random(int(os.environ.get("BENCH_LOAD_SEED", 0)))
    speech = speech_pcm()
    server = Server({"devices.cpu_sessions": n, "devices.cuda_sessions": n})
    samples: list[tuple[float, float]] = []
    conns: list[Conn] = []
    viewers = []
    try:
        await server.start()
        client = Client(server)
        t0 = time.monotonic()
        sampler = asyncio.create_task(_rss(server, samples, t0), name="bench:load:rss")
        try:
            for _ in range(n):
                session, _ = await client.create_start()
                viewers.append(await viewer(client.http, session))
                conns.append(await Conn.open(client.http, session, **SIZE))
            until = time.monotonic() + seconds
            await asyncio.gather(
                *(_session_loop(c, speech, random.Random(rng.random()), until) for c in conns)
            )
            stats = [(await client.end(c.session_id))["stats"] for c in conns]
            await asyncio.sleep(0.5)  # the last events of each socket
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            for c in conns:
                await c.aclose()
            for v in viewers:
                await v.aclose()
            await client.aclose()
        await server.stop()
    finally:
        server.cleanup()
    published = sum(s["frames_published"] for s in stats)
    late = sum(s["frames_late"] for s in stats)
    utterances = sum(c.kinds().count(protocol.AGENT_SPEAK_ENDED) for c in conns)
    interrupts = sum(c.kinds().count(protocol.AGENT_INTERRUPT_CONFIRMED) for c in conns)
    errors = [e.get("code") for c in conns for e in c.errors()]
    rss = [mb for _, mb in samples]
    over_time = ", ".join(f"{t:.0f}s:{mb:.0f}" for t, mb in samples[:: max(1, len(samples) // 8)])
    cond = (
        f"{n} sessions at 960x720, {seconds:.0f} s, viewer each"
        f" ({min(v.binary for v in viewers)} msgs min); {utterances} utterances,"
        f" {interrupts} interrupted"
    )
    return [
        # Reported only: N may be past the calibrated capacity on purpose.
        Figure(SECTION, "late frames", 100 * late / max(published, 1), "%", None, cond),
        Figure(
            SECTION,
            "event-order violations",
            sum(c.check_order() for c in conns),
            "count",
            "<= 0",
            cond,
        ),
        Figure(
            SECTION, "error events", len(errors), "count", "<= 0", f"codes {sorted(set(errors))}"
        ),
        Figure(
            SECTION,
            "server RSS max",
            max(rss),
            "MB",
            None,
            f"start {rss[0]:.0f} MB, end {rss[-1]:.0f} MB; over time {over_time}",
        ),
    ]


def run() -> list[Figure]:
    return asyncio.run(_run())
