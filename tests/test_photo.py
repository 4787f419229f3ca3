"""The photo avatar renderer on the astronaut photo: shapes, determinism, and what moves where."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import MAX_CROP_PX, PhotoRenderer
from agenthuman_local.engine.photo_fields import JAW_DROP_ED


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rgb = skimage.data.astronaut()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path = tmp_path_factory.mktemp("avatars") / "avat_astronaut"
    save_avatar(prepare_face(buf.tobytes()), path)
    return path


@pytest.fixture(scope="module")
def renderer(avatar_dir: Path) -> PhotoRenderer:
    return PhotoRenderer(avatar_dir, FrameSize(960, 720))


def params(**values: float) -> torch.Tensor:
    p = torch.zeros(1, N_PARAMS)
    for name, value in values.items():
        p[0, P[name.upper()]] = value
    return p


def luminance(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0


def mouth_box(r: PhotoRenderer) -> tuple[slice, slice]:
    rig, ed = r.rig, r.rig.eye_distance
    rows = slice(int(rig.lip_y - 0.2 * ed), int(rig.lip_y + 0.6 * ed))
    cols = slice(int(rig.mouth_x - rig.mouth_width / 2), int(rig.mouth_x + rig.mouth_width / 2))
    return rows, cols


def test_shapes_dtype_and_batch(renderer: PhotoRenderer) -> None:
    one = renderer.render(params())
    assert one.shape == (1, 720, 960, 3) and one.dtype == torch.uint8
    assert one.device.type == "cpu"
    batch = renderer.render(torch.rand(5, N_PARAMS))
    assert batch.shape == (5, 720, 960, 3)
    with pytest.raises(ValueError, match="params"):
        renderer.render(torch.zeros(2, N_PARAMS + 1))


@pytest.mark.parametrize("size", [FrameSize(720, 1280), FrameSize(720, 720), FrameSize(1280, 720)])
def test_other_aspect_ratios_keep_the_crop_small_and_inside(avatar_dir: Path, size) -> None:
    r = PhotoRenderer(avatar_dir, size)
    x0, y0, w, h = r.crop_box
    assert w <= MAX_CROP_PX and h <= MAX_CROP_PX
    assert 0 <= x0 and x0 + w <= size.width and 0 <= y0 and y0 + h <= size.height
    frame = r.render(params(jaw=0.6))
    assert frame.shape == (1, size.height, size.width, 3)
    # Framed sensibly: the mouth is in the middle third horizontally, the eyes in the top half.
    assert size.width / 3 < r.rig.mouth_x < 2 * size.width / 3
    assert r.rig.left_eye.cy < size.height / 2


def test_a_close_up_photo_is_zoomed_out_and_the_gap_filled(tmp_path: Path) -> None:
    rgb = skimage.data.astronaut()[40:230, 130:320]  # the face fills this crop
    ok, buf = cv2.imencode(".png", cv2.cvtColor(cv2.resize(rgb, (760, 760)), cv2.COLOR_RGB2BGR))
    assert ok
    save_avatar(prepare_face(buf.tobytes()), tmp_path / "close")
    r = PhotoRenderer(tmp_path / "close", FrameSize(960, 720))
    _, _, w, h = r.crop_box
    assert w <= MAX_CROP_PX and h <= MAX_CROP_PX
    frame = r.render(params(jaw=1.0))[0].numpy()
    # The uncovered margin is a blurred fill, not black.
    assert frame[:, :40].mean() > 60


def test_rest_frame_is_the_background_and_output_is_deterministic(renderer: PhotoRenderer) -> None:
    rest = renderer.render(params())
    assert torch.equal(rest[0], renderer.background.cpu())
    p = torch.rand(3, N_PARAMS, generator=torch.Generator().manual_seed(3))
    a, b = renderer.render(p), renderer.render(p)
    assert torch.equal(a, b)
    # A frame does not depend on what else is in its batch.
    single = renderer.render(p[1:2])
    assert (single[0].int() - a[1].int()).abs().max() <= 1


def test_jaw_opens_a_dark_mouth_and_moves_only_the_face(renderer: PhotoRenderer) -> None:
    rest, opened = (f.numpy() for f in renderer.render(torch.cat([params(), params(jaw=1.0)])))
    rows, cols = mouth_box(renderer)
    dark_rest = (luminance(rest[rows, cols]) < 0.2).mean()
    dark_open = (luminance(opened[rows, cols]) < 0.2).mean()
    assert dark_rest < 0.02 and dark_open > 0.15
    # The inner mouth is shaded, not a flat fill, and reddish rather than grey.
    inner = opened[rows, cols][luminance(opened[rows, cols]) < 0.2].astype(np.float32)
    assert inner[:, 0].mean() > inner[:, 1].mean()
    assert luminance(opened[rows, cols])[luminance(opened[rows, cols]) < 0.2].std() > 0.01
    # Outside the crop nothing changes at all.
    x0, y0, w, h = renderer.crop_box
    outside = np.ones(rest.shape[:2], bool)
    outside[y0 : y0 + h, x0 : x0 + w] = False
    assert np.array_equal(rest[outside], opened[outside])
    # Far from the mouth inside the crop (eyes, forehead): unchanged.
    eyes_y = int(renderer.rig.left_eye.y)
    assert np.abs(rest[y0:eyes_y].astype(int) - opened[y0:eyes_y].astype(int)).max() <= 1


def test_upper_lip_stays_while_lower_lip_and_chin_move_down(renderer: PhotoRenderer) -> None:
    rest, opened = (f.numpy() for f in renderer.render(torch.cat([params(), params(jaw=1.0)])))
    rig, ed = renderer.rig, renderer.rig.eye_distance
    x = int(rig.mouth_x)
    above = slice(int(rig.lip_y - 0.3 * ed), int(rig.lip_y - 2))
    band = slice(x - 8, x + 8)
    diff = np.abs(rest[above, band].astype(int) - opened[above, band].astype(int))
    assert diff.mean() < 2.0
    # The chin region shows the same picture shifted down by about the jaw drop.
    rows = slice(int(rig.lip_y + 0.35 * ed), int(rig.chin_y + 0.1 * ed))
    strip_open = luminance(opened)[rows, x - 10 : x + 10].mean(axis=1)
    lum_rest = luminance(rest)[:, x - 10 : x + 10].mean(axis=1)
    errors = {
        s: float(np.abs(lum_rest[rows.start - s : rows.stop - s] - strip_open).mean())
        for s in range(0, int(0.6 * ed))
    }
    shift = min(errors, key=errors.get)
    drop = JAW_DROP_ED * ed
    assert 0.6 * drop <= shift <= 1.1 * drop


@pytest.mark.parametrize(
    "extreme",
    [
        params(jaw=1.0),
        params(jaw=1.0, round=1.0, spread=1.0, brow=1.0, blink=1.0),
        params(jaw=1.0, tx=1.0, ty=-1.0, yaw=1.0, pitch=-1.0, roll=1.0, listen=1.0),
        params(jaw=3.0, tx=-5.0, roll=-5.0, brow=-3.0, closure=0.5),
    ],
)
def test_no_seam_at_the_crop_border(renderer: PhotoRenderer, extreme: torch.Tensor) -> None:
    frame = renderer.render(extreme)[0].int()
    bg = renderer.background.cpu().int()
    x0, y0, w, h = renderer.crop_box
    x1, y1 = x0 + w - 1, y0 + h - 1
    for edge in (
        (slice(y0, y1 + 1), x0),
        (slice(y0, y1 + 1), x1),
        (y0, slice(x0, x1 + 1)),
        (y1, slice(x0, x1 + 1)),
    ):
        assert (frame[edge] - bg[edge]).abs().max() <= 1
    # And just inside the border the picture still agrees with the background.
    ring = (frame[y0 + 3 : y1 - 2, x0 + 3] - bg[y0 + 3 : y1 - 2, x0 + 3]).abs()
    assert ring.float().mean() <= 2


def test_bilabial_closure_keeps_the_mouth_shut(renderer: PhotoRenderer) -> None:
    frames = renderer.render(torch.cat([params(jaw=0.6), params(jaw=0.6, closure=1.0)])).numpy()
    rows, cols = mouth_box(renderer)
    dark = [(luminance(f[rows, cols]) < 0.2).mean() for f in frames]
    assert dark[1] < 0.3 * dark[0]


def test_blink_covers_the_eyes(renderer: PhotoRenderer) -> None:
    frames = renderer.render(torch.cat([params(), params(blink=0.5), params(blink=1.0)])).numpy()
    dark = []
    for f in frames:
        total = 0.0
        for eye in (renderer.rig.left_eye, renderer.rig.right_eye):
            box = f[int(eye.y) : int(eye.y + eye.h), int(eye.x) : int(eye.x + eye.w)]
            total += float((luminance(box) < 0.3).mean())
        dark.append(total)
    # The dark iris and pupil disappear under the lids, partly at half a blink.
    assert dark[0] > 0.05
    assert dark[2] < 0.4 * dark[0]
    assert dark[2] < dark[1] < dark[0]


def test_missing_avatar_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image.jpg"):
        PhotoRenderer(tmp_path, FrameSize(960, 720))


@pytest.mark.parametrize("roll", [-1.5, 1.5])
def test_head_motion_alone_never_opens_the_mouth(renderer: PhotoRenderer, roll: float) -> None:
    still = renderer.render(params())[0].numpy()
    moved = renderer.render(params(tx=0.5, ty=-0.5, yaw=1.0, pitch=1.0, roll=roll))[0].numpy()
    rows, cols = mouth_box(renderer)
    wide = slice(cols.start - 20, cols.stop + 20)
    dark_still = (luminance(still[rows, wide]) < 0.2).sum()
    dark_moved = (luminance(moved[rows, wide]) < 0.2).sum()
    assert dark_moved <= dark_still + 3
    # The head did move: the mouth region is not the same picture.
    assert np.abs(still[rows, wide].astype(int) - moved[rows, wide].astype(int)).mean() > 2


@pytest.mark.parametrize("size", [FrameSize(960, 720), FrameSize(720, 720), FrameSize(320, 240)])
def test_random_and_out_of_range_params_never_break_the_border(avatar_dir: Path, size) -> None:
    r = PhotoRenderer(avatar_dir, size)
    p = torch.rand(16, N_PARAMS, generator=torch.Generator().manual_seed(7)) * 3 - 1
    frames = r.render(p).int()
    bg = r.background.cpu().int()
    x0, y0, w, h = r.crop_box
    ring = torch.ones(size.height, size.width, dtype=torch.bool)
    ring[y0 + 1 : y0 + h - 1, x0 + 1 : x0 + w - 1] = False  # everything but the crop's inside
    assert (frames[:, ring] - bg[ring]).abs().max() <= 1
