"""Blinks of the mesh photo avatar where the face model got the eye wrong (`tests.blink_check`):
the lids put too low, the corners put short, a turned eye's contour carried on behind the nose,
a shadowed lid margin. The lid must still cover the whole eye, and only the eye."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer, open_photo_renderer
from agenthuman_local.engine.rig import MeshRig
from tests import photos
from tests.blink_check import (
    CASES,
    SIZE,
    blink_failures,
    filled,
    frames,
    measure,
    renderer,
)


def _lids_put_low(avatar: Path, share: float = 0.2) -> None:
    """Rewrite the stored rig as the iris model gets a shadowed or hooded eye wrong: each upper
    lid point `share` of the eye's opening too low, so the eye's top shows above the contour."""
    import dataclasses

    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    lm = rig.landmarks.copy()
    for upper, lower in rig.eye_lids:
        lo = lm[list(lower)]
        order = np.argsort(lo[:, 0])
        for i in upper[1:-1]:
            y_lo = np.interp(lm[i, 0], lo[order, 0], lo[order, 1])
            lm[i, 1] += share * (y_lo - lm[i, 1])
    (avatar / "rig.json").write_text(dataclasses.replace(rig, landmarks=lm).to_json())


def _corners_put_short(avatar: Path, share: float = 0.2) -> None:
    """The same for a turned eye: each eye's contour `share` shorter at both corners."""
    import dataclasses

    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    lm = rig.landmarks.copy()
    for upper, lower in rig.eye_lids:
        idx = sorted(set(upper) | set(lower))
        centre = lm[idx, :2].mean(0)
        lm[idx, :2] = centre + (lm[idx, :2] - centre) * np.array([1 - share, 1.0])
    (avatar / "rig.json").write_text(dataclasses.replace(rig, landmarks=lm).to_json())


def _carried_on(avatar: Path, share: float = 0.35) -> None:
    """The same for a turned head's far eye: each eye's contour carried on `share` further
    towards the nose (as the mesh carries it on behind the nose), over the skin beside it."""
    import dataclasses

    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    lm = rig.landmarks.copy()
    nose_x = float(lm[4, 0])
    for upper, lower in rig.eye_lids:
        idx = np.array(sorted(set(upper) | set(lower)))
        centre = lm[idx, :2].mean(0)
        near = idx[(lm[idx, 0] - centre[0]) * np.sign(nose_x - centre[0]) > 0]
        lm[near, 0] = centre[0] + (lm[near, 0] - centre[0]) * (1 + share)
    (avatar / "rig.json").write_text(dataclasses.replace(rig, landmarks=lm).to_json())


MISSED = {"lids put low": _lids_put_low, "corners put short": _corners_put_short}


def _missed(photo: str, how: str, root: Path) -> tuple[PhotoRenderer, np.ndarray, np.ndarray]:
    """The true rig (for measuring) and the frames drawn from a rig whose eyes were missed."""
    rgb = CASES[photo]()
    true = renderer(rgb, root / "true")
    avatar = root / "missed"
    save_avatar(prepare_face(photos.encode(rgb)), avatar)
    MISSED[how](avatar)
    missed = open_photo_renderer(avatar, SIZE)
    assert isinstance(missed, PhotoRenderer)
    rest, shut = frames(missed)
    return true, rest, shut


# The iris's top above a lid put too low is not covered: a dark iris and a dark, wrinkled lid are
# not told apart by tone (only white of the eye is). The lid's edge carries the dark rows over the
# contour down whole only up to a lash's thickness, the rest is stretched from the lid's skin down
# to them and closes as a smear over the iris (seen at 6×; median 0.59–0.92 of the lid's skin over
# the iris, needs 1.0). Tried this session, not enough: the eye grown up through iris-dark pixels in
# the iris's circle (it also climbs the lashes on the true rig and raises the lid's band into the
# crease), and the stretch made non-linear so the rows by the lashes are pressed into a line
# (Grace 0.85/0.71, the astronaut 0.91/0.88).
_IRIS_MISSED = pytest.mark.xfail(
    strict=True, reason="an iris the lid model put too low shows as a smear under the closed lid"
)


@pytest.mark.parametrize(
    ("photo", "how"),
    [
        pytest.param("astronaut", "lids put low", marks=_IRIS_MISSED),
        ("astronaut", "corners put short"),
        ("grace", "corners put short"),
        ("grace mirrored", "corners put short"),
        pytest.param("grace", "lids put low", marks=_IRIS_MISSED),
        pytest.param("grace mirrored", "lids put low", marks=_IRIS_MISSED),
    ],
)
def test_a_lid_closes_over_the_eye_the_model_missed(photo: str, how: str, tmp_path: Path) -> None:
    """Where the iris model puts the lid too low or the corners short (shadowed, hooded, turned
    eyes), the lid still covers the whole eye: none of it shows through the closed lid."""
    true, rest, shut = _missed(photo, how, tmp_path)
    assert blink_failures(measure(true, rest, shut)) == []


