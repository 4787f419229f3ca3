"""SPEC §12 measured on a live server: a real `python run.py` subprocess, this process the client.

Conditions (SPEC §12): recording on (config/default.yaml as shipped), one viewer attached to every
session that renders, Daily off, real speech (tests/data/speech.wav) sent in 200 ms chunks at 4×
real time. Which of these held is written into each figure's `conditions` (a viewer that got no
frames, or a session that left no recording, says so), so a result never claims more than it saw.

Knobs (environment): BENCH_STARTS (run.py starts, default 5), BENCH_LEVEL_S (seconds per
calibration run, default 15), BENCH_LEVEL_REPEATS (runs per level, default 3; the median
counts), BENCH_MAX_SESSIONS (calibration stops there, default 8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import time
from typing import Any

import numpy as np

from agenthuman_local import protocol
from bench import Figure
from bench.server import (
    Client,
    Conn,
    Server,
    ViewerCount,
    pctl,
    recording_files,
    speak_utterance,
    speech_pcm,
    viewer,
)

SECTION = "live"
WIDTH, HEIGHT, FPS = 960, 720, 25
SIZE = {"video_width": WIDTH, "video_height": HEIGHT}
FRAME_MS = 1000 / FPS
SPEECH_LEVEL = 100  # |int16| above this in a frame's audio = speech, not silence
LATE_GOAL_PCT = 1.0
RSS_SESSIONS = 3


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _startup(starts: int) -> list[Figure]:
    healthz, engine = [], []
    for _ in range(starts):
        server = Server()
        try:
            h, e = await server.start()
            healthz.append(h)
            engine.append(e)
            await server.stop()
        finally:
            server.cleanup()
    cond = f"median of {starts} starts; config/default.yaml, fresh data dir"
    return [
        Figure(SECTION, "run.py → /healthz ok", statistics.median(healthz), "s", "<= 1", cond),
        Figure(SECTION, "run.py → engine ready", statistics.median(engine), "s", "<= 5", cond),
    ]


async def _create_start(client: Client, n: int = 20) -> Figure:
    elapsed = []
    for _ in range(n):
        session, ms = await client.create_start()
        elapsed.append(ms)
        await client.end(session["session_id"])
    return Figure(
        SECTION, "create + start → ws_uri p50", pctl(elapsed, 50), "ms", "<= 20", f"{n} sessions"
    )


class Conditions:
    """What actually held during a measurement, for the figure's `conditions`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.viewers: list[ViewerCount] = []
        self.session_ids: list[str] = []

    async def attach(self, client: Client, session: dict[str, Any]) -> None:
        self.session_ids.append(session["session_id"])
        self.viewers.append(await viewer(client.http, session))

    def text(self) -> str:
        frames = [v.binary for v in self.viewers]
        recorded = sum(
            any(name.endswith(".mp4") for name in recording_files(self.server.data_dir, sid))
            for sid in self.session_ids
        )
        viewer = "attached" if frames and min(frames) > 0 else "attached but got no frames"
        n = len(self.session_ids)
        recording = "on" if recorded == n else f"on in config, an mp4 for {recorded}/{n}"
        return (
            f"viewer {viewer} (min {min(frames, default=0)} msgs); recording {recording};"
            " Daily off; speech in 200 ms chunks at 4x real time"
        )

    async def aclose(self) -> None:
        for v in self.viewers:
            await v.aclose()


async def _first_frame(client: Client, conditions: Conditions, speech: np.ndarray) -> Figure:
    """Client-side: first chunk of an utterance sent (from idle) → its speak_started received."""
    session, _ = await client.create_start()
    await conditions.attach(client, session)
    conn = await Conn.open(client.http, session, **SIZE)
    latencies = []
    try:
        await asyncio.sleep(1.0)  # past the first frames and the renderer's warm-up
        for rep in range(12):
            start = len(conn.events)
            piece = speech[rep * 8000 : rep * 8000 + 16000]
            t_sent = await speak_utterance(conn, piece, speed=8)
            t_started, _ = await conn.until(protocol.AGENT_SPEAK_STARTED, start)
            latencies.append((t_started - t_sent) * 1000)
            await conn.until(protocol.AGENT_SPEAK_ENDED, start)
            await asyncio.sleep(0.3)
        stats = (await client.end(session["session_id"]))["stats"]
    finally:
        await conn.aclose()
    return Figure(
        SECTION,
        "first audio chunk → first speaking frame p95",
        pctl(latencies, 95),
        "ms",
        "<= 80",
        f"{len(latencies)} utterances from idle, client-side; p50 {pctl(latencies, 50):.1f} ms;"
        f" server first_frame_latency_ms {stats.get('first_frame_latency_ms')}",
    )


