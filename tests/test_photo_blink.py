"""Blinks of the mesh photo avatar on true rigs, measured on the rendered frames
(`tests.blink_check`): the closed lid is the lid's own skin over the whole eye, with no streaks and
the skin's grain, a half blink covers the top of the eye only; each check has a negative control
that fails it. Rigs the model got wrong: `test_photo_blink_missed`; the lid's tone on synthetic
eyes: `test_photo_lid_tone`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, P
from agenthuman_local.engine.photo import PhotoRenderer
from tests.blink_check import CASES, blink_failures, filled, frames, luminance, measure, renderer


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = {}
    for name, make in CASES.items():
        r = renderer(make(), tmp_path_factory.mktemp("blink") / "avatar")
        rest, shut = frames(r)
        out[name] = (r, rest, shut)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_closed_lid_is_the_lids_own_skin_over_the_whole_eye(rendered, case: str) -> None:
    r, rest, shut = rendered[case]
    assert blink_failures(measure(r, rest, shut)) == []


def test_an_eye_left_open_fails_the_check(rendered) -> None:
    r, rest, _ = rendered["astronaut"]
    failures = blink_failures(measure(r, rest, rest))
    assert any("darker than the lashes" in f or "dark streak" in f for f in failures), failures


def test_a_dark_smudge_for_a_lid_fails_the_check(rendered) -> None:
    r, rest, shut = rendered["grace"]
    smudged = shut.copy()
    for upper, lower in r.rig.eye_lids:
        pts = np.concatenate([r.rig.points(upper), r.rig.points(lower)[::-1]])
        mask = np.zeros(shut.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        smudged[mask > 0] = (smudged[mask > 0] * 0.45).astype(np.uint8)
    failures = blink_failures(measure(r, rest, smudged))
    assert any("dark streak" in f or "closed lid at" in f for f in failures), failures


def test_a_darker_smear_over_the_iris_fails_the_check(rendered) -> None:
    """Negative control: the closed lid 0.8 as light in the iris's columns (only there) fails,
    although the whole closed lid's median stays within its bounds."""
    r, rest, shut = rendered["grace"]
    smeared = shut.astype(np.float32)
    for iris in r.rig.irises:
        radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
        x0, x1 = int(iris[0, 0] - radius), int(iris[0, 0] + radius) + 1
        smeared[:, x0:x1] *= 0.8
    smeared = smeared.astype(np.uint8)
    failures = blink_failures(measure(r, rest, smeared))
    assert failures and all("smear over the iris" in f for f in failures), failures