def _margin_shadowed(avatar: Path, depth: float = 0.6, shade: float = 0.3) -> None:
    """Rewrite the stored photo as a shadowed lid margin looks (Walter's near eye): the rows over
    each eye's upper contour, up to `depth` of its opening, `shade` as light (soft-edged), the rig
    unchanged, so the contour sits under the dark margin."""
    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    bgr = cv2.imread(str(avatar / "image.jpg")).astype(np.float32)
    gain = np.ones(bgr.shape[:2], np.float32)
    for upper, lower in rig.eye_lids:
        up, lo = rig.landmarks[list(upper), :2], rig.landmarks[list(lower), :2]
        h = float(lo[:, 1].max() - up[:, 1].min())
        band = np.concatenate([up + [0, 0.5], (up - [0, depth * h])[::-1]])
        mask = filled(bgr.shape, band).astype(np.float32)
        mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.08 * h))
        gain = np.minimum(gain, 1.0 - (1.0 - shade) * mask)
    cv2.imwrite(str(avatar / "image.jpg"), np.clip(bgr * gain[..., None], 0, 255).astype(np.uint8))


def _shaded_frames(photo: str, root: Path) -> tuple[PhotoRenderer, np.ndarray, np.ndarray]:
    """The true renderer and its frame at rest (the lid's skin unshaded, for measuring), and the
    closed lid drawn from the photo with its lid margin shadowed (`_margin_shadowed`)."""
    rgb = CASES[photo]()
    true = renderer(rgb, root / "true")
    rest, _ = frames(true)
    avatar = root / "shaded"
    save_avatar(prepare_face(photos.encode(rgb)), avatar)
    _margin_shadowed(avatar)
    shaded = open_photo_renderer(avatar, SIZE)
    assert isinstance(shaded, PhotoRenderer)
    return true, rest, frames(shaded)[1]


# Not fixed: the eye is not grown up over a shadowed margin, so the band's skin stretched down is
# the dark margin (the old and the present lid: 0.39-0.42 of the skin on the astronaut). Tried this
# session: the eye grown up through pixels under 0.45 of the lid's skin where that dark run averages
# over 0.34 openings (Walter's near eye 0.35, his far one 0.47: both then close as skin over the
# whole eye and its shadowed corner); but a lash line measures up to 0.33 (Grace with its corners
# put short, Grace mirrored), and a lid grown over it closes as a flat pale cap stretched from the
# brow's lit ridge (1.5-2.75 of the lid's skin).
_MARGIN_MISSED = pytest.mark.xfail(
    strict=True, reason="a shadowed lid margin over the contour closes as a dark block"
)


@_MARGIN_MISSED
@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_a_shadowed_lid_margin_closes_as_no_dark_block(photo: str, tmp_path: Path) -> None:
    """Where the contour sits under a shadowed lid margin (Walter's eyes: the dark rows over the
    eye are eye and shade, not a lash line), the closed lid is not the dark margin stretched down
    over the eye (a dark block): not darker than the lid's skin of the unshaded photo, no dark
    streak."""
    true, rest, shut = _shaded_frames(photo, tmp_path)
    failures = blink_failures(measure(true, rest, shut))
    dark = [f for f in failures if "dark streak" in f or "darker" in f or " at 0." in f]
    assert dark == [], failures


def test_a_lid_is_not_drawn_over_the_skin_a_contour_runs_on_over(tmp_path: Path) -> None:
    """Walter's far eye: the mesh carries the contour on behind his nose, and the closed lid
    was drawn over the nose (a dark block with a stepped edge). An end of the contour whose
    columns are the cheek's skin is not eye: with the astronaut's image-left contour carried on
    0.35 towards the nose, the skin it runs over (past the true contour, 2 px clear of it)
    stays as it is when the lid closes (mean change 6.6 levels; 58 when the lid covered it).
    Her other eye's nose side is shaded to 0.56-0.62 of the cheek, which is not taken for
    skin (a shaded corner and a dark iris are not told apart by tone), so it is not checked."""
    rgb = photos.astronaut()
    true = renderer(rgb, tmp_path / "true")
    avatar = tmp_path / "carried"
    save_avatar(prepare_face(photos.encode(rgb)), avatar)
    _carried_on(avatar)
    carried = open_photo_renderer(avatar, SIZE)
    assert isinstance(carried, PhotoRenderer)
    rest, shut = frames(carried)
    upper, lower = true.rig.eye_lids[0]

    def contour_mask(rig: MeshRig) -> np.ndarray:
        pts = np.concatenate([rig.points(upper), rig.points(lower)[::-1]])
        mask = np.zeros(rest.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        return mask

    clear = cv2.dilate(contour_mask(true.rig), np.ones((5, 5), np.uint8))
    over = (contour_mask(carried.rig) > 0) & (clear == 0)
    assert over.sum() >= 8
    change = np.abs(rest.astype(np.float32) - shut.astype(np.float32)).sum(-1)[over]
    assert change.mean() < 15.0, change.mean()