async def _interrupt(client: Client, speech: np.ndarray) -> Figure:
    """Frames carrying speech published at or after the interrupt's place on the timeline."""
    session, _ = await client.create_start()
    conn = await Conn.open(client.http, session, **SIZE, output={"audio": True})
    try:
        await asyncio.sleep(1.0)
        for _ in range(10):
            start = len(conn.events)
            await speak_utterance(conn, speech[16000:48000], speed=8)
            await conn.until(protocol.AGENT_SPEAK_STARTED, start)
            await asyncio.sleep(0.4)
            await conn.send(protocol.AGENT_INTERRUPT)
            await conn.until(protocol.AGENT_INTERRUPT_CONFIRMED, start)
            await asyncio.sleep(0.4)
        timeline = await client.timeline(session["session_id"])
        await client.end(session["session_id"])
    finally:
        await conn.aclose()
    speech_pts = set()
    for message in conn.media:
        kind, pts_ms, _, payload = protocol.unpack_media(message)
        pcm = np.frombuffer(payload, dtype="<i2")
        if kind == protocol.KIND_AUDIO_PCM and pcm.size and np.abs(pcm).max() > SPEECH_LEVEL:
            speech_pts.add(pts_ms)
    cuts = [
        line["pts_ms"]
        for line in timeline
        if line["t"] == "event" and line["type"] == protocol.AGENT_INTERRUPT_CONFIRMED
    ]
    after = [sum(cut <= pts < cut + 300 for pts in speech_pts) for cut in cuts]
    return Figure(
        SECTION,
        "interrupt → last speaking frame (worst)",
        float(max(after)) if after else 99.0,  # no interrupt seen: a miss, not a pass
        "frames",
        "<= 1",
        f"{len(cuts)} interrupts mid-utterance; speech frames after each: {after};"
        f" {len(speech_pts)} speech frames received in all",
    )


async def _talk(conn: Conn, speech: np.ndarray, until: float) -> None:
    """Whole utterances of real speech, each sent ahead of time, until `until`."""
    while time.monotonic() < until:
        start = len(conn.events)
        await speak_utterance(conn, speech)
        try:
            await conn.until(protocol.AGENT_SPEAK_ENDED, start, limit_s=until - time.monotonic())
        except TimeoutError:
            return


async def _frames(client: Client, conn: Conn) -> int:
    return sum(line["t"] == "frame" for line in await client.timeline(conn.session_id))


async def _level(
    client: Client,
    server: Server,
    n: int,
    seconds: float,
    speech: np.ndarray,
    size: dict[str, int] = SIZE,
):
    """n sessions (960×720 unless `size`), each with a viewer, talking for `seconds`."""
    conditions = Conditions(server)
    conns: list[Conn] = []
    try:
        for _ in range(n):
            session, _ = await client.create_start()
            await conditions.attach(client, session)
            conns.append(await Conn.open(client.http, session, **size))
        until = time.monotonic() + seconds
        talkers = [
            asyncio.create_task(_talk(c, speech, until), name=f"bench:{c.session_id}:talk")
            for c in conns
        ]
        await asyncio.sleep(seconds / 3)
        frames0 = [await _frames(client, c) for c in conns]
        t0 = time.monotonic()
        await asyncio.sleep(seconds / 3)
        rss_mb = server.rss_mb()
        frames1 = [await _frames(client, c) for c in conns]
        window_s = time.monotonic() - t0
        await asyncio.gather(*talkers)
        stats = [(await client.end(c.session_id))["stats"] for c in conns]
    finally:
        for c in conns:
            await c.aclose()
        await conditions.aclose()
    published = sum(s["frames_published"] for s in stats)
    late = sum(s["frames_late"] for s in stats)
    fps = [(b - a) / window_s for a, b in zip(frames0, frames1, strict=True)]
    return {
        "sessions": n,
        "late_pct": 100 * late / max(published, 1),
        "fps_min": min(fps),
        "rss_mb": rss_mb,
        "errors": sum(len(c.errors()) for c in conns),
        "order_violations": sum(c.check_order() for c in conns),
        "conditions": conditions.text(),
    }


