"""The gallery's zoom rows for a photo avatar: real enlargements of the mouth and of each eye,
cropped from frames rendered at the zoom size, on the rig's mouth and eyes in every pose."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import P
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer, open_photo_renderer
from agenthuman_local.gallery import CELL, LABEL_PX, ZOOM_FRAME, Zoom, _crop, main, poses, zooms
from tests import photos


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> PhotoRenderer:
    path = tmp_path_factory.mktemp("gallery") / "astronaut"
    save_avatar(prepare_face(photos.encode(photos.astronaut())), path)
    r = open_photo_renderer(path, ZOOM_FRAME)
    assert isinstance(r, PhotoRenderer)
    return r


def _inside(points: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return bool(((points[:, 0] > x0) & (points[:, 0] < x1)).all()) and bool(
        ((points[:, 1] > y0) & (points[:, 1] < y1)).all()
    )


def _centre(box: tuple[int, int, int, int]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


@pytest.mark.parametrize("name", [name for name, _ in poses()])
def test_zoom_cells_are_on_the_rigs_mouth_and_eyes_in_every_pose(big: PhotoRenderer, name) -> None:
    pose = dict(poses())[name]
    mouth, eyes = zooms(big, pose)
    assert mouth.label.startswith("mouth") and eyes.label.startswith("eyes")
    # Real enlargements: at least twice, and each crop a whole-factor part of the cell.
    assert mouth.factor >= 3 and eyes.factor >= 3
    (box,) = mouth.boxes
    assert (box[2] - box[0]) * mouth.factor <= CELL.width
    rig = big.rig
    dx, dy = big.head_offset(pose.tolist())
    shift = np.array([dx, dy])
    lips = np.concatenate([rig.points(rig.outer_upper_lip), rig.points(rig.outer_lower_lip)])
    assert _inside(lips + shift, box)
    # Centred on the mouth: across, on the corners' midpoint; down, between the upper lip and
    # the lower lip's place when open.
    centre = _centre(box)
    assert abs(centre[0] - (rig.mouth_corners[:, 0].mean() + dx)) <= 1.0
    assert lips[:, 1].min() + dy < centre[1] < lips[:, 1].max() + dy + 0.1 * rig.face_height
    assert len(eyes.boxes) == 2
    for (upper, lower), eye_box in zip(rig.eye_lids, eyes.boxes, strict=True):
        contour = np.concatenate([rig.points(upper), rig.points(lower)]) + shift
        assert _inside(contour, eye_box)
        assert np.abs(_centre(eye_box) - contour.mean(0)).max() <= 1.0


def test_the_zoom_follows_the_head(big: PhotoRenderer) -> None:
    rest = dict(poses())["rest"]
    turned = rest.clone()
    turned[P.TX], turned[P.TY], turned[P.ROLL] = 1.0, -1.0, 0.5
    moved = np.array(big.head_offset(turned.tolist()))
    assert np.abs(moved).min() > 3.0
    (a,), (b,) = zooms(big, rest)[0].boxes, zooms(big, turned)[0].boxes
    assert np.abs(_centre(b) - _centre(a) - moved).max() <= 1.0


def test_a_zoom_cell_is_the_rendered_pixels_enlarged(big: PhotoRenderer) -> None:
    pose = dict(poses())["wide open"]
    frame = big.render(pose.unsqueeze(0)).numpy()[0]
    mouth = zooms(big, pose)[0]
    cell = _crop(frame, mouth)
    assert cell.shape == (CELL.height, CELL.width, 3)
    x0, y0, x1, y1 = mouth.boxes[0]
    k = mouth.factor
    expected = frame[y0:y1, x0:x1].repeat(k, axis=0).repeat(k, axis=1)
    assert np.array_equal(cell[: expected.shape[0], : expected.shape[1]], expected)


def test_the_mouth_cell_shows_the_mouth_opening(big: PhotoRenderer) -> None:
    rest, wide = dict(poses())["rest"], dict(poses())["wide open"]
    frames = big.render(torch.stack([rest, wide])).numpy()
    mouth = zooms(big, rest)[0]
    change = np.abs(_crop(frames[1], mouth).astype(int) - _crop(frames[0], mouth)).mean()
    # Negative control: the same crop half a face higher (the eyes and brows) barely changes.
    x0, y0, x1, y1 = mouth.boxes[0]
    up = round(0.5 * big.rig.face_height)
    higher = Zoom("forehead", ((x0, y0 - up, x1, y1 - up),), mouth.factor)
    still = np.abs(_crop(frames[1], higher).astype(int) - _crop(frames[0], higher)).mean()
    assert change > 8.0 and still < 1.0


def test_a_blink_shows_in_the_eye_cells(big: PhotoRenderer) -> None:
    rest = dict(poses())["rest"]
    shut = rest.clone()
    shut[P.BLINK] = 1.0
    frames = big.render(torch.stack([rest, shut])).numpy()
    eyes = zooms(big, rest)[1]
    half = CELL.width // 2
    diff = np.abs(_crop(frames[1], eyes).astype(int) - _crop(frames[0], eyes)).mean(axis=(0, 2))
    assert diff[:half].mean() > 3.0 and diff[half:].mean() > 3.0


def test_the_sheet_with_a_photo_has_its_zoom_rows(tmp_path: Path) -> None:
    image = tmp_path / "astronaut.png"
    image.write_bytes(photos.encode(photos.astronaut(), ".png"))
    out = tmp_path / "sheet.png"
    assert main([str(out), "--image", str(image)]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None
    # Two shipped avatars, the photo, its mouth and its eyes.
    assert sheet.shape == (LABEL_PX + 5 * (CELL.height + LABEL_PX), len(poses()) * CELL.width, 3)
