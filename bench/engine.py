"""The engine alone: render cost per renderer and size, start-up, first audio → first frame, RSS.

Frames are driven by real speech (tests/data/speech.wav) so mouth, blinks and sway all move.
Renderers run with one torch thread, as the engine sets them up, so ms/frame is per core.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from agenthuman_local.audio import FrameSlicer, StreamResampler, pcm16_to_float
from agenthuman_local.engine.base import FrameSize, Renderer, frame_sample_range
from agenthuman_local.engine.driver import Driver
from agenthuman_local.engine.engine import Engine
from agenthuman_local.engine.procedural import ProceduralRenderer
from bench import Figure
from tests.lipsync_check import (
    drive,
    envelope_db,
    measure_sync,
    mouth_fraction,
    refined_lag_frames,
)

SPEECH_WAV = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech.wav"
SIZES = [FrameSize(1280, 720), FrameSize(512, 512), FrameSize(960, 720)]
GOAL_SIZE = FrameSize(960, 720)
# The photo renderer has the goal at 1280×720 too (issue 10): its crop is the same size there.
PHOTO_GOAL_SIZES = (FrameSize(960, 720), FrameSize(1280, 720))
GOAL_FPS = 100.0
FRAMES = 150
FPS = 25
_tmp = tempfile.TemporaryDirectory(prefix="bench-engine-")


def _photo(size: FrameSize) -> Renderer:
    import cv2
    import skimage.data

    from agenthuman_local.engine.faces import prepare_face, save_avatar
    from agenthuman_local.engine.photo import open_photo_renderer

    avatar_dir = Path(_tmp.name) / "photo"
    if not avatar_dir.exists():
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
        save_avatar(prepare_face(jpg.tobytes()), avatar_dir)
    return open_photo_renderer(avatar_dir, size, "cpu")


# Every renderer to measure: name → factory(size). Adding one is one line.
RENDERERS: dict[str, Callable[[FrameSize], Renderer]] = {
    "procedural ada": lambda size: ProceduralRenderer("avat_local_ada", size),
    "procedural ben": lambda size: ProceduralRenderer("avat_local_ben", size),
    "photo astronaut": _photo,
}


def _speech() -> np.ndarray:
    with wave.open(str(SPEECH_WAV)) as w:
        return pcm16_to_float(w.readframes(w.getnframes()))


def _speech_params(samples: np.ndarray) -> torch.Tensor:
    driver = Driver(FPS, seed=0, deterministic=True)
    windows = [samples[slice(*frame_sample_range(n, FPS))] for n in range(FRAMES + 1)]
    rows = [driver.step(windows[n], windows[n + 1 : n + 2]) for n in range(FRAMES)]
    return torch.from_numpy(np.stack(rows))


def _render_figures(name: str, make: Callable[[FrameSize], Renderer], params: torch.Tensor):
    figures = []
    for size in SIZES:
        try:
            renderer = make(size)
        except ImportError as exc:
            print(f"  skipping {name}: {exc}")
            return figures
        for i in range(5):
            renderer.render(params[i : i + 1])
        times = []
        for i in range(FRAMES):
            start = time.perf_counter()
            renderer.render(params[i : i + 1])
            times.append((time.perf_counter() - start) * 1000.0)
        median = statistics.median(times)
        p95 = float(np.percentile(times, 95))
        where = f"{name} {size.width}x{size.height}"
        cond = "batch 1, 1 torch thread, speech-driven params"
        figures.append(Figure("engine", f"{where} ms/frame median", median, "ms", conditions=cond))
        figures.append(Figure("engine", f"{where} ms/frame p95", p95, "ms", conditions=cond))
        goal_sizes = PHOTO_GOAL_SIZES if name.startswith("photo") else (GOAL_SIZE,)
        goal = f">= {GOAL_FPS:g}" if size in goal_sizes else None
        figures.append(
            Figure("engine", f"{where} fps per core", 1000.0 / median, "fps", goal, cond)
        )
    return figures


def _first_frame_ms(samples: np.ndarray) -> float:
    """First 200 ms chunk of 24 kHz PCM in → first rendered frame out, engine warm."""
    pcm24 = StreamResampler(16000, 24000).process(samples[3200:6400])  # speech, not silence
    chunk = (np.clip(pcm24, -1, 1) * 32767).astype("<i2").tobytes()
    renderer = ProceduralRenderer("avat_local_ada", GOAL_SIZE)
    runs = []
    for _ in range(20):
        driver, resampler, slicer = (
            Driver(FPS, deterministic=True),
            StreamResampler(24000),
            FrameSlicer(FPS),
        )
        start = time.perf_counter()
        slicer.push(resampler.process(pcm16_to_float(chunk)))
        ahead = slicer.peek(1)
        _, current = slicer.pop()  # type: ignore[misc]
        params = driver.step(current, [ahead] if ahead is not None else [])
        renderer.render(torch.from_numpy(params)[None])
        runs.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(runs)


def _lag_figures(samples: np.ndarray) -> list[Figure]:
    """SPEC §9 lag, from pixels (research/models.md §3.1), refined below one frame."""
    figures = []
    for name in ("avat_local_ada", "avat_local_ben"):
        renderer = ProceduralRenderer(name, FrameSize(256, 256))
        mouth = []
        for frames, params in drive(renderer, samples, FPS):
            regions = [renderer.mouth_region(row) for row in params.tolist()]
            mouth.append(mouth_fraction(frames, regions))
        report = measure_sync(envelope_db(samples, FPS), np.concatenate(mouth))
        lag_ms = refined_lag_frames(report) * 1000.0 / FPS
        cond = f"tests/data/speech.wav, r at best lag {report.r_best:.2f}, + = video late"
        figures.append(Figure("engine", f"lip-sync lag {name}", lag_ms, "ms", conditions=cond))
        figures.append(Figure("engine", f"lip-sync |lag| {name}", abs(lag_ms), "ms", "<= 20"))
    return figures


_RSS_PROBE = """
import resource, sys, torch
from bench.engine import FRAMES, GOAL_SIZE, _speech, _speech_params
from agenthuman_local.engine.procedural import ProceduralRenderer
torch.set_num_threads(1)
params = _speech_params(_speech())
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
def session():
    r = ProceduralRenderer("avat_local_ada", GOAL_SIZE)
    for i in range(FRAMES):
        r.render(params[i : i + 1])
    return r
