"""Soak (opt-in: `python -m bench --only soak`): one session, speak/idle cycles, for a long time.

One 960×720 session with a viewer attached speaks all of tests/data/speech.wav (200 ms chunks
at 4× real time), idles, and repeats. The server's RSS and open file descriptors are sampled
throughout; growth compares the median of the last fifth of the samples with the median of the
second fifth (the first fifth is warm-up: allocator pools, the renderer's caches). A/V drift is
read from the timeline: every frame's `pts_ms` against its audio (`audio_start` at 16 kHz), and
the frames published against the wall clock.

Knobs (environment): BENCH_SOAK_MINUTES (default 30), BENCH_SOAK_IDLE_S (default 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time

from agenthuman_local import protocol
from bench import Figure
from bench.live import FPS, SIZE
from bench.server import Client, Conn, Server, speak_utterance, speech_pcm, viewer

SECTION = "soak"
SAMPLE_EVERY_S = 10.0
FRAME_MS = 1000 / FPS
SAMPLES_PER_MS = 16


def _growth(values: list[float]) -> float:
    fifth = max(1, len(values) // 5)
    early = values[fifth : 2 * fifth] or values[:1]
    return statistics.median(values[-fifth:]) - statistics.median(early)


async def _sample(server: Server, rss: list[float], fds: list[int]) -> None:
    while True:
        rss.append(server.rss_mb())
        fds.append(server.fd_count())
        await asyncio.sleep(SAMPLE_EVERY_S)


async def _run() -> list[Figure]:
    minutes = float(os.environ.get("BENCH_SOAK_MINUTES", 30))
    idle_s = float(os.environ.get("BENCH_SOAK_IDLE_S", 5))
    speech = speech_pcm()
    server = Server()
    rss: list[float] = []
    fds: list[int] = []
    cycles = 0
    try:
        await server.start()
        client = Client(server)
        session, _ = await client.create_start()
        view = await viewer(client.http, session)
        conn = await Conn.open(client.http, session, **SIZE)
        sampler = asyncio.create_task(_sample(server, rss, fds), name="bench:soak:sample")
        try:
            t0 = time.monotonic()
            frames0 = len([x for x in await client.timeline(conn.session_id) if x["t"] == "frame"])
            until = t0 + minutes * 60
            while time.monotonic() < until:
                start = len(conn.events)
                await speak_utterance(conn, speech)
                with contextlib.suppress(TimeoutError):
                    await conn.until(
                        protocol.AGENT_SPEAK_ENDED, start, limit_s=max(1, until - time.monotonic())
                    )
                cycles += 1
                # Events are only kept for the order check of the current cycle.
                violations = conn.check_order()
                conn.events.clear()
                if violations:
                    raise AssertionError(f"event order broken in cycle {cycles}")
                await asyncio.sleep(min(idle_s, max(0, until - time.monotonic())))
            timeline = await client.timeline(conn.session_id)
            wall_s = time.monotonic() - t0
            stats = (await client.end(conn.session_id))["stats"]
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await conn.aclose()
            await view.aclose()
            await client.aclose()
        await server.stop()
    finally:
        server.cleanup()
    frames = [x for x in timeline if x["t"] == "frame"]
    av_drift_frames = max(
        abs(f["pts_ms"] - f["audio_start"] / SAMPLES_PER_MS) / FRAME_MS for f in frames
    )
    wall_drift_frames = (len(frames) - frames0) - wall_s * FPS
    cond = (
        f"{minutes:g} min, {cycles} speak/idle cycles, {len(rss)} samples;"
        f" late {stats['frames_late']}/{stats['frames_published']}; viewer {view.binary} msgs"
    )
    return [
        Figure(
            SECTION,
            "RSS growth",
            _growth(rss),
            "MB",
            "<= 20",
            f"{cond}; RSS {rss[0]:.0f}→{rss[-1]:.0f} MB",
        ),
        Figure(
            SECTION,
            "open fd growth",
            _growth([float(n) for n in fds]),
            "fds",
            "<= 2",
            f"fds {fds[0]}→{fds[-1]}",
        ),
        Figure(
            SECTION,
            "A/V drift (pts vs audio, worst frame)",
            av_drift_frames,
            "frames",
            "<= 1",
            cond,
        ),
        Figure(
            SECTION,
            "frames published vs wall clock",
            wall_drift_frames,
            "frames",
            None,
            f"{len(frames) - frames0} frames in {wall_s:.1f} s (timeline GET, ±1 poll)",
        ),
    ]


def run() -> list[Figure]:
    return asyncio.run(_run())
