"""The jaw's warp of a photo avatar: each point of the lower face is drawn where the jaw moves it.

A frame samples the photo at p − d(p), so d must be the jaw's move read backwards (where each
output pixel comes from), not the skin's move read at the output pixel. Read forwards, a point
low on the lower lip takes the larger move of the skin under it: where the lip is thin, towards
its corners, the lip dropped up to a sixth of the jaw's drop too far, and the opening ended in a
straight cut instead of closing into the corner.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, P
from agenthuman_local.engine.photo import PhotoRenderer
from agenthuman_local.engine.photo_warp import (
    FACE_PARAMS,
    JAW_DROP_FH,
    MeshGeometry,
    build_fields,
    vertex_moves,
)
from agenthuman_local.engine.rig import UNDER_NOSE
from tests import photos

FACES = {
    "astronaut": photos.astronaut,
    "grace": photos.grace_hopper,
    "grace rolled": lambda: photos.rolled(photos.grace_hopper(), 15.0),
}


@pytest.fixture(scope="module", params=list(FACES))
def geometry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("avatars") / "avat_face"
    return photos.renderer(FACES[request.param](), path).geometry


def _sample(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The field [H, W, 2] at fractional pixels `pts` (N, 2), bilinear."""
    xs, ys = (np.ascontiguousarray(pts[:, i : i + 1], np.float32) for i in (0, 1))
    return np.stack(
        [
            cv2.remap(np.ascontiguousarray(field[..., c]), xs, ys, cv2.INTER_LINEAR)[:, 0]
            for c in (0, 1)
        ],
        axis=1,
    )


def _landing_error(geo: MeshGeometry, field: np.ndarray, ids: list[int], k: int) -> np.ndarray:
    """How far from where it came from the output pixel at each vertex's moved place samples
    the photo, in jaw drops."""
    moves = vertex_moves(geo)[0][k]
    start = geo.vertices[ids]
    target = start + moves[ids]
    back = target - _sample(field, target)
    return np.hypot(*(back - start).T) / (JAW_DROP_FH * geo.fh)


@pytest.mark.parametrize("param", ["JAW_WIDE", "JAW_NARROW"])
def test_the_lower_lip_is_drawn_where_the_jaw_moves_it(geometry: MeshGeometry, param: str) -> None:
    k = FACE_PARAMS.index(param)
    field = build_fields(geometry).face[k].numpy()
    for contour in (geometry.inner_lower, geometry.outer_lower):
        err = _landing_error(geometry, field, list(contour[1:-1]), k)
        assert err.max() < 0.03, f"{param}: lip points land {np.round(err, 2)} jaw drops off"


def test_a_forward_read_field_is_caught(geometry: MeshGeometry) -> None:
    """Negative control: the skin's moves read at the output pixel (the old field) miss."""
    from agenthuman_local.engine.photo_warp import piecewise_affine

    below = vertex_moves(geometry)[0][0]
    forward = piecewise_affine(
        geometry.vertices, geometry.triangles, below, geometry.height, geometry.width
    )
    err = _landing_error(geometry, forward, list(geometry.outer_lower[1:-1]), 0)
    assert err.max() > 0.06


@pytest.fixture(scope="module", params=[-20.0, 20.0])
def rolled_renderer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("avatars") / "avat_rolled"
    return photos.renderer(photos.rolled(photos.grace_hopper(), request.param), path)


