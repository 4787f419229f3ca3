"""The photo avatar's open mouth: where it opens (a lens between the lips where no teeth show,
under a smile's own teeth) and what shows in it (synthesized teeth in the photo's light, the
lower ones only in front; the depth between the lips that shapes them)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import agenthuman_local.engine.photo_cavity as cavity
import agenthuman_local.engine.photo_geometry as geometry
from agenthuman_local.engine.base import N_PARAMS, P
from agenthuman_local.engine.photo import PhotoRenderer
from agenthuman_local.engine.photo_warp import FACE_PARAMS, JAW_DROP_FH, build_fields
from tests import photos
from tests.photos import luminance, params


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> PhotoRenderer:
    r = photos.renderer(photos.astronaut(), tmp_path_factory.mktemp("avatars") / "avat_astronaut")
    assert r.rig.teeth_at_rest
    return r


@pytest.fixture(scope="module")
def grace(tmp_path_factory: pytest.TempPathFactory) -> PhotoRenderer:
    r = photos.renderer(photos.grace_hopper(), tmp_path_factory.mktemp("avatars") / "avat_grace")
    assert not r.rig.teeth_at_rest
    return r


def _under_the_upper_lip(r: PhotoRenderer, frame: np.ndarray, below_px: float) -> np.ndarray:
    """Luminance along the mouth of a frame at jaw = 1, `below_px` under the upper lip's edge
    (the split line, less how far the lip rose), over the middle 1.4 half widths of the
    mouth."""
    geo = r.geometry
    x0, y0 = r.crop_box[:2]
    mx = float(geo.mouth[0])
    xs = np.arange(int(mx - 0.7 * geo.half_w), int(mx + 0.7 * geo.half_w) + 1)
    risen = -build_fields(geo).edge[FACE_PARAMS.index("JAW_WIDE"), xs, 1].numpy()
    ys = np.interp(xs, geo.split_x, geo.split_y) - risen + below_px
    lum = luminance(frame)
    return lum[np.round(ys).astype(int) + y0, xs + x0]


def test_a_photo_without_teeth_opens_onto_shaped_teeth_in_its_own_light(
    grace: PhotoRenderer,
) -> None:
    rest, opened = (f.numpy() for f in grace.render(torch.cat([params(), params(jaw=1.0)])))
    fh = grace.rig.face_height
    teeth = _under_the_upper_lip(grace, opened, 0.012 * fh)
    cavity = _under_the_upper_lip(grace, opened, 0.07 * fh)
    # Teeth show under the upper lip, far brighter than the cavity behind them...
    assert np.median(teeth) > 2.5 * np.median(cavity)
    # ...as bright as teeth in this light: near the lit skin (a cheek or the chin), neither a
    # dark band nor a white bar.
    lm = grace.rig.points(list(range(468)))
    r = int(0.03 * fh)
    skin = max(
        float(luminance(rest)[int(y) - r : int(y) + r, int(x) - r : int(x) + r].mean())
        for x, y in (lm[50], lm[280], (lm[17] + lm[152]) / 2)
    )
    assert 0.55 * skin < np.median(teeth) < 1.15 * skin
    # Separate teeth, not a flat band: the row dips between teeth at least four times.
    smooth = np.convolve(teeth, np.ones(9) / 9, mode="same")
    dips = (teeth[4:-4] < smooth[4:-4] - 0.02) & (
        teeth[4:-4] <= np.minimum(teeth[3:-5], teeth[5:-3])
    )
    assert dips.sum() >= 4, dips.sum()
    # An arch: the row of teeth is longer in the middle of the mouth than towards its corners.
    centre = _under_the_upper_lip(grace, opened, 0.03 * fh)
    mid = len(centre) // 2
    assert centre[mid - 3 : mid + 4].mean() > centre[[0, 1, 2, -3, -2, -1]].mean() + 0.1


def test_the_lower_teeth_show_in_front_only_and_solid(grace: PhotoRenderer, tmp_path: Path) -> None:
    """The synthesized lower teeth are the front few, rising whole from behind the lower lip.
    Before, a row ran along 0.54–0.60 of the mouth's width, half faded in at a medium
    opening (0.45 of the upper teeth's brightness): a grey outline along the lower lip."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cavity, "LOWER_TEETH_FH", 0.0)
        bare = photos.renderer(photos.grace_hopper(), tmp_path / "avat_no_lower_teeth")
    geo = grace.geometry
    upper = np.median(
        _under_the_upper_lip(grace, grace.render(params(jaw=1.0))[0].numpy(), 0.012 * geo.fh)
    )
    for jaw in (0.7, 1.0):
        with_teeth, without = (
            luminance(r.render(params(jaw=jaw))[0].numpy()) for r in (grace, bare)
        )
        teeth = np.abs(with_teeth - without) > 0.03
        xs = np.nonzero(teeth)[1]
        assert len(xs) >= 20, jaw
        assert (np.ptp(xs) + 1) / (2 * geo.half_w) <= 0.45, jaw
        assert np.median(with_teeth[teeth]) >= 0.53 * upper, jaw


def _opened_above_the_split(r: PhotoRenderer) -> float:
    """How far above the closed lips' line (the split) the mouth has opened at wide open, at
    the middle of the mouth, in jaw drops: the rows there that changed by more than a lip's
    own texture would when pressed (luminance by 0.15 or more)."""
    rest, opened = (luminance(f.numpy()) for f in r.render(torch.cat([params(), params(jaw=1.0)])))
    geo = r.geometry
    x0, y0 = r.crop_box[:2]
    drop = JAW_DROP_FH * geo.fh
    xs = np.arange(int(geo.mouth[0]) - 2, int(geo.mouth[0]) + 3)
    split = np.interp(xs, geo.split_x, geo.split_y)
    rows = []
    for x, s in zip(xs, split, strict=True):
        ys = np.arange(int(np.floor(s - drop)), int(np.floor(s)))
        changed = np.abs(opened[ys + y0, x + x0] - rest[ys + y0, x + x0]) >= 0.15
        rows.append((s - ys[changed].min()) if changed.any() else 0.0)
    return float(np.median(rows)) / drop


def test_the_lips_part_both_ways_where_no_teeth_show(grace: PhotoRenderer) -> None:
    """The upper lip's inner edge rises as the jaw drops, so the opening is a lens rather than
    a cut under a straight edge (which read as a hole pasted under the upper lip)."""
    assert 0.12 <= _opened_above_the_split(grace) <= 0.35


def test_a_smile_opens_under_its_own_teeth(astronaut: PhotoRenderer) -> None:
    """A photo showing its upper teeth keeps them still: they hang from the skull."""
    assert _opened_above_the_split(astronaut) < 0.05


@pytest.mark.parametrize("roll", [0.0, 15.0, -15.0])
def test_the_depth_between_the_lips_falls_row_by_row(tmp_path: Path, roll: float) -> None:
    """Down each column of the opening the lower lip comes closer a row at a time. Where it
    stepped back up (from the row right under the split line, which the upper lip's field
    still shares), the teeth's height changed pixel to pixel along a tilted mouth: a row of
    dots instead of teeth (3–30 such rows per frame here before)."""
    r = photos.renderer(photos.rolled(photos.grace_hopper(), roll), tmp_path / "avat")
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    paint = r._mouth.composite

    def spy(crop: torch.Tensor, q: torch.Tensor, s: torch.Tensor, edge=None) -> None:  # type: ignore[no-untyped-def]
        calls.append((q, s, edge))
        paint(crop, q, s, edge)

    r._mouth.composite = spy  # type: ignore[method-assign]
    for jaw in (0.3, 0.6, 1.0):
        calls.clear()
        params = torch.zeros(1, N_PARAMS)
        params[0, P.JAW] = jaw
        r.render(params)
        assert len(calls) == 1
        from_top, to_bottom = r._mouth.depths(*calls[0])
        opening = ((from_top > 0.5) & (to_bottom > 0.5))[0, 0].numpy()
        bottom = to_bottom[0, 0].numpy()
        both = opening[1:] & opening[:-1]
        assert both.sum() > 20, jaw
        rises = both & (np.diff(bottom, axis=0) > 0.25)
        assert rises.sum() == 0, (jaw, int(rises.sum()))


def _opening(r: PhotoRenderer, pose: torch.Tensor) -> np.ndarray:
    """How much the inner mouth paints each pixel of the frame at `pose` (0–255): the frame
    with every colour of the inner mouth white, less the frame with them black."""
    mouth = r._mouth
    colours = {k: getattr(mouth, k) for k in ("_lit", "_deep", "_tongue", "_teeth")}
    frames = []
    try:
        for value in (0.0, 255.0):
            for k, c in colours.items():
                setattr(mouth, k, torch.full_like(c, value))
            frames.append(r.render(pose)[0].numpy().astype(np.float32))
    finally:
        for k, c in colours.items():
            setattr(mouth, k, c)
    return np.abs(frames[1] - frames[0]).max(axis=-1)


@pytest.mark.parametrize("roll", [0.0, -15.0])
def test_the_opening_ends_in_its_corners_without_flecks(tmp_path: Path, roll: float) -> None:
    """Towards the corners the opening is a thin, steep sliver. Cut at each pixel's centre it
    broke into dots: dark flecks beside the lips' corners, one or two pixels clear of the
    opening (1–2 pixels in 3–4 of these 15 poses before, on each face). Every pixel the
    mouth visibly paints is joined to the opening, through pixels it paints at all."""
    r = photos.renderer(photos.rolled(photos.astronaut(), roll), tmp_path / "avat")
    flecks = []
    for jaw in (0.2, 0.4, 0.6, 0.8, 1.0):
        for shape in ({"spread": 0.0}, {"spread": 0.6}, {"round": 0.6}):
            painted = _opening(r, params(jaw=jaw, **shape))
            _, label, stats, _ = cv2.connectedComponentsWithStats(
                (painted > 6).astype(np.uint8), connectivity=8
            )
            body = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            clear = int(((painted > 40) & (label != body)).sum())
            if clear:
                flecks.append((jaw, shape, clear))
    assert flecks == []


def test_a_thin_steep_sliver_covers_each_column_by_its_height() -> None:
    """`_coverage` on a sliver 0.6 px tall, sloping 2 px a column: each column's pixels add up
    to its height, and every column is joined to the next (no dots)."""
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(12.0), indexing="ij")
    upper = 2.0 * cols + 5.3  # the upper lip's edge, y by column
    from_top = (rows - upper)[None, None]
    to_bottom = (upper + 0.6 - rows)[None, None]
    alpha = cavity._coverage(from_top, to_bottom, torch.ones_like(from_top))[0, 0].numpy()
    inner = alpha[:, 2:-2]
    np.testing.assert_allclose(inner.sum(axis=0), 0.6, atol=0.02)
    touched = inner > 0.02
    for c in range(inner.shape[1] - 1):
        here, there = np.flatnonzero(touched[:, c]), np.flatnonzero(touched[:, c + 1])
        assert there.min() - here.max() <= 1, c


