"""The ends of the opened mouth of a photo avatar, as the eye sees them at wide open.

The opening is what turned dark when the jaw opened: the connected region of pixels darker than
at rest, under the middle of the lips. Along the mouth (in the face's axes, measured per side to
that side's inner lip corner) it must close into each corner as a tapering, rounded end: in the
outermost tenth before the inner corner it is far lower than in the middle. Before, the opening
ran on at nearly full height to the corners and past them (thin dark "horns" rising to the outer
lip corners on smiles, a straight near-vertical end on turned faces).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, P
from agenthuman_local.engine.photo import PhotoRenderer
from agenthuman_local.engine.photo_warp import JAW_DROP_FH
from tests import photos

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Height of the opening in the outer tenth of each side, as a share of the jaw's drop.
MAX_END_HEIGHT = 0.2

FACES = {
    "astronaut": photos.astronaut,
    "astronaut mirrored": lambda: np.ascontiguousarray(photos.astronaut()[:, ::-1]),
    "grace": photos.grace_hopper,
    "grace mirrored": lambda: np.ascontiguousarray(photos.grace_hopper()[:, ::-1]),
}


@pytest.fixture(scope="module", params=list(FACES))
def renderer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return photos.renderer(FACES[request.param](), tmp_path_factory.mktemp("avatars") / "avat_face")


def _frames(r: PhotoRenderer) -> tuple[np.ndarray, np.ndarray]:
    p = torch.zeros(2, N_PARAMS)
    p[1, P.JAW] = 1.0
    rest, wide = r.render(p).numpy().astype(np.float32)
    return rest, wide


def _opening(r: PhotoRenderer, rest: np.ndarray, wide: np.ndarray) -> tuple[np.ndarray, ...]:
    """The opening's pixels: their place along the mouth (−1 / +1 at the inner lip corners) and
    each side's half width in pixels."""
    a, b = rest @ LUMA, wide @ LUMA
    dark = ((b < a - 30) & (b < 0.7 * a)).astype(np.uint8)
    # Lines a pixel or two thin (a lip's own dark edge carried down with it) are no opening.
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, label = cv2.connectedComponents(dark, connectivity=8)
    geo = r.geometry
    x0, y0 = r.crop_box[:2]
    mx, my = geo.mouth + (x0, y0)
    # Every dark region under the middle of the lips (a lit tongue may part the cavity).
    under = np.unique(label[int(my) + 1 : int(my + JAW_DROP_FH * geo.fh), int(mx)])
    under = under[under > 0]
    assert len(under), "the mouth did not open under the middle of the lips"
    ys, xs = np.nonzero(np.isin(label, under))
    along, _ = geo.local(np.stack([xs - x0, ys - y0], 1).astype(np.float32))
    corners = geo.local(geo.vertices[[geo.inner_upper[0], geo.inner_upper[-1]]])[0]
    left, right = -float(corners.min()), float(corners.max())
    return np.where(along < 0, along / left, along / right), left, right


def _end_heights(r: PhotoRenderer, u: np.ndarray, left: float, right: float) -> tuple[float, ...]:
    """The opening's mean height in the outer tenth of each side before its inner lip corner,
    as a share of the jaw's drop at wide open."""
    drop = JAW_DROP_FH * r.geometry.fh
    return (
        float(((u > -1.0) & (u < -0.9)).sum()) / (0.1 * left) / drop,
        float(((u < 1.0) & (u > 0.9)).sum()) / (0.1 * right) / drop,
    )


def test_the_open_mouth_tapers_into_its_corners(renderer: PhotoRenderer) -> None:
    rest, wide = _frames(renderer)
    u, left, right = _opening(renderer, rest, wide)
    # It is open: in the middle, dark for at least a third of the drop (teeth and the lit
    # tongue are not dark).
    middle = float((np.abs(u) < 0.3).sum()) / (0.3 * (left + right))
    assert middle > 0.33 * JAW_DROP_FH * renderer.geometry.fh
    ends = _end_heights(renderer, u, left, right)
    assert max(ends) < MAX_END_HEIGHT, ends


def test_a_horn_at_a_corner_is_seen(renderer: PhotoRenderer) -> None:
    """Negative control: a dark wedge painted from the opening up to the image-right outer lip
    corner (what the old renderer drew) fails the check."""
    rest, wide = _frames(renderer)
    geo = renderer.geometry
    x0, y0 = renderer.crop_box[:2]
    inner = geo.vertices[geo.inner_upper[-1]] + (x0, y0)
    outer = geo.vertices[geo.outer_upper[-1]] + (x0, y0)
    towards = geo.mouth + (x0, y0) + 0.15 * geo.fh * geo.ey
    start = inner + 0.35 * (towards - inner)
    wedge = np.array([start - 0.04 * geo.fh * geo.ex, outer, start + 0.06 * geo.fh * geo.ey])
    horned = wide.copy()
    cv2.fillPoly(horned, [np.round(wedge).astype(np.int32)], (40.0, 10.0, 12.0))
    _, right = _end_heights(renderer, *_opening(renderer, rest, horned))
    assert right >= MAX_END_HEIGHT
