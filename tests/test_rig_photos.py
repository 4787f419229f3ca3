"""The mesh rig on two real portraits against points marked by hand, and on transformed copies
(mirror, ±15° roll, crop, downscales, exposure).

The marks were read off 10–24× zooms of each photo with a pixel grid and no overlay (image
pixels, pixel i spanning [i, i + 1)): the corners where the lips meet, and at the mouth's centre
the top of the upper lip, the inner edges of both lips and the bottom of the lower lip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest

from agenthuman_local.engine.faces import rig_photo
from agenthuman_local.engine.rig import MeshRig
from tests import photos

Marks = dict[str, tuple[float, float]]
# The astronaut smiles with her upper teeth showing: the inner lip edges are the teeth's.
ASTRONAUT: Marks = {
    "left_corner": (202.5, 139.5),
    "right_corner": (244.5, 140.5),
    "upper_top": (223.0, 139.5),
    "upper_inner": (223.0, 142.4),
    "lower_inner": (223.0, 149.2),
    "lower_bottom": (223.0, 153.5),
}
# Grace Hopper's lips are closed: both inner edges are the dark line between them.
GRACE_HOPPER: Marks = {
    "left_corner": (229.0, 279.8),
    "right_corner": (303.0, 275.5),
    "upper_top": (266.0, 272.0),
    "upper_inner": (266.0, 279.5),
    "lower_inner": (266.0, 279.5),
    "lower_bottom": (266.0, 289.0),
}
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], Marks]] = {
    "astronaut": (photos.astronaut, ASTRONAUT),
    "grace_hopper": (photos.grace_hopper, GRACE_HOPPER),
}
MARK_TOLERANCE_FW = 0.03  # of the face width, cheek to cheek
CONSISTENT_FW = 0.04  # a transformed copy's points, mapped back, vs the original's


def rig_points(rig: MeshRig) -> dict[str, np.ndarray]:
    """The rig's points that the hand marks name."""
    mid = len(rig.inner_upper_lip) // 2
    left, right = rig.lip_corners
    return {
        "left_corner": left,
        "right_corner": right,
        "upper_top": rig.points(rig.outer_upper_lip[mid]),
        "upper_inner": rig.points(rig.inner_upper_lip[mid]),
        "lower_inner": rig.points(rig.inner_lower_lip[mid]),
        "lower_bottom": rig.points(rig.outer_lower_lip[mid]),
    }