def _smile(rows: list[tuple[float, float]]) -> np.ndarray:
    """A grey crop 60 px tall: `(y, level)` steps down each column, each edge a 2.5 px ramp
    (a photo's soft teeth tips), level 120 above the first."""
    ys = np.arange(60.0)[:, None]
    lum = np.full((60, 1), 120.0)
    for y, level in rows:
        lum = lum + (level - lum) * np.clip((ys - y) / 2.5 + 0.5, 0.0, 1.0)
    return np.repeat(np.repeat(lum, 100, axis=1)[..., None], 3, axis=2).astype(np.uint8)


def _split_at(photo: np.ndarray) -> np.ndarray:
    """The split's y at the pairs between the corners, inner lips at y 8 and 36."""
    xs = np.linspace(10.0, 90.0, 11)
    upper = np.stack([xs, np.full_like(xs, 8.0)], axis=1).astype(np.float32)
    lower = np.stack([xs, np.full_like(xs, 36.0)], axis=1).astype(np.float32)
    return (8.0 + 28.0 * geometry._teeth_edges(photo, upper, lower))[1:-1]


@pytest.mark.parametrize(
    ("rows", "edge"),
    [
        # One row from 10 to 29.5, its tips fading into the lower lip.
        ([(10.0, 230.0), (29.5, 130.0)], 29.5),
        # Both rows: the upper to 20, a shaded line, the lower from 25.5.
        ([(10.0, 230.0), (20.0, 60.0), (25.5, 230.0), (33.0, 130.0)], 25.5),
    ],
)
def test_the_split_runs_along_the_teeths_own_edge(rows: list[tuple[float, float]], edge: float):
    """The split goes where a smile's upper row ends (halfway down its soft tips), or, where
    the lower row shows, where the lower row begins. Cut at the last bright sample of a coarse
    profile, 1-1.4 px of the upper teeth's tips rode down with the lower lip: a white wire
    along it when the mouth opened."""
    np.testing.assert_allclose(_split_at(_smile(rows)), edge, atol=0.35)