def test_a_pale_patch_for_a_lid_fails_the_check(rendered) -> None:
    r, rest, shut = rendered["astronaut"]
    pale = shut.copy()
    for upper, lower in r.rig.eye_lids:
        pts = np.concatenate([r.rig.points(upper), r.rig.points(lower)[::-1]])
        mask = np.zeros(shut.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        pale[mask > 0] = np.clip(pale[mask > 0].astype(np.float32) * 1.6, 0, 255).astype(np.uint8)
    failures = blink_failures(measure(r, rest, pale))
    assert any("pale patch" in f or "closed lid at" in f for f in failures), failures


def test_a_half_blink_covers_the_top_of_the_eye_only(rendered) -> None:
    r, rest, _ = rendered["grace"]
    p = torch.zeros(1, N_PARAMS)
    p[0, P.BLINK] = 0.5
    half = r.render(p).numpy()[0]
    for upper, lower in r.rig.eye_lids:
        up, lo = r.rig.points(upper), r.rig.points(lower)
        cx = int(round(up[4, 0]))
        y_up, y_lo = up[4, 1], lo[4, 1]
        h = y_lo - y_up
        col = slice(cx - 1, cx + 2)
        top = slice(int(y_up + 0.1 * h), int(y_up + 0.35 * h) + 1)
        bottom = slice(int(y_lo - 0.3 * h), int(y_lo - 0.05 * h) + 1)
        # The top of the eye changed (the lid is over it); its bottom is the eye as it was.
        assert np.abs(luminance(half[top, col]) - luminance(rest[top, col])).mean() > 10
        assert np.abs(luminance(half[bottom, col]) - luminance(rest[bottom, col])).mean() < 6


# A closed lid's column-to-column variation (its column means less their 5-column average),
# luminance levels. Stretched down over the eye, a wrinkled lid's folds and pores became
# vertical streaks (Grace: 4.8–8.3); skin with no streaks varies by about 2–3.5.
MAX_STREAKS = 4.5


def closed_lid_streaks(r: PhotoRenderer, shut: np.ndarray) -> list[float]:
    """Per eye, how much the closed lid's stretched skin (from a third of the eye's opening
    above its top edge to under the lash line) varies from column to column, over the middle
    60 % of the eye."""
    out = []
    lum = luminance(shut)
    for upper, lower in r.rig.eye_lids:
        up, lo = r.rig.points(upper), r.rig.points(lower)
        h = float(lo[:, 1].max() - up[:, 1].min())
        x0, x1 = np.percentile(up[:, 0], [20, 80])
        top = up[(up[:, 0] >= x0) & (up[:, 0] <= x1)] - [0, 0.3 * h]
        bottom = lo[(lo[:, 0] >= x0) & (lo[:, 0] <= x1)] - [0, max(1.5, 0.4 * h)]
        ys, xs = np.nonzero(filled(shut.shape, np.concatenate([top, bottom[::-1]])))
        cols = np.arange(xs.min(), xs.max() + 1)
        prof = np.array([lum[ys[xs == c], c].mean() for c in cols])
        smooth = np.convolve(np.pad(prof, 2, mode="edge"), np.ones(5) / 5, "valid")
        out.append(float(np.std(prof - smooth)))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_closed_lid_has_no_streaks(rendered, case: str) -> None:
    r, _, shut = rendered[case]
    assert max(closed_lid_streaks(r, shut)) < MAX_STREAKS


def test_streaks_on_a_closed_lid_are_seen(rendered) -> None:
    """Negative control: stripes two columns wide, ±6 levels, on the closed lids fail."""
    r, _, shut = rendered["astronaut"]
    striped = shut.astype(np.float32)
    striped += np.where(np.arange(shut.shape[1]) % 4 < 2, 6.0, -6.0)[None, :, None]
    striped = np.clip(striped, 0, 255).astype(np.uint8)
    assert min(closed_lid_streaks(r, striped)) >= MAX_STREAKS


# The closed lid's fine grain (what a 1 px blur takes out), against the skin's under the eye at
# rest: stretched and smoothed, the lid was a flat pale patch (the least eye of each case 0.20
# to 0.27; 0.37 to 0.48 with the grain given back).
MIN_GRAIN = 0.33


def closed_lid_grain(r: PhotoRenderer, rest: np.ndarray, shut: np.ndarray) -> list[float]:
    """Per eye, the spread of the closed lid's fine texture (over the middle 60 % of the eye,
    above the lash line's band) over that of the skin half to one and a half openings under
    it."""
    out = []
    for upper, lower in r.rig.eye_lids:
        up, lo = r.rig.points(upper), r.rig.points(lower)
        h = float(lo[:, 1].max() - up[:, 1].min())
        x0, x1 = np.percentile(up[:, 0], [20, 80])
        top, bottom = (
            up[(up[:, 0] >= x0) & (up[:, 0] <= x1)],
            lo[(lo[:, 0] >= x0) & (lo[:, 0] <= x1)],
        )
        lid = filled(shut.shape, np.concatenate([top, (bottom - [0, max(1.5, 0.6 * h)])[::-1]]))
        cheek = filled(
            shut.shape, np.concatenate([bottom + [0, 0.5 * h], (bottom + [0, 1.5 * h])[::-1]])
        )

        def fine(img: np.ndarray) -> np.ndarray:
            lum = luminance(img)
            return lum - cv2.GaussianBlur(lum, (0, 0), 1.0)

        out.append(float(np.std(fine(shut)[lid > 0]) / np.std(fine(rest)[cheek > 0])))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_closed_lid_keeps_the_skins_grain(rendered, case: str) -> None:
    r, rest, shut = rendered[case]
    assert min(closed_lid_grain(r, rest, shut)) >= MIN_GRAIN


def test_a_smoothed_lid_fails_the_grain_check(rendered) -> None:
    """Negative control: the closed lids blurred (σ 1 px) fail."""
    r, rest, shut = rendered["astronaut"]
    blurred = cv2.GaussianBlur(shut, (0, 0), 1.0)
    assert min(closed_lid_grain(r, rest, blurred)) < MIN_GRAIN