def _edge_to_index(m: np.ndarray) -> np.ndarray:
    """A 2×3 affine on pixel-edge coordinates as OpenCV's (pixel-centre) warpAffine wants it."""
    out = m.copy()
    out[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


def transforms(rgb: np.ndarray) -> Iterator[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(name, image, 2×3 affine original → transformed pixels, whether left and right swap)."""
    h, w = rgb.shape[:2]
    same = np.array([[1.0, 0, 0], [0, 1, 0]])
    yield "mirror", np.ascontiguousarray(rgb[:, ::-1]), np.array([[-1.0, 0, w], [0, 1, 0]]), True
    for degrees in (15, -15):
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        rot = np.array([[c, -s], [s, c]])
        centre = np.array([w / 2, h / 2])
        m = np.concatenate([rot, (centre - rot @ centre)[:, None]], axis=1)
        out = cv2.warpAffine(rgb, _edge_to_index(m), (w, h), borderMode=cv2.BORDER_REFLECT)
        yield f"roll{degrees:+d}", out, m, False
    x0, y0 = w // 5, h // 10
    crop = np.ascontiguousarray(rgb[y0 : y0 + int(h * 0.6), x0 : x0 + int(w * 0.6)])
    yield "crop", crop, np.array([[1.0, 0, -x0], [0, 1, -y0]]), False
    for scale in (0.5, 0.3):
        size = (round(w * scale), round(h * scale))
        out = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        yield f"down{scale}", out, np.array([[size[0] / w, 0, 0], [0, size[1] / h, 0]]), False
    yield "dark", (rgb.astype(np.float32) * 0.5).astype(np.uint8), same, False
    yield "bright", (255 * (rgb / 255.0) ** 0.6).astype(np.uint8), same, False


def apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:, :2].T + m[:, 2]


@pytest.fixture(scope="module", params=sorted(PHOTOS))
def photo(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, Marks, MeshRig]:
    load, marks = PHOTOS[request.param]
    rgb = load()
    return request.param, rgb, marks, rig_photo(rgb)


def test_lip_points_lie_on_the_hand_marks(photo: tuple[str, np.ndarray, Marks, MeshRig]) -> None:
    name, _, marks, rig = photo
    found = rig_points(rig)
    for key, mark in marks.items():
        miss = float(np.hypot(*(found[key] - mark))) / rig.face_width
        assert miss <= MARK_TOLERANCE_FW, f"{name} {key}: {miss:.3f} face widths from the mark"


def test_at_rest_flags(photo: tuple[str, np.ndarray, Marks, MeshRig]) -> None:
    name, _, _, rig = photo
    smiling = name == "astronaut"  # her teeth show between parted lips; Grace's lips are closed
    assert rig.lips_apart_at_rest is smiling
    assert rig.teeth_at_rest is smiling


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def test_a_black_and_white_smile_shows_its_teeth() -> None:
    rig = rig_photo(_grey(photos.astronaut()))
    assert rig.lips_apart_at_rest and rig.teeth_at_rest


def test_black_and_white_lips_apart_over_no_teeth_show_none() -> None:
    """Without colour every pixel is as unsaturated as teeth: lips parted over a dark mouth
    (the astronaut's teeth painted over in her lips' grey) must not read as teeth."""
    rgb = _grey(photos.astronaut())
    rig = rig_photo(rgb)
    inner = np.concatenate([rig.points(rig.inner_upper_lip), rig.points(rig.inner_lower_lip)[::-1]])
    lips = np.zeros(rgb.shape[:2], np.uint8)
    outer = np.concatenate([rig.points(rig.outer_upper_lip), rig.points(rig.outer_lower_lip)[::-1]])
    cv2.fillPoly(lips, [np.round(outer - 0.5).astype(np.int32)], 1)
    mouth = np.zeros_like(lips)
    cv2.fillPoly(mouth, [np.round(inner - 0.5).astype(np.int32)], 1)
    lip_grey = np.median(rgb[(lips > 0) & (mouth == 0)], axis=0)
    rgb[cv2.dilate(mouth, np.ones((3, 3), np.uint8)) > 0] = (0.8 * lip_grey).astype(np.uint8)
    rig = rig_photo(rgb)
    assert rig.lips_apart_at_rest and not rig.teeth_at_rest


def test_transformed_copies_rig_consistently(
    photo: tuple[str, np.ndarray, Marks, MeshRig],
) -> None:
    name, rgb, _, rig = photo
    fw = rig.face_width
    original = rig_points(rig)
    for tname, image, m, swaps in transforms(rgb):
        copy = rig_photo(image)
        back = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        points = {k: apply(back, v) for k, v in rig_points(copy).items()}
        if swaps:  # image-left is the other corner after a mirror
            points["left_corner"], points["right_corner"] = (
                points["right_corner"],
                points["left_corner"],
            )
        scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
        assert copy.face_width / scale == pytest.approx(fw, rel=0.05), tname
        for key, p in points.items():
            miss = float(np.hypot(*(p - original[key]))) / fw
            assert miss <= CONSISTENT_FW, f"{name} {tname} {key}: {miss:.3f} fw from the original"
        # Contours still run image left to right, eyes above the mouth, in the copy.
        assert copy.points(copy.outer_upper_lip[0])[0] < copy.points(copy.outer_upper_lip[-1])[0]
        assert copy.irises[0, 0, 0] < copy.irises[1, 0, 0]


def test_marks_are_not_met_by_a_shifted_rig(photo: tuple[str, np.ndarray, Marks, MeshRig]) -> None:
    """Negative control: the same rig moved 0.04 face widths down misses the marks."""
    _, _, marks, rig = photo
    moved = rig.scaled(1.0, 0.0, 0.04 * rig.face_width)
    found = rig_points(moved)
    misses = [float(np.hypot(*(found[k] - marks[k]))) / rig.face_width for k in marks]
    assert max(misses) > MARK_TOLERANCE_FW
