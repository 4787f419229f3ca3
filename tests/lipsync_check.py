"""The weights-free lip-sync check of research/models.md §3.1, measured from rendered pixels.

1. Audio envelope: RMS over each frame's exact sample range (640 samples at 25 fps), in dBFS.
2. Mouth signal: per frame, the fraction of pixels in a lower-face region that are dark inner
   mouth (luminance < 0.35 and red > green), so the whole path driver → renderer is tested,
   not the parameters.
3. Normalised cross-correlation over lags −12…+12 frames; positive lag = video late.
4. Silence: frames whose envelope is below −50 dBFS must show a closed mouth.

Any renderer can be checked: pass its frames and the region where its mouth is (the photo
renderer takes it from its rig). `drive` runs a `Driver` and a renderer over audio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS, SAMPLE_RATE_HZ, Renderer, frame_sample_range
from agenthuman_local.engine.driver import Driver

SILENCE_DB = -50.0
# Digital silence has no finite level; the floor keeps it from dominating the correlation.
FLOOR_DB = -60.0
Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


def frame_count(n_samples: int, fps: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> int:
    """Whole frames in a clip of n_samples."""
    return (n_samples * fps) // sample_rate_hz


def envelope_db(samples: np.ndarray, fps: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Per-frame RMS level in dBFS over each frame's exact range, floored at −60."""
    out = np.empty(frame_count(samples.size, fps, sample_rate_hz))
    for n in range(out.size):
        lo, hi = frame_sample_range(n, fps, sample_rate_hz)
        rms = float(np.sqrt(np.mean(np.square(samples[lo:hi], dtype=np.float64))))
        out[n] = 20.0 * np.log10(max(rms, 10 ** (FLOOR_DB / 20)))
    return out


def mouth_fraction(frames: np.ndarray, regions: Region | Sequence[Region]) -> np.ndarray:
    """uint8 frames [T, H, W, 3] → per-frame fraction of dark inner-mouth pixels.

    `regions` is one region for every frame, or one per frame (a renderer that sways can say
    where each frame's mouth is).
    """
    per_frame: list[Region]
    if len(regions) == 4 and all(isinstance(v, int | np.integer) for v in regions):
        per_frame = [regions] * len(frames)  # type: ignore[list-item]
    else:
        per_frame = list(regions)  # type: ignore[arg-type]
    out = np.empty(len(frames))
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, per_frame, strict=True)):
        crop = frame[y0:y1, x0:x1].astype(np.float32) / 255.0
        r, g, b = crop[..., 0], crop[..., 1], crop[..., 2]
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        out[i] = float(((luma < 0.35) & (r > g)).mean())
    return out


def correlation_at(envelope: np.ndarray, mouth: np.ndarray, lag: int) -> float:
    """Pearson r of envelope[n] against mouth[n + lag]."""
    n = min(envelope.size, mouth.size)
    if lag >= 0:
        a, b = envelope[: n - lag], mouth[lag:n]
    else:
        a, b = envelope[-lag:n], mouth[: n + lag]
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True)
class SyncReport:
    r_at_zero: float
    best_lag: int  # frames; positive = video late
    r_best: float
    by_lag: dict[int, float]


def measure_sync(envelope: np.ndarray, mouth: np.ndarray, max_lag: int = 12) -> SyncReport:
    by_lag = {lag: correlation_at(envelope, mouth, lag) for lag in range(-max_lag, max_lag + 1)}
    best = max(by_lag, key=lambda k: by_lag[k])
    return SyncReport(by_lag[0], best, by_lag[best], by_lag)


def refined_lag_frames(report: SyncReport) -> float:
    """The best lag to a fraction of a frame: the peak of a parabola through its neighbours."""
    lag = report.best_lag
    if lag - 1 not in report.by_lag or lag + 1 not in report.by_lag:
        return float(lag)
    a, b, c = report.by_lag[lag - 1], report.by_lag[lag], report.by_lag[lag + 1]
    curve = a - 2.0 * b + c
    return float(lag) if curve >= 0 else lag + 0.5 * (a - c) / curve


def silent_mask(envelope: np.ndarray, threshold_db: float = SILENCE_DB) -> np.ndarray:
    return envelope < threshold_db


def drive(
    renderer: Renderer,
    samples: np.ndarray,
    fps: int,
    *,
    seed: int = 0,
    batch: int = 8,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Run a deterministic Driver and `renderer` over 16 kHz audio.

    Yields (uint8 frames [b, H, W, 3], their parameters [b, N_PARAMS]) in batches of `batch`.
    """
    driver = Driver(fps, seed=seed, deterministic=True)
    total = frame_count(samples.size, fps)
    windows = [samples[slice(*frame_sample_range(n, fps))] for n in range(total)]
    params = np.zeros((total, N_PARAMS), dtype=np.float32)
    for n in range(total):
        ahead = windows[n + 1 : n + 1 + driver.lookahead_frames]
        params[n] = driver.step(windows[n], ahead)
    for start in range(0, total, batch):
        chunk = params[start : start + batch]
        yield renderer.render(torch.from_numpy(chunk)).numpy(), chunk
