"""Where and what moves on a talking photo, measured by re-detecting the face mesh on its frames
(the checks `test_photo_redetect` runs, and the photos and speech it runs them on).

Real speech (tests/data/speech.wav, its first 100 frames: silence, then words) drives the photo
renderer; MediaPipe's face mesh (engine.facemesh) runs again on every rendered frame, and the
checks read what an independent viewer would see (SPEC §9):

- the face is found in every frame;
- the re-detected inner-lip gap follows the speech envelope (r ≥ 0.6 at a lag within ±1 frame)
  and not the same audio reversed (r ≤ 0.3), and opens ≥ 0.05 face height past rest at its
  95th percentile;
- while the mouth is open, the skin between nose and upper lip keeps 0.85–1.15 of its rest
  brightness and each lip 0.7–1.3 (a painted patch, dark or skin-coloured, fails);
- at rest the re-detected lip corners and centres lie within 0.04 face width of the rig's own
  points; while speaking the upper lip's centre stays within 0.04 face width of rest;
- the lower lip's own pixels, found where the re-detected mesh puts the lip at rest and followed
  from there frame to frame by their texture, drop with the speech (r ≥ 0.6 at a lag within ±1
  frame, ≥ 0.05 face height at their 95th percentile): what moved in the picture, whatever a
  mesh's idea of a smiling mouth makes of it.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from agenthuman_local.audio import pcm16_to_float
from agenthuman_local.engine.base import FrameSize, P
from agenthuman_local.engine.facemesh import face_mesh
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer
from agenthuman_local.engine.rig import (
    CHIN,
    FOREHEAD,
    INNER_GAP_PAIRS,
    INNER_LOWER_LIP,
    INNER_UPPER_LIP,
    OUTER_LOWER_LIP,
    OUTER_UPPER_LIP,
    UNDER_NOSE,
)
from tests import photos
from tests.lipsync_check import drive, measure_sync

SPEECH_WAV = Path(__file__).parent / "data" / "speech.wav"
FPS = 25
FRAMES = 100
SIZE = FrameSize(640, 480)
CORNERS = (61, 291)
CENTRES = (0, 17)  # outer lip centres, upper and lower
UPPER_CENTRE, LOWER_CENTRE = CENTRES

torch.set_num_threads(1)


def speech_samples() -> np.ndarray:
    with wave.open(str(SPEECH_WAV)) as w:
        samples = pcm16_to_float(w.readframes(w.getnframes()))
    return samples[: FRAMES * 16000 // FPS]


grace_hopper = photos.grace_hopper


def _exposed(rgb: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _downscaled_crop(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    crop = rgb[int(0.05 * h) : int(0.8 * h), int(0.1 * w) : int(0.9 * w)]
    return cv2.resize(crop, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)


PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": photos.astronaut,
    "astronaut-mirrored": lambda: np.ascontiguousarray(photos.astronaut()[:, ::-1]),
    "astronaut-roll-15": lambda: photos.rolled(photos.astronaut(), -15.0),
    "astronaut-dark": lambda: _exposed(photos.astronaut(), 0.6),
    "grace-hopper": grace_hopper,
    "grace-hopper-roll+15": lambda: photos.rolled(grace_hopper(), 15.0),
    "grace-hopper-small-crop": lambda: _downscaled_crop(grace_hopper()),
}


@dataclass
class Measured:
    """Per-frame readings of the re-detected mesh (NaN where no face was found)."""

    renderer: PhotoRenderer
    params: np.ndarray  # [T, N_PARAMS]
    found: np.ndarray  # [T] bool
    gap: np.ndarray  # [T] inner-lip gap, in rest face heights
    points: np.ndarray  # [T, 4, 2] corners then centres, head motion taken out
    upper_centre: np.ndarray  # [T, 2]
    philtrum: np.ndarray  # [T] mean luminance
    upper_lip: np.ndarray
    lower_lip: np.ndarray
    lip_drop: np.ndarray  # [T] the lower lip's pixels' drop from rest, rest face heights

    @property
    def face_width(self) -> float:
        return self.renderer.rig.face_width

    @property
    def rest(self) -> np.ndarray:
        """Frames with the mouth at rest: before the first word, the jaw closed."""
        p = self.params
        mouth = np.abs(p[:, [P.JAW, P.SPREAD, P.ROUND, P.CLOSURE]]).max(axis=1)
        return (mouth < 0.02) & self.found

    @property
    def open(self) -> np.ndarray:
        return (self.params[:, P.JAW] > 0.35) & self.found


def _luminance(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _polygon_mean(lum: np.ndarray, polygon: np.ndarray) -> float:
    mask = np.zeros(lum.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon - 0.5).astype(np.int32)], 1)
    vals = lum[mask.astype(bool)]
    return float(vals.mean()) if vals.size else float("nan")


def _lip_band(lum: np.ndarray, lm: np.ndarray, outer: tuple[int, ...], inner: tuple[int, ...]):
    """Mean luminance of a lip: the band from its outer contour halfway to its inner one (the
    mesh's inner contour may slip a pixel or two into an open mouth; the lip's body may not)."""
    out, inn = lm[list(outer)], lm[list(inner)]
    return _polygon_mean(lum, np.concatenate([out, ((out + inn) / 2)[::-1]]))


def measure(renderer: PhotoRenderer, frames: np.ndarray, params: np.ndarray) -> Measured:
    t = len(frames)
    nan = np.full(t, np.nan)
    m = Measured(
        renderer,
        params,
        np.zeros(t, bool),
        nan.copy(),
        np.full((t, 4, 2), np.nan),
        np.full((t, 2), np.nan),
        nan.copy(),
        nan.copy(),
        nan.copy(),
        nan.copy(),
    )
    rig = renderer.rig
    fh = rig.face_height
    for i, (frame, row) in enumerate(zip(frames, params, strict=True)):
        mesh = face_mesh(frame)
        if mesh is None:
            continue
        lm = mesh.landmarks[:, :2]
        m.found[i] = True
        m.gap[i] = float(np.mean([lm[b, 1] - lm[a, 1] for a, b in INNER_GAP_PAIRS])) / fh
        offset = np.array(renderer.head_offset(row.tolist()))
        m.points[i] = lm[list(CORNERS + CENTRES)] - offset
        m.upper_centre[i] = lm[UPPER_CENTRE] - offset
        lum = _luminance(frame)
        face_h = float(np.hypot(*(lm[CHIN] - lm[FOREHEAD])))
        r = max(2.0, 0.02 * face_h)
        cx, cy = (lm[UNDER_NOSE] + lm[UPPER_CENTRE]) / 2
        m.philtrum[i] = float(
            lum[int(cy - r) : int(cy + r) + 1, int(cx - r) : int(cx + r) + 1].mean()
        )
        m.upper_lip[i] = _lip_band(lum, lm, OUTER_UPPER_LIP, INNER_UPPER_LIP)
        m.lower_lip[i] = _lip_band(lum, lm, OUTER_LOWER_LIP, INNER_LOWER_LIP)
    rest = np.nonzero(m.rest)[0]
    if len(rest):
        m.lip_drop[:] = _lip_drop(renderer, frames, params, int(rest[0]), m.points[rest[0], 3])
    return m


def _lip_drop(
    renderer: PhotoRenderer,
    frames: np.ndarray,
    params: np.ndarray,
    first: int,
    centre: np.ndarray,
) -> np.ndarray:
    """How far the lower lip's patch has moved down in each frame since frame `first` (at rest;
    `centre`: the lip's re-detected centre there, head motion taken out), in face heights, head
    motion taken out."""
    fh = renderer.rig.face_height
    head = np.array([renderer.head_offset(row.tolist()) for row in params])
    template = _lip_template(_luminance(frames[first]), centre + head[first], fh)
    moved = np.array([_moved_down(_luminance(f), template, fh) for f in frames])
    return (moved - (head[:, 1] - head[first, 1])) / fh


def _lip_template(lum: np.ndarray, centre: np.ndarray, fh: float) -> tuple[np.ndarray, int, int]:
    """The patch of the lower lip and the skin under it, around `centre`: (patch, x0, y0)."""
    hw, hh = int(0.12 * fh), int(0.05 * fh)
    x, y = int(round(centre[0])), int(round(centre[1]))
    return np.ascontiguousarray(lum[y - hh : y + hh, x - hw : x + hw]), x - hw, y - hh


def _moved_down(lum: np.ndarray, template: tuple[np.ndarray, int, int], fh: float) -> float:
    """How far down the lip's patch has moved in `lum`, pixels (sub-pixel): the best
    normalised match within 0.03 face heights across, 0.05 up and 0.2 down."""
    patch, x0, y0 = template
    sx, up, down = int(0.03 * fh) + 1, int(0.05 * fh) + 1, int(0.2 * fh) + 1
    area = lum[y0 - up : y0 + patch.shape[0] + down, x0 - sx : x0 + patch.shape[1] + sx]
    score = cv2.matchTemplate(np.ascontiguousarray(area), patch, cv2.TM_CCOEFF_NORMED)
    row, col = np.unravel_index(int(np.argmax(score)), score.shape)
    dy = float(row)
    if 0 < row < score.shape[0] - 1:  # a parabola through the best row and its neighbours
        a, b, c = score[row - 1, col], score[row, col], score[row + 1, col]
        if a - 2 * b + c < 0:
            dy += 0.5 * (a - c) / (a - 2 * b + c)
    return dy - up


# The checks: each returns what failed (empty when it passes).


def found_failures(m: Measured) -> list[str]:
    missing = np.nonzero(~m.found)[0].tolist()
    return [f"no face in frames {missing}"] if missing else []


def sync_failures(m: Measured, envelope: np.ndarray) -> list[str]:
    gap = np.where(m.found, m.gap, np.nanmedian(m.gap))
    report = measure_sync(envelope, gap, max_lag=3)
    out = []
    if report.r_best < 0.6 or abs(report.best_lag) > 1:
        out.append(f"gap vs speech: r {report.r_best:.2f} at lag {report.best_lag}")
    reversed_r = max(measure_sync(envelope[::-1].copy(), gap, 1).by_lag.values())
    if reversed_r > 0.3:
        out.append(f"gap follows the reversed audio: r {reversed_r:.2f}")
    return out


def tracked_failures(m: Measured, envelope: np.ndarray) -> list[str]:
    if np.isnan(m.lip_drop).all():
        return ["no frame at rest to find the lower lip in"]
    report = measure_sync(envelope, m.lip_drop, max_lag=3)
    out = []
    if report.r_best < 0.6 or abs(report.best_lag) > 1:
        out.append(f"lower lip's pixels vs speech: r {report.r_best:.2f} at lag {report.best_lag}")
    p95 = float(np.percentile(m.lip_drop - np.median(m.lip_drop[m.rest]), 95))
    if p95 < 0.05:
        out.append(f"lower lip's pixels drop only {p95:.3f} face heights past rest (p95)")
    return out


def opening_failures(m: Measured) -> list[str]:
    rest = float(np.nanmedian(m.gap[m.rest]))
    p95 = float(np.nanpercentile(m.gap - rest, 95))
    return [] if p95 >= 0.05 else [f"gap opens only {p95:.3f} face heights past rest (p95)"]


def brightness_failures(m: Measured) -> list[str]:
    out = []
    for name, values, lo, hi in (
        ("nose-to-lip skin", m.philtrum, 0.85, 1.15),
        ("upper lip", m.upper_lip, 0.7, 1.3),
        ("lower lip", m.lower_lip, 0.7, 1.3),
    ):
        ratio = values[m.open] / float(np.nanmedian(values[m.rest]))
        low, high = np.nanpercentile(ratio, 10), np.nanpercentile(ratio, 90)
        if low < lo or high > hi:
            out.append(f"{name} while open: {low:.2f}–{high:.2f} of rest")
    return out


def placement_failures(m: Measured) -> list[str]:
    rig = m.renderer.rig
    own = rig.points(list(CORNERS + CENTRES))
    out = []
    err = np.hypot(*(m.points[m.rest] - own).transpose(2, 0, 1)) / m.face_width
    if not err.size or np.nanmax(err) > 0.04:
        out.append(f"rest lips off the rig's points by {np.nanmax(err, initial=np.inf):.3f} fw")
    rest_upper = np.nanmedian(m.upper_centre[m.rest], axis=0)
    moved = np.hypot(*(m.upper_centre[m.open] - rest_upper).T) / m.face_width
    if np.nanmax(moved, initial=0.0) > 0.04:
        out.append(f"upper lip centre moved {np.nanmax(moved):.3f} fw while speaking")
    return out


def avatar(rgb: np.ndarray, path: Path) -> Path:
    save_avatar(prepare_face(photos.encode(rgb)), path)
    return path


def run(
    avatar_dir: Path,
    samples: np.ndarray,
    *,
    edit_params: Callable[[np.ndarray], np.ndarray] | None = None,
    edit_frames: Callable[[PhotoRenderer, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Measured:
    renderer = PhotoRenderer(avatar_dir, SIZE)
    frames, params = [], []
    for f, p in drive(renderer, samples, FPS, batch=10):
        if edit_params is not None:
            p = edit_params(p.copy())
            f = renderer.render(torch.from_numpy(p)).numpy()
        if edit_frames is not None:
            f = edit_frames(renderer, f.copy(), p)
        frames.append(f)
        params.append(p)
    return measure(renderer, np.concatenate(frames), np.concatenate(params))