keep = [session()]
before = rss()
keep += [session() for _ in range(4)]
print((rss() - before) / 4)
"""


def _rss_per_session_mb() -> float:
    """Memory each extra 960x720 session adds (renderer, filled tile caches), fresh process."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE], cwd=root, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _portraits() -> dict[str, bytes]:
    """The two real portraits the tests use, as the JPEG bytes an upload would carry."""
    import cv2
    import matplotlib.cbook
    import skimage.data

    grace = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    images = {
        "astronaut": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR),
        "grace": grace,
    }
    return {name: cv2.imencode(".jpg", bgr)[1].tobytes() for name, bgr in images.items()}


def _upload_face_figures(runs: int = 15) -> list[Figure]:
    """upload-face's photo work (decode, detection, face mesh, rig, preview), no HTTP or disk;
    the first call also loads the four models."""
    from agenthuman_local.engine import facemesh
    from agenthuman_local.engine.faces import _decode, prepare_face

    figures = []
    photos = _portraits()
    start = time.perf_counter()
    prepare_face(photos["astronaut"])
    cold = time.perf_counter() - start
    figures.append(
        Figure(
            "engine",
            "upload-face photo work, first call",
            cold * 1000,
            "ms",
            conditions="astronaut 512x512; includes loading the 4 .tflite models",
        )
    )
    for name, data in photos.items():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            prepare_face(data)
            times.append(time.perf_counter() - start)
        rgb = _decode(data)
        detect = []
        for _ in range(runs):
            start = time.perf_counter()
            facemesh.detect_faces(rgb)
            detect.append(time.perf_counter() - start)
        cond = f"{name} {rgb.shape[1]}x{rgb.shape[0]} JPEG, p50 of {runs}, detection + mesh + rig"
        figures.append(
            Figure(
                "engine",
                f"upload-face photo work p50 ({name})",
                statistics.median(times) * 1000,
                "ms",
                conditions=cond,
            )
        )
        figures.append(
            Figure(
                "engine",
                f"face detection alone p50 ({name})",
                statistics.median(detect) * 1000,
                "ms",
                conditions="short-range model, whole photo",
            )
        )
    return figures


def run() -> list[Figure]:
    torch.set_num_threads(1)
    figures = []
    start = time.perf_counter()
    asyncio.run(Engine().load())
    figures.append(
        Figure(
            "engine", "engine load (warm shipped avatars)", time.perf_counter() - start, "s", "<= 5"
        )
    )
    samples = _speech()
    params = _speech_params(samples)
    for name, make in RENDERERS.items():
        print(f"  {name} ...", flush=True)
        figures.extend(_render_figures(name, make, params))
    figures.append(
        Figure(
            "engine",
            "first audio chunk -> first frame (engine alone)",
            _first_frame_ms(samples),
            "ms",
            conditions="200 ms chunk of 24 kHz PCM, 960x720, warm renderer",
        )
    )
    figures.extend(_lag_figures(samples))
    figures.extend(_upload_face_figures())
    if Path("/proc/self/statm").exists():
        per_session = _rss_per_session_mb()
        cond = "procedural 960x720 renderer after 150 speech frames; assets shared"
        figures.append(Figure("engine", "RSS per extra session", per_session, "MB", "<= 150", cond))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    figures.append(Figure("engine", "peak RSS", peak_mb, "MB"))
    return figures
