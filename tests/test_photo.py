"""The photo avatar renderer (mesh rig) on the astronaut photo: shapes, determinism, what moves
where; and the legacy renderer still drawing a version-1 (Haar) rig."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import MAX_CROP_PX, PhotoRenderer, open_photo_renderer
from agenthuman_local.engine.photo_legacy import LegacyPhotoRenderer
from agenthuman_local.engine.photo_warp import JAW_DROP_FH
from agenthuman_local.engine.rig import MeshRig
from agenthuman_local.engine.rig_haar import detect_faces, equalised_gray, find_rig
from tests import photos
from tests.photos import luminance, params


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("avatars") / "avat_astronaut"
    save_avatar(prepare_face(photos.encode(photos.astronaut())), path)
    return path


@pytest.fixture(scope="module")
def renderer(avatar_dir: Path) -> PhotoRenderer:
    r = open_photo_renderer(avatar_dir, FrameSize(960, 720))
    assert isinstance(r, PhotoRenderer)
    return r


def mouth_box(r: PhotoRenderer) -> tuple[slice, slice]:
    x0, y0, x1, y1 = r.mouth_region([0.0] * N_PARAMS)
    return slice(y0, y1), slice(x0, x1)


def lip_y(r: PhotoRenderer, which: tuple[int, ...]) -> float:
    return float(r.rig.points(which)[:, 1].mean())


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
    # Framed sensibly: the mouth in the middle third horizontally, the eyes in the top half.
    mouth_x = float(r.rig.mouth_corners[:, 0].mean())
    assert size.width / 3 < mouth_x < 2 * size.width / 3
    assert float(r.rig.irises[:, 0, 1].mean()) < size.height / 2


def test_a_close_up_photo_is_zoomed_out_and_the_gap_filled(tmp_path: Path) -> None:
    rgb = photos.astronaut()[40:230, 130:320]  # the face fills this crop
    save_avatar(prepare_face(photos.encode(cv2.resize(rgb, (760, 760)), ".png")), tmp_path / "c")
    r = PhotoRenderer(tmp_path / "c", FrameSize(960, 720))
    _, _, w, h = r.crop_box
    assert w <= MAX_CROP_PX and h <= MAX_CROP_PX
    frame = r.render(params(jaw=1.0))[0].numpy()
    assert frame[:, :40].mean() > 60  # the uncovered margin is a blurred fill, not black


def test_rest_frame_is_the_background_and_output_is_deterministic(renderer: PhotoRenderer) -> None:
    rest = renderer.render(params())
    assert torch.equal(rest[0], renderer.background.cpu())
    p = torch.rand(3, N_PARAMS, generator=torch.Generator().manual_seed(3))
    a, b = renderer.render(p), renderer.render(p)
    assert torch.equal(a, b)
    single = renderer.render(p[1:2])  # a frame does not depend on the rest of its batch
    assert (single[0].int() - a[1].int()).abs().max() <= 1


def test_jaw_opens_a_dark_mouth_between_the_lips_only(renderer: PhotoRenderer) -> None:
    rest, opened = (f.numpy() for f in renderer.render(torch.cat([params(), params(jaw=1.0)])))
    rows, cols = mouth_box(renderer)
    dark_rest = (luminance(rest[rows, cols]) < 0.2).mean()
    dark_open = (luminance(opened[rows, cols]) < 0.2).mean()
    assert dark_rest < 0.02 and dark_open > 0.1
    # The inner mouth is shaded, not a flat fill, and reddish rather than grey.
    inner = opened[rows, cols][luminance(opened[rows, cols]) < 0.2].astype(np.float32)
    assert inner[:, 0].mean() > inner[:, 1].mean()
    assert luminance(opened[rows, cols])[luminance(opened[rows, cols]) < 0.2].std() > 0.01
    # The new dark pixels all lie below the upper lip's inner edge, inside the mouth corners.
    new_dark = (luminance(opened) < 0.2) & ~(luminance(rest) < 0.2)
    ys, xs = np.nonzero(new_dark)
    upper = renderer.rig.points(renderer.rig.inner_upper_lip)
    corners = renderer.rig.mouth_corners
    near = np.abs(xs - corners[:, 0].mean()) < 0.45 * renderer.rig.face_width
    ys, xs = ys[near], xs[near]
    assert ys.min() >= upper[:, 1].min() - 2
    slack = 0.03 * renderer.rig.face_width  # a smile's own dark corners move with the lips
    assert corners[:, 0].min() - slack <= xs.min() and xs.max() <= corners[:, 0].max() + slack
    # Outside the crop nothing changes at all; above the eyes nothing changes.
    x0, y0, w, h = renderer.crop_box
    outside = np.ones(rest.shape[:2], bool)
    outside[y0 : y0 + h, x0 : x0 + w] = False
    assert np.array_equal(rest[outside], opened[outside])
    eyes_y = int(renderer.rig.irises[:, 0, 1].min() - 0.1 * renderer.rig.face_height)
    assert np.abs(rest[y0:eyes_y].astype(int) - opened[y0:eyes_y].astype(int)).max() <= 1


def test_upper_lip_stays_while_lower_lip_and_chin_move_down(renderer: PhotoRenderer) -> None:
    rest, opened = (f.numpy() for f in renderer.render(torch.cat([params(), params(jaw=1.0)])))
    rig, fh = renderer.rig, renderer.rig.face_height
    x = int(rig.mouth_corners[:, 0].mean())
    top = lip_y(renderer, rig.inner_upper_lip)
    above = slice(int(top - 0.12 * fh), int(top - 2))
    band = slice(x - 8, x + 8)
    diff = np.abs(rest[above, band].astype(int) - opened[above, band].astype(int))
    assert diff.mean() < 2.0
    # The chin shows the same picture shifted down by about the jaw drop.
    chin_y = float(rig.points(152)[1])
    rows = slice(int(lip_y(renderer, rig.outer_lower_lip) + 0.05 * fh), int(chin_y))
    strip_open = luminance(opened)[rows, x - 10 : x + 10].mean(axis=1)
    lum_rest = luminance(rest)[:, x - 10 : x + 10].mean(axis=1)
    errors = {
        s: float(np.abs(lum_rest[rows.start - s : rows.stop - s] - strip_open).mean())
        for s in range(0, int(0.3 * fh))
    }
    shift = min(errors, key=errors.get)
    drop = JAW_DROP_FH * fh
    assert 0.6 * drop <= shift <= 1.15 * drop


@pytest.mark.parametrize(
    "extreme",
    [
        params(jaw=1.0),
        params(jaw=1.0, round=1.0, spread=1.0, brow=1.0, blink=1.0),
        params(jaw=1.0, tx=1.0, ty=-1.0, yaw=1.0, pitch=-1.0, roll=1.0, listen=1.0),
        params(jaw=3.0, tx=-5.0, roll=-5.0, brow=-3.0, closure=0.5, blink=3.0),
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
    ring = (frame[y0 + 3 : y1 - 2, x0 + 3] - bg[y0 + 3 : y1 - 2, x0 + 3]).abs()
    assert ring.float().mean() <= 2


def test_bilabial_closure_keeps_the_mouth_shut(renderer: PhotoRenderer) -> None:
    frames = renderer.render(torch.cat([params(jaw=0.6), params(jaw=0.6, closure=1.0)])).numpy()
    rows, cols = mouth_box(renderer)
    dark = [(luminance(f[rows, cols]) < 0.2).mean() for f in frames]
    assert dark[1] < 0.3 * dark[0]


def _iris_darkness(r: PhotoRenderer, frame: np.ndarray) -> float:
    total = 0.0
    for upper, lower in r.rig.eye_lids:
        pts = np.concatenate([r.rig.points(upper), r.rig.points(lower)])
        (x0, y0), (x1, y1) = pts.min(0).astype(int), pts.max(0).astype(int) + 1
        total += float((luminance(frame[y0:y1, x0:x1]) < 0.3).mean())
    return total


def test_blink_slides_the_lids_over_the_eyes(renderer: PhotoRenderer) -> None:
    batch = torch.cat([params(), params(blink=0.5), params(blink=1.0)])
    frames = renderer.render(batch).numpy()
    dark = [_iris_darkness(renderer, f) for f in frames]
    # The dark iris and pupil disappear under the lids, partly at half a blink.
    assert dark[0] > 0.05
    assert dark[2] < 0.4 * dark[0]
    assert dark[2] < dark[1] < dark[0]
    # The closed lid is the photo's skin tone (the lid above the eye), not a dark or pale patch.
    rest, shut = frames[0], frames[2]
    for upper, lower in renderer.rig.eye_lids:
        up, lo = renderer.rig.points(upper), renderer.rig.points(lower)
        cx = int(up[:, 0].mean())
        y_top, y_lo = int(up[:, 1].min()), int(lo[:, 1].max())
        lid_rest = luminance(rest[y_top - 6 : y_top - 2, cx - 3 : cx + 3]).mean()
        lid_shut = luminance(shut[y_top + 1 : y_lo - 2, cx - 3 : cx + 3]).mean()
        assert 0.75 < lid_shut / lid_rest < 1.25


def test_missing_avatar_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image.jpg"):
        PhotoRenderer(tmp_path, FrameSize(960, 720))


@pytest.mark.parametrize("roll", [-1.5, 1.5])
def test_head_motion_alone_never_opens_the_mouth(renderer: PhotoRenderer, roll: float) -> None:
    still = renderer.render(params())[0].numpy()
    moved = renderer.render(params(tx=0.5, ty=-0.5, yaw=1.0, pitch=1.0, roll=roll))[0].numpy()
    rows, cols = mouth_box(renderer)
    pad = int(0.04 * renderer.rig.face_height)  # the head motion moves the whole mouth
    rows, wide = slice(rows.start - pad, rows.stop + pad), slice(cols.start - pad, cols.stop + pad)
    dark_still = (luminance(still[rows, wide]) < 0.2).sum()
    dark_moved = (luminance(moved[rows, wide]) < 0.2).sum()
    assert dark_moved <= dark_still + 3
    assert np.abs(still[rows, wide].astype(int) - moved[rows, wide].astype(int)).mean() > 2


@pytest.mark.parametrize("size", [FrameSize(960, 720), FrameSize(720, 720), FrameSize(320, 240)])
def test_random_and_out_of_range_params_never_break_the_border(avatar_dir: Path, size) -> None:
    r = PhotoRenderer(avatar_dir, size)
    p = torch.rand(16, N_PARAMS, generator=torch.Generator().manual_seed(7)) * 3 - 1
    frames = r.render(p).int()
    bg = r.background.cpu().int()
    x0, y0, w, h = r.crop_box
    ring = torch.ones(size.height, size.width, dtype=torch.bool)
    ring[y0 + 1 : y0 + h - 1, x0 + 1 : x0 + w - 1] = False
    assert (frames[:, ring] - bg[ring]).abs().max() <= 1


def test_a_version_1_rig_is_drawn_by_the_legacy_renderer(tmp_path: Path) -> None:
    rgb = photos.astronaut()
    faces = detect_faces(equalised_gray(rgb))
    assert faces
    save_avatar(prepare_face(photos.encode(rgb)), tmp_path / "old")
    (tmp_path / "old" / "rig.json").write_text(find_rig(rgb, faces[0]).to_json())
    r = open_photo_renderer(tmp_path / "old", FrameSize(640, 480))
    assert isinstance(r, LegacyPhotoRenderer)
    rest, opened = r.render(torch.cat([params(), params(jaw=1.0)])).numpy()
    x0, y0, x1, y1 = r.mouth_region()
    dark = [(luminance(f[y0:y1, x0:x1]) < 0.2).sum() for f in (rest, opened)]
    assert dark[1] > dark[0] + 50


def test_a_smile_keeps_its_own_teeth(renderer: PhotoRenderer) -> None:
    rest, opened = (f.numpy() for f in renderer.render(torch.cat([params(), params(jaw=1.0)])))
    # Her own upper teeth, between the upper lip's inner edge and the split under them, stay
    # as they were, nothing painted over them (the mouth narrowing as it opens may carry them
    # a pixel or two along the mouth, and a pixel down).
    rig, geo = renderer.rig, renderer.geometry
    x0, y0 = renderer.crop_box[:2]
    mx = float(geo.mouth[0])
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in range(-2, 3)]
    best, darker = [], []
    for x in range(int(mx - 0.5 * geo.half_w), int(mx + 0.5 * geo.half_w) + 1):
        top = float(np.interp(x + x0 + 0.5, *rig.points(rig.inner_upper_lip).T)) + 1
        split = float(np.interp(x, geo.split_x, geo.split_y)) + y0 - 1
        ys = np.arange(int(np.ceil(top)), int(np.floor(split)))
        now = luminance(opened[ys, x + x0])
        then = [luminance(rest[ys + dy, x + x0 + dx]) for dy, dx in shifts]
        best.append(min(float(np.abs(t - now).mean()) for t in then))
        darker.append(float((np.min(then, axis=0) - now).max()))  # darker than any source
    assert len(best) > 10
    assert np.mean(best) < 0.02 and max(darker) < 0.15, (np.mean(best), max(darker))


def test_a_photo_with_both_rows_of_teeth_opens_between_them(
    avatar_dir: Path, tmp_path: Path
) -> None:
    """A smile showing both rows: the upper row stays whole with the upper lip, the lower row
    travels down with the jaw, and the opening is between them (not under both rows, where the
    cavity would cover the spot the lower teeth move to)."""
    path = tmp_path / "both_rows"
    shutil.copytree(avatar_dir, path)
    rig = MeshRig.from_json((path / "rig.json").read_text())  # in image.jpg's pixels
    up = rig.points(rig.inner_upper_lip) - 0.5
    lo = rig.points(rig.inner_lower_lip) - 0.5
    bgr = cv2.imread(str(path / "image.jpg"))
    # Her upper teeth over the top half between the inner lips, a shaded line, a lower row.
    for t0, t1, colour in ((0.0, 0.45, 236), (0.45, 0.7, 90), (0.7, 1.0, 238)):
        band = np.concatenate([up + (lo - up) * t0, (up + (lo - up) * t1)[::-1]])
        polygon = np.round(band * 16).astype(np.int32)
        cv2.fillPoly(bgr, [polygon], (colour,) * 3, cv2.LINE_AA, shift=4)
    cv2.imwrite(str(path / "image.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 97])
    r = open_photo_renderer(path, FrameSize(960, 720))
    assert isinstance(r, PhotoRenderer) and r.rig.teeth_at_rest
    rest, opened = (f.numpy() for f in r.render(torch.cat([params(), params(jaw=0.6)])))
    geo, (x0, y0) = r.geometry, r.crop_box[:2]
    upper = r.rig.points(r.rig.inner_upper_lip)
    lower = r.rig.points(r.rig.inner_lower_lip)
    upper, lower = upper[np.argsort(upper[:, 0])], lower[np.argsort(lower[:, 0])]
    mx = float(geo.mouth[0])
    above, below, kept = [], [], []
    for x in range(int(mx - 0.35 * geo.half_w), int(mx + 0.35 * geo.half_w) + 1):
        at = x + x0 + 0.5
        top = float(np.interp(at, *upper.T))
        rows = float(np.interp(at, *lower.T)) - top  # both rows and the line, at rest
        split = float(np.interp(x, geo.split_x, geo.split_y)) + y0
        column = luminance(opened[int(top) : int(top + 0.2 * geo.fh), x + x0])
        cavity = np.nonzero(column < 0.3)[0]
        assert len(cavity), x
        above.append((column[: cavity[0]] > 0.8).sum() / rows)
        below.append((column[cavity[-1] :] > 0.8).sum() / rows)
        at_rest = (luminance(rest[int(top) : int(split) + 1, x + x0]) > 0.8).sum()
        kept.append((column[: cavity[0]] > 0.8).sum() >= at_rest - 1)  # its edge is soft
    # Only the upper row stays above the opening (both rows did, 0.7 of them, before the
    # split ran between the rows), whole; the lower row is below it, teeth-bright.
    assert np.median(above) < 0.5 and np.mean(kept) > 0.9, (np.median(above), np.mean(kept))
    assert np.median(below) > 0.35, np.median(below)
