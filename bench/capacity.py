"""Capacity at 1280×720@25 (issue 13, SPEC §12): what one session costs by stage, and how many
fit on this machine, with overload that degrades instead of collapsing.

Two parts (`BENCH_CAPACITY_PARTS`, default `stages,live`):

- **stages**, in this process, CPU time (`time.thread_time` / `process_time`, so other load on
  the machine counts as little as possible): over `BENCH_SPEECH_S` (default 130) seconds of speech
  that does not repeat (`varied_speech`: random 0.6–3 s pieces of tests/data/speech.wav, each
  with its own gain and pitch, short pauses; a looped clip would warm any cache), each avatar's
  render ms per frame at 1280×720 with the tile cache's hit rate, then the recorder's and the
  viewer pictures' ms per frame (key frames and patches, beside whole JPEGs) on the rendered frames.
- **live**, a real `run.py` (recording on as shipped, capacity raised): N = 4, 5, 6 sessions
  (`BENCH_CAPACITY_LEVELS`) talking the same non-repeating speech, each with one viewer that
  negotiates permessage-deflate as a browser does, `BENCH_LEVEL_S` (20) seconds a run,
  `BENCH_LEVEL_REPEATS` (3) runs a level, the median run counts: late share per level, the
  worst session against the median, what the outputs shed or repeated (from the timelines), and
  first audio → first speaking frame at the client, at 1 and at 4 sessions. The calibrated
  `devices.cpu_sessions` (in cost units: 1 = one such session) is the largest N at ≤ 1 % late.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agenthuman_local import protocol
from bench import Figure
from bench.server import Client, Conn, Server, pctl, speak_utterance, speech_pcm, viewer

SECTION = "capacity"
WIDTH, HEIGHT, FPS, SR = 1280, 720, 25, 16000
SIZE = {"video_width": WIDTH, "video_height": HEIGHT, "fps": FPS}
LATE_GOALS = {4: 1.0, 5: 25.0, 6: 45.0}
WORST_OVER_MEDIAN = 1.5
FIRST_FRAME_GOAL_MS = 50.0
STAGE_FRAMES = 125  # frames kept for the recorder and JPEG stages (5 s; ~350 MB at 720p)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def varied_speech(seconds: float, seed: int = 7) -> np.ndarray:
    """int16 at 16 kHz: `seconds` of speech that does not repeat (see the module doc)."""
    clip = speech_pcm().astype(np.float32) / 32768.0
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < seconds * SR:
        n = int(rng.uniform(0.6, 3.0) * SR)
        start = int(rng.integers(0, clip.size - n))
        factor = rng.uniform(0.8, 1.25)
        piece = clip[start : start + n]
        piece = np.interp(np.arange(0, piece.size - 1, factor), np.arange(piece.size), piece)
        piece = piece * 10 ** (rng.uniform(-12, 4) / 20)
        pause = np.zeros(int(rng.uniform(0.0, 0.6) * SR))
        parts += [piece, pause]
        total += piece.size + pause.size
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype(np.int16)


# --- stages -----------------------------------------------------------------------------------


def _params(samples: np.ndarray) -> np.ndarray:
    from agenthuman_local.engine.base import frame_sample_range
    from agenthuman_local.engine.driver import Driver

    audio = samples.astype(np.float32) / 32768.0
    frames = samples.size * FPS // SR
    driver = Driver(FPS, seed=5, deterministic=True)
    windows = [audio[slice(*frame_sample_range(n, FPS))] for n in range(frames)]
    return np.stack([driver.step(windows[n], windows[n + 1 : n + 2]) for n in range(frames)])


def _photo_renderer(size: Any) -> Any:
    import cv2
    import skimage.data

    from agenthuman_local.engine.faces import prepare_face, save_avatar
    from agenthuman_local.engine.photo import open_photo_renderer

    folder = Path(tempfile.mkdtemp(prefix="bench-capacity-")) / "photo"
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    save_avatar(prepare_face(jpg.tobytes()), folder)
    return open_photo_renderer(folder, size, "cpu")


def _render_stage(name: str, renderer: Any, params: np.ndarray) -> tuple[list[Figure], list]:
    import torch

    renderer.render(torch.from_numpy(params[:1]))  # assets and warm-up
    caches = getattr(renderer, "_caches", [])
    for cache in caches:
        cache.hits = cache.misses = 0
    counts = {"looked up": 0, "drawn": 0}
    if hasattr(renderer, "_tiles"):  # the procedural renderer: count tiles drawn vs needed
        tiles, draw = renderer._tiles, renderer._draw_missing

        def looked_up(index: int, rows: list) -> Any:
            counts["looked up"] += len(rows)
            return tiles(index, rows)

        def drawn(index: int, missing: list) -> Any:
            counts["drawn"] += len(missing)
            return draw(index, missing)

        renderer._tiles, renderer._draw_missing = looked_up, drawn
    kept, per = [], []
    t0 = time.thread_time()
    for n in range(len(params)):
        a = time.thread_time()
        out = renderer.render(torch.from_numpy(params[n : n + 1]))
        per.append(time.thread_time() - a)
        if n < STAGE_FRAMES:
            kept.append(np.asarray(out[0].numpy()))
    ms = (time.thread_time() - t0) * 1000 / len(params)
    cond = (
        f"{len(params)} frames = {len(params) / FPS:.0f} s of non-repeating speech, one frame a"
        f" call, 1 torch thread, thread CPU time; p95 {np.percentile(per, 95) * 1000:.1f} ms"
    )
    where = f"{name} {WIDTH}x{HEIGHT}"
    figures = [Figure(SECTION, f"stage render {where}", ms, "ms/frame", None, cond)]
    if counts["looked up"]:
        per_layer = ", ".join(
            f"{c.name.split()[-1]} {100 * c.hits / max(1, c.hits + c.misses):.0f} %" for c in caches
        )
        figures.append(
            Figure(
                SECTION,
                f"tile cache hit rate {where}",
                100 * (1 - counts["drawn"] / counts["looked up"]),
                "%",
                None,
                f"tiles not redrawn, of {counts['looked up']} (frame, layer) tiles; the drawing"
                f" cache alone, per shape not already laid: {per_layer}",
            )
        )
    return figures, kept


def _recording_stage(frames: list) -> Figure:
    from agenthuman_local.audio import frame_sample_range
    from agenthuman_local.transports.recording import Recorder

    path = Path(tempfile.mkdtemp(prefix="bench-capacity-")) / "stage.mp4"
    rec = Recorder(path, WIDTH, HEIGHT, FPS, SR, queue_frames=len(frames) + 1)
    pcm = [bytes(2 * (e - s)) for s, e in (frame_sample_range(n, FPS, SR) for n in range(300))]
    t0 = time.process_time()
    for n, rgb in enumerate(frames):
        rec.submit(n, rgb, pcm[n % len(pcm)])
    rec.close()
    ms = (time.process_time() - t0) * 1000 / len(frames)
    assert rec.frames_written == len(frames) and rec.error is None
    return Figure(
        SECTION,
        f"stage recording {WIDTH}x{HEIGHT}",
        ms,
        "ms/frame",
        None,
        f"{len(frames)} rendered frames, I420 + x264 ultrafast + AAC + mux, process CPU time",
    )


def _jpeg_stage(frames: list) -> Figure:
    """The viewer's pictures as sent (a key frame, then patches of what changed, a key frame
    every second), and whole JPEGs of the same frames for comparison."""
    from agenthuman_local.transports.jpeg import encode_jpeg
    from agenthuman_local.transports.patches import PatchEncoder

    encode_jpeg(frames[0], 80)
    t0 = time.thread_time()
    for rgb in frames:
        encode_jpeg(rgb, 80)
    whole = (time.thread_time() - t0) * 1000 / len(frames)
    pictures = PatchEncoder(80)
    sent = 0
    t0 = time.thread_time()
    for n, rgb in enumerate(frames):
        sent += len(pictures.encode(n, rgb)[1])
    ms = (time.thread_time() - t0) * 1000 / len(frames)
    return Figure(
        SECTION,
        f"stage viewer pictures {WIDTH}x{HEIGHT}",
        ms,
        "ms/frame",
        None,
        f"{len(frames)} rendered frames as the viewer gets them: {pictures.keys} key frames,"
        f" {pictures.patches} patches of what changed, {sent / len(frames) / 1000:.1f} KB a"
        f" frame; whole JPEGs {whole:.2f} ms/frame; quality 80, one OpenCV thread",
    )


def _stages() -> list[Figure]:
    import cv2
    import torch

    from agenthuman_local.engine.base import FrameSize
    from agenthuman_local.engine.procedural import ProceduralRenderer

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    seconds = float(_env("BENCH_SPEECH_S", "130"))
    params = _params(varied_speech(seconds))
    size = FrameSize(WIDTH, HEIGHT)
    figures: list[Figure] = []
    kept: list = []
    makers = {
        "procedural ada": lambda: ProceduralRenderer("avat_local_ada", size),
        "photo astronaut": lambda: _photo_renderer(size),
    }
    for name, make in makers.items():
        print(f"  stage: {name} render over {len(params)} frames ...", flush=True)
        try:
            renderer = make()
        except ImportError as exc:
            print(f"  skipping {name}: {exc}")
            continue
        found, frames = _render_stage(name, renderer, params)
        figures += found
        kept = kept or frames
        del renderer
    print("  stage: recording and viewer pictures ...", flush=True)
    recording = _recording_stage(kept)
    jpeg = _jpeg_stage(kept)
    figures += [recording, jpeg]
    render = next(f.value for f in figures if f.name.startswith("stage render procedural"))
    total = render + recording.value + jpeg.value
    figures.append(
        Figure(
            SECTION,
            "stages per session (procedural: render + recording + viewer pictures)",
            total,
            "ms/frame",
            None,
            f"CPU; {2000 / (FPS * total):.1f} sessions would fill 2 cores without the loop's"
            " ~2 ms/frame",
        )
    )
    return figures


# --- live -------------------------------------------------------------------------------------


async def _talk(conn: Conn, speech: np.ndarray, offset_s: float, until: float) -> None:
    """Utterances of 4-8 s cut from `speech` from `offset_s` on, sent at 4× real time."""
    rng = np.random.default_rng(int(offset_s * 10))
    pos = int(offset_s * SR) % speech.size
    while time.monotonic() < until:
        n = int(rng.uniform(4, 8) * SR)
        piece = speech[pos : pos + n] if pos + n <= speech.size else speech[:n]
        pos = (pos + n) % speech.size
        start = len(conn.events)
        await speak_utterance(conn, piece)
        try:
            await conn.until(protocol.AGENT_SPEAK_ENDED, start, limit_s=until - time.monotonic())
        except TimeoutError:
            return


def _losses(timeline: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in timeline:
        kind = line.get("type", "")
        if line["t"] == "event" and kind.startswith("output."):
            key = f"{line['output']} {kind.removeprefix('output.')}"
            out[key] = out.get(key, 0) + 1
    return out


async def _level(client: Client, n: int, seconds: float, speech: np.ndarray) -> dict[str, Any]:
    conns: list[Conn] = []
    viewers = []
    try:
        for _ in range(n):
            session, _ = await client.create_start()
            viewers.append(await viewer(client.http, session, compress=15))
            conns.append(await Conn.open(client.http, session, **SIZE))
        until = time.monotonic() + seconds
        talkers = [
            asyncio.create_task(_talk(c, speech, 17.0 * i, until), name=f"bench:{i}:talk")
            for i, c in enumerate(conns)
        ]
        await asyncio.gather(*talkers)
        timelines = [await client.timeline(c.session_id) for c in conns]
        for c in conns:
            await client.end(c.session_id)
    finally:
        for c in conns:
            await c.aclose()
        for v in viewers:
            await v.aclose()
    per_session = []
    losses: dict[str, int] = {}
    for timeline in timelines:
        frames = [line for line in timeline if line["t"] == "frame"]
        # The first second is start-up (renderer, encoder, viewer): not the steady state.
        steady = frames[FPS:]
        per_session.append(100 * sum(f["late"] for f in steady) / max(1, len(steady)))
        for key, count in _losses(timeline).items():
            losses[key] = losses.get(key, 0) + count
    published = sum(len([x for x in t if x["t"] == "frame"]) for t in timelines)
    return {
        "n": n,
        "late_pct": statistics.mean(per_session),
        "median_pct": statistics.median(per_session),
        "worst_pct": max(per_session),
        "per_session": per_session,
        "losses": losses,
        "published": published,
        "viewer_msgs": min(v.binary for v in viewers),
        "deflate": all(v.ws.compress for v in viewers),
    }


async def _first_frame(client: Client, n: int, speech: np.ndarray) -> tuple[float, float]:
    """p95, p50 of first chunk sent (from idle) → its speak_started, on one session while n-1
    others talk."""
    conns: list[Conn] = []
    viewers = []
    latencies: list[float] = []
    until = time.monotonic() + 3600
    talkers = []
    try:
        for _ in range(n):
            session, _ = await client.create_start()
            viewers.append(await viewer(client.http, session, compress=15))
            conns.append(await Conn.open(client.http, session, **SIZE))
        talkers = [
            asyncio.create_task(_talk(c, speech, 29.0 * (i + 1), until), name=f"bench:{i}:bg")
            for i, c in enumerate(conns[1:])
        ]
        probe = conns[0]
        await asyncio.sleep(1.0)
        rng = np.random.default_rng(n)
        for _ in range(15):
            start = len(probe.events)
            pos = int(rng.integers(0, speech.size - SR))
            t_sent = await speak_utterance(probe, speech[pos : pos + SR], speed=8)
            t_started, _ = await probe.until(protocol.AGENT_SPEAK_STARTED, start)
            latencies.append((t_started - t_sent) * 1000)
            await probe.until(protocol.AGENT_SPEAK_ENDED, start)
            await asyncio.sleep(0.2 + 0.04 * rng.random())  # any phase of the frame clock
    finally:
        for task in talkers:
            task.cancel()
        for c in conns:
            await client.end(c.session_id)
            await c.aclose()
        for v in viewers:
            await v.aclose()
    return pctl(latencies, 95), pctl(latencies, 50)


def _load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


async def _live() -> list[Figure]:
    seconds = float(_env("BENCH_LEVEL_S", "20"))
    repeats = int(_env("BENCH_LEVEL_REPEATS", "3"))
    levels = [int(x) for x in _env("BENCH_CAPACITY_LEVELS", "4,5,6").split(",") if x]
    speech = varied_speech(float(_env("BENCH_SPEECH_S", "130")))
    figures: list[Figure] = []
    server = Server({"devices.cpu_sessions": 64, "devices.cuda_sessions": 64})
    try:
        await server.start()
        client = Client(server)
        try:
            for n in (1, 4):
                load = _load()
                p95, p50 = await _first_frame(client, n, speech)
                print(f"  first frame at {n}: p95 {p95:.1f} p50 {p50:.1f} ms ({load})", flush=True)
                figures.append(
                    Figure(
                        SECTION,
                        f"first audio chunk → first speaking frame p95, {n} session(s)",
                        p95,
                        "ms",
                        f"<= {FIRST_FRAME_GOAL_MS:g}",
                        f"15 utterances from idle at the client, 1280x720@25, recording and a"
                        f" deflate-offering viewer each; p50 {p50:.1f} ms; {load}",
                    )
                )
            results = []
            for n in levels:
                runs = []
                for _ in range(repeats):
                    load = _load()
                    run = await _level(client, n, seconds, speech)
                    run["load"] = load
                    runs.append(run)
                    print(
                        f"  {n} sessions: late {run['late_pct']:.1f} % (worst"
                        f" {run['worst_pct']:.1f}), losses {run['losses']}, {load}",
                        flush=True,
                    )
                level = sorted(runs, key=lambda r: r["late_pct"])[len(runs) // 2]
                level["runs"] = [round(r["late_pct"], 2) for r in runs]
                results.append(level)
            figures += _level_figures(results, seconds, repeats)
        finally:
            await client.aclose()
        await server.stop()
    finally:
        server.cleanup()
    return figures


def _level_figures(results: list[dict[str, Any]], seconds: float, repeats: int) -> list[Figure]:
    figures = []
    for level in results:
        n = level["n"]
        cond = (
            f"median of {repeats} runs of {seconds:.0f} s (late % by run {level['runs']});"
            f" per session {[round(x, 1) for x in level['per_session']]}; shed/repeated"
            f" {level['losses']} of {level['published']} frames; viewer deflate"
            f" {'negotiated' if level['deflate'] else 'offered, declined by the server'};"
            f" {level['load']}"
        )
        goal = LATE_GOALS.get(n)
        figures.append(
            Figure(
                SECTION,
                f"1280x720@25 x{n}: late frames",
                level["late_pct"],
                "%",
                None if goal is None else f"<= {goal:g}",
                cond,
            )
        )
        if n > 4:
            ratio = level["worst_pct"] / max(level["median_pct"], 1.0)
            figures.append(
                Figure(
                    SECTION,
                    f"1280x720@25 x{n}: worst session / median (late share)",
                    ratio,
                    "x",
                    f"<= {WORST_OVER_MEDIAN:g}",
                    f"worst {level['worst_pct']:.1f} %, median {level['median_pct']:.1f} %"
                    " (a median under 1 % counts as 1 %)",
                )
            )
    shares = [lv["late_pct"] for lv in results]
    by_n = {lv["n"]: round(lv["late_pct"], 1) for lv in results}
    figures.append(
        Figure(
            SECTION,
            "late share grows with N (violations)",
            float(sum(b < a - 1.0 for a, b in zip(shares, shares[1:], strict=False))),
            "count",
            "<= 0",
            f"late % by N: {by_n}",
        )
    )
    held = [lv["n"] for lv in results if lv["late_pct"] <= 1.0]
    figures.append(
        Figure(
            SECTION,
            "calibrated devices.cpu_sessions (units of 1280x720@25)",
            float(max(held, default=0)),
            "units",
            None,
            "the largest N measured at <= 1 % late; levels below the first are not measured",
        )
    )
    return figures


def run() -> list[Figure]:
    parts = _env("BENCH_CAPACITY_PARTS", "stages,live").split(",")
    figures: list[Figure] = []
    if "stages" in parts:
        figures += _stages()
    if "live" in parts:
        figures += asyncio.run(_live())
    return figures