def test_the_jaw_moves_nothing_above_the_nose(rolled_renderer: PhotoRenderer) -> None:
    """A tilted head turns the face's axes: the jaw's field around the mouth must stay in the
    columns the mouth owns, or beside it the nose and eyes drop with the jaw."""
    r = rolled_renderer
    p = torch.zeros(2, N_PARAMS)
    p[1, P.JAW] = 1.0
    rest, *opened = r.render(p).numpy().astype(np.float32)
    # Above the nose in the face's own axes, out to the eyes' middles (further out, the cheeks
    # by the jaw's hinges move a little with it, as they always have).
    geo, nose = r.geometry, r.rig.points(UNDER_NOSE)
    h, w = rest.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    along = (x - nose[0]) * geo.ex[0] + (y - nose[1]) * geo.ex[1]
    down = (x - nose[0]) * geo.ey[0] + (y - nose[1]) * geo.ey[1]
    above = (np.abs(along) < 0.3 * geo.fw) & (down < -0.08 * geo.fh) & (down > -0.6 * geo.fh)
    for frame in opened:
        diff = np.abs(frame - rest).max(axis=-1)[above]
        assert diff.max() <= 12, f"moved by up to {diff.max():.0f} above the nose"


def test_the_opening_stops_where_the_split_climbs_into_a_curled_corner(geometry) -> None:
    """Perry laughing: the split line under his teeth climbs into his left corner at up to 1.7
    down per along, and the drop there opened a dark horn a pixel wide up beside his teeth. The
    opening's reach on a side stops where the split starts to climb steeper than 1:1 (at
    least 0.6 of the way to the corner); a mouth without a curl reaches its corners."""
    import dataclasses

    from agenthuman_local.engine.photo_jaw import opening_reach

    geo = geometry
    corners = geo.local(geo.vertices[[geo.inner_upper[0], geo.inner_upper[-1]]])[0]
    assert opening_reach(geo) == pytest.approx((-float(corners.min()), float(corners.max())))
    # Curl the image-left end: past 0.75 of the way to the corner the split climbs 2:1.
    along, down = geo.local(np.stack([geo.split_x, geo.split_y], 1))
    left = -float(corners.min())
    start = 0.75 * left
    climb = np.where(along < -start, 2.0 * (-along - start), 0.0)
    moved = geo.mouth + (along[:, None] * geo.ex) + ((down - climb)[:, None] * geo.ey)
    curled = dataclasses.replace(geo, split_x=moved[:, 0], split_y=moved[:, 1])
    reach_left, reach_right = opening_reach(curled)
    assert 0.6 * left <= reach_left <= start + 1e-3
    assert reach_right == pytest.approx(float(corners.max()))


@pytest.mark.parametrize("face", ["grace", "grace rolled"])
def test_the_split_goes_where_closed_lips_meet_under_a_mesh_put_high(
    face: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Walter (a turned head, a moustache): the mesh put his inner lips up to 6 px over the
    dark line where his lips meet, and the mouth opened across his upper lip with that line
    still showing under it. With the mesh's inner lips moved 0.025 face heights up on Grace,
    the split is found back within 0.4 of the shift of where the true rig puts it (median over
    the pairs); without the photo to look at it stays the whole shift off."""
    import dataclasses

    from agenthuman_local.engine.photo_geometry import MeshGeometry

    r = photos.renderer(FACES[face](), tmp_path_factory.mktemp("avatars") / "avat_face")
    x0, y0, w, h = r.crop_box
    rest = r.render(torch.zeros(1, N_PARAMS)).numpy()[0][y0 : y0 + h, x0 : x0 + w]
    true = MeshGeometry.from_rig(r.rig, x0, y0, w, h, rest)
    shift = 0.025 * r.rig.face_height
    lm = r.rig.landmarks.copy()
    lm[list(r.rig.inner_upper_lip[1:-1]) + list(r.rig.inner_lower_lip[1:-1]), 1] -= shift
    high = dataclasses.replace(r.rig, landmarks=lm)
    pairs = slice(2, -2)  # the split's points past the inner corners (and the outer corners)
    found = np.abs(MeshGeometry.from_rig(high, x0, y0, w, h, rest).split_y - true.split_y)
    blind = np.abs(MeshGeometry.from_rig(high, x0, y0, w, h, None).split_y - true.split_y)
    assert np.median(blind[pairs]) > 0.9 * shift
    assert np.median(found[pairs]) < 0.4 * shift, found[pairs]