async def _calibrate(server: Server, client: Client, speech: np.ndarray) -> list[Figure]:
    seconds = float(os.environ.get("BENCH_LEVEL_S", 15))
    levels = []
    repeats = _env_int("BENCH_LEVEL_REPEATS", 3)
    for n in range(1, _env_int("BENCH_MAX_SESSIONS", 8) + 1):
        runs = [await _level(client, server, n, seconds, speech) for _ in range(repeats)]
        # The median run by late share: one noisy run neither makes nor breaks a level.
        level = sorted(runs, key=lambda r: r["late_pct"])[len(runs) // 2]
        level["errors"] = sum(r["errors"] for r in runs)
        level["order_violations"] = sum(r["order_violations"] for r in runs)
        levels.append(level)
        late = ", ".join(f"{r['late_pct']:.2f}" for r in runs)
        print(f"  {n} sessions: late % {late}; fps min {level['fps_min']:.1f}", flush=True)
        if level["late_pct"] > LATE_GOAL_PCT:
            break
    held = [lv["sessions"] for lv in levels if lv["late_pct"] <= LATE_GOAL_PCT]
    capacity = max(held, default=0)
    one = levels[0]
    table = ", ".join(f"{lv['sessions']}:{lv['late_pct']:.2f}%" for lv in levels)
    base = f"median of {repeats} runs of {seconds:.0f} s; {one['conditions']}"
    return [
        Figure(SECTION, "fps per session at 960x720", one["fps_min"], "fps", ">= 24.75", base),
        Figure(SECTION, "late frames per session at 960x720", one["late_pct"], "%", "<= 1", base),
        Figure(
            SECTION,
            "concurrent 960x720 sessions at <= 1 % late (calibration)",
            capacity,
            "sessions",
            ">= 2",
            f"median late share by level {table}; use as devices.cpu_sessions",
        ),
        Figure(
            SECTION,
            "event-order violations (all levels)",
            sum(lv["order_violations"] for lv in levels),
            "count",
            "<= 0",
            f"errors {sum(lv['errors'] for lv in levels)}",
        ),
    ]


HD_SIZE = {"video_width": 1280, "video_height": 720}
HD_LEVELS = (1, 2, 4)


async def _hd_levels(server: Server, client: Client, speech: np.ndarray) -> list[Figure]:
    """Sustained fps and late share at 1280×720 for 1, 2 and 4 sessions (issue 5's figures).
    Reported without a goal: SPEC §12 sets its capacity goal at 960×720, and 4 is past it here."""
    seconds = float(os.environ.get("BENCH_LEVEL_S", 15))
    figures = []
    for n in HD_LEVELS:
        level = await _level(client, server, n, seconds, speech, HD_SIZE)
        print(f"  1280x720, {n} sessions: late % {level['late_pct']:.2f}", flush=True)
        note = f"one run of {seconds:.0f} s; {level['conditions']}"
        figures.append(
            Figure(
                SECTION,
                f"1280x720 x{n}: fps per session (min)",
                level["fps_min"],
                "fps",
                None,
                note,
            )
        )
        figures.append(
            Figure(SECTION, f"1280x720 x{n}: late frames", level["late_pct"], "%", None, note)
        )
    return figures


async def _rss_per_session(server: Server, client: Client, speech: np.ndarray) -> Figure:
    """RSS with 1 and with RSS_SESSIONS talking sessions, whether or not they keep up."""
    idle_mb = server.rss_mb()
    one = await _level(client, server, 1, 9, speech)
    many = await _level(client, server, RSS_SESSIONS, 9, speech)
    return Figure(
        SECTION,
        "RSS per extra session",
        (many["rss_mb"] - one["rss_mb"]) / (RSS_SESSIONS - 1),
        "MB",
        "<= 150",
        f"idle {idle_mb:.0f} MB, 1 session {one['rss_mb']:.0f} MB,"
        f" {RSS_SESSIONS} sessions {many['rss_mb']:.0f} MB (talking, viewer each)",
    )


async def _run() -> list[Figure]:
    speech = speech_pcm()
    figures = await _startup(_env_int("BENCH_STARTS", 5))
    server = Server({"devices.cpu_sessions": 64, "devices.cuda_sessions": 64})
    try:
        await server.start()
        client = Client(server)
        try:
            figures.append(await _create_start(client))
            conditions = Conditions(server)
            try:
                figure = await _first_frame(client, conditions, speech)
            finally:
                await conditions.aclose()
            conditions_text = f"{figure.conditions}; {conditions.text()}"
            figures.append(dataclasses.replace(figure, conditions=conditions_text))
            figures.append(await _interrupt(client, speech))
            figures.append(await _rss_per_session(server, client, speech))
            figures.extend(await _calibrate(server, client, speech))
            figures.extend(await _hd_levels(server, client, speech))
        finally:
            await client.aclose()
        await server.stop()
    finally:
        server.cleanup()
    return figures


def run() -> list[Figure]:
    return asyncio.run(_run())
