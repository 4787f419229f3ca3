"""The procedural renderer and the engine that hands it out, judged from the pixels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.engine import Engine, UnknownAvatarError, png_bytes
from agenthuman_local.engine.procedural import ProceduralRenderer
from agenthuman_local.engine.procedural_assets import MAX_CROP_PX, layout_for
from agenthuman_local.engine.procedural_paint import CROP_X, CROP_Y
from tests.lipsync_check import mouth_fraction
from tests.photos import luminance as luma
from tests.photos import params as pose

torch.set_num_threads(1)

SPEC_SIZES = [(960, 720), (720, 960), (720, 720), (1280, 720), (720, 1280)]
ODD_SIZES = [(128, 128), (1920, 1080), (1920, 1920), (130, 1000), (1000, 130)]
SMALL = FrameSize(256, 256)


@pytest.fixture(scope="module", params=["avat_local_ada", "avat_local_ben"])
def small(request: pytest.FixtureRequest) -> ProceduralRenderer:
    return ProceduralRenderer(request.param, SMALL)


@pytest.mark.parametrize("width,height", SPEC_SIZES + ODD_SIZES)
def test_every_size_frames_head_and_shoulders(width: int, height: int) -> None:
    r = ProceduralRenderer("avat_local_ada", FrameSize(width, height))
    frames = r.render(torch.cat([pose(), pose(tx=1.0, ty=1.0, breath=1.0, jaw=1.0)]))
    assert frames.shape == (2, height, width, 3) and frames.dtype == torch.uint8
    # The per-frame crop stays within budget; big frames scale it up instead.
    assert max(r._assets.head_alpha.shape[1:3]) <= MAX_CROP_PX
    lay = layout_for(FrameSize(width, height))
    head_h = (CROP_Y[1] - CROP_Y[0]) * lay.unit_px
    assert head_h >= 0.25 * height or head_h >= 0.5 * width  # not tiny
    # Not cut: the head crop lies inside the frame in any pose, and shoulders reach the bottom.
    for tx, ty in ((-1, -1), (1, 1), (-1, 1), (1, -1)):
        x0, y0 = r.paste_origin(pose(tx=tx, ty=ty, breath=tx)[0].tolist())
        assert x0 >= 0 and y0 >= 0
        assert x0 + (CROP_X[1] - CROP_X[0]) * lay.unit_px <= width + 1
        assert y0 + head_h <= height
    bottom_centre = frames[0, -2, width // 2].numpy().astype(int)
    backdrop = frames[0, -2, 1].numpy().astype(int)
    assert np.abs(bottom_centre - backdrop).sum() > 40  # clothes, not backdrop


@pytest.mark.parametrize("size", [(127, 128), (128, 2000), (100, 100)])
def test_bad_sizes_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="even"):
        ProceduralRenderer("avat_local_ada", FrameSize(*size))
    with pytest.raises(ValueError, match="unknown procedural avatar"):
        ProceduralRenderer("avat_nobody", SMALL)


def test_batches_equal_single_frames(small: ProceduralRenderer) -> None:
    batch = torch.cat([pose(), pose(jaw=0.8, yaw=0.7), pose(blink=1.0, brow=1.0, tx=-0.5)])
    together = small.render(batch)
    for i in range(3):
        assert torch.equal(together[i], small.render(batch[i : i + 1])[0])


def test_jaw_opens_a_dark_mouth_with_teeth_and_closure_shuts_it(small: ProceduralRenderer) -> None:
    rows = [pose(jaw=j) for j in (0.0, 0.3, 0.6, 1.0)] + [pose(jaw=1.0, closure=1.0)]
    frames = small.render(torch.cat(rows)).numpy()
    regions = [small.mouth_region(r[0].tolist()) for r in rows]
    dark = mouth_fraction(frames, regions)
    assert dark[0] == 0.0 and dark[-1] < 0.02
    assert dark[1] < dark[2] < dark[3] and dark[3] > 0.1
    x0, y0, x1, y1 = regions[3]
    open_luma, shut_luma = luma(frames[3, y0:y1, x0:x1]), luma(frames[0, y0:y1, x0:x1])
    # Teeth: near-white pixels appear only when the mouth is open, inside the mouth.
    assert (open_luma > 0.85).sum() > 5 and (shut_luma > 0.85).sum() == 0


def test_blink_covers_the_eyes_with_lids(small: ProceduralRenderer) -> None:
    frames = small.render(torch.cat([pose(), pose(blink=1.0)])).numpy()
    lay = small.layout
    y = int(lay.centre_y - 0.05 * lay.unit_px)
    band = slice(y - 6, y + 6)

    # Sclera is bright and grey; when the lids are down it is gone.
    def white(frame: np.ndarray) -> int:
        px = frame[band].astype(int)
        return int(((px.min(-1) > 200) & (px.max(-1) - px.min(-1) < 25)).sum())

    assert white(frames[0]) > 10 and white(frames[1]) == 0


def test_gaze_moves_the_irises_together(small: ProceduralRenderer) -> None:
    frames = small.render(torch.cat([pose(gaze_x=-1.0), pose(gaze_x=1.0)])).numpy()
    lay = small.layout
    y = int(lay.centre_y - 0.05 * lay.unit_px)
    band = slice(y - 3, y + 4)

    def iris_x(frame: np.ndarray, side: int) -> float:
        centre = lay.centre_x + side * 0.145 * lay.unit_px
        x0, x1 = int(centre - 0.09 * lay.unit_px), int(centre + 0.09 * lay.unit_px)
        _, cols = np.nonzero(luma(frame[band, x0:x1]) < 0.3)  # iris, pupil, lash ends
        return float(cols.mean()) + x0

    for side in (-1, 1):
        assert iris_x(frames[1], side) > iris_x(frames[0], side) + 1.0


def test_features_tilt_with_the_head() -> None:
    r = ProceduralRenderer("avat_local_ada", FrameSize(512, 512))
    lay = r.layout
    frames = r.render(torch.cat([pose(roll=-1.0), pose(roll=1.0)])).numpy()

    def eye_row(frame: np.ndarray, side: int) -> float:
        cx = lay.centre_x + side * 0.145 * lay.unit_px
        x0, x1 = int(cx - 0.04 * lay.unit_px), int(cx + 0.04 * lay.unit_px)
        y0, y1 = int(lay.centre_y - 0.12 * lay.unit_px), int(lay.centre_y + 0.03 * lay.unit_px)
        rows, _ = np.nonzero(luma(frame[y0:y1, x0:x1]) < 0.3)  # pupil and iris rim
        return float(rows.mean())

    # Tilted one way the right eye sits lower than the left, the other way higher.
    assert eye_row(frames[1], 1) > eye_row(frames[1], -1) + 2
    assert eye_row(frames[0], 1) < eye_row(frames[0], -1) - 2


def test_sway_moves_only_the_head_and_leaves_no_seam(small: ProceduralRenderer) -> None:
    rest, moved = small.render(torch.cat([pose(), pose(tx=1.0, ty=-1.0)])).numpy().astype(int)
    row = pose(tx=1.0, ty=-1.0)[0].tolist()
    background = small._assets.backgrounds[small.background_index(row)].numpy()
    x0, y0 = small.paste_origin(row)
    clear = small._assets.inv_alpha[small.roll_index(row), ..., 0].numpy() == 128
    h, w = clear.shape
    outside = np.ones(moved.shape[:2], bool)
    outside[y0 : y0 + h, x0 : x0 + w] = clear  # transparent parts of the crop too
    # Everything but the head is exactly the cached background: no crop rectangle, no tear.
    assert np.array_equal(moved[outside], background[outside])
    assert np.abs(rest - moved).max() > 100  # and the head did move


def test_listening_brows_and_roll_change_the_face(small: ProceduralRenderer) -> None:
    rest, listen, brows, left, right = (
        small.render(
            torch.cat([pose(), pose(listen=1.0), pose(brow=1.0), pose(roll=-1.0), pose(roll=1.0)])
        )
        .numpy()
        .astype(int)
    )
    assert np.abs(rest - listen).sum() > 0
    assert np.abs(rest - brows).sum() > 0
    # A tilt moves the top of the head sideways, opposite ways for opposite rolls.
    lay = small.layout
    top = int(lay.centre_y - 0.55 * lay.unit_px)

    def hair_centre(frame: np.ndarray) -> float:
        dark = np.flatnonzero(luma(frame[top].astype(np.uint8)) < 0.4)
        return float(dark.mean())

    assert hair_centre(left) + 2 < hair_centre(rest) < hair_centre(right) - 2


def test_ada_and_ben_are_clearly_different() -> None:
    ada = ProceduralRenderer("avat_local_ada", SMALL).render(pose())[0].numpy().astype(int)
    ben = ProceduralRenderer("avat_local_ben", SMALL).render(pose())[0].numpy().astype(int)
    assert np.abs(ada - ben).mean() > 25


async def test_engine_loads_off_the_loop_and_makes_renderers() -> None:
    engine = Engine(fps=25, deterministic=True, warm_sizes=(SMALL,))
    assert not engine.ready
    await asyncio.gather(engine.load(), engine.load())
    assert engine.ready
    await engine.load()
    r = engine.make_renderer("avat_local_ben", SMALL, "cpu")
    assert r.render(pose()).shape == (1, 256, 256, 3)
    with pytest.raises(UnknownAvatarError):
        engine.make_renderer("avat_nobody", SMALL, "cpu")
    with pytest.raises(ValueError, match="avatar_dir"):
        engine.make_renderer("avat_x", SMALL, "cpu", avatar_kind="photo")
    driver = engine.make_driver()
    assert driver.fps == 25 and driver.step(None).shape == (N_PARAMS,)


def test_preview_is_a_500px_png_of_the_avatar() -> None:
    data = Engine().render_preview("avat_local_ada")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and img.shape == (500, 500, 3)
    assert img.std() > 20  # a picture, not a flat fill
    with pytest.raises(UnknownAvatarError):
        Engine().render_preview("avat_nobody")


def test_png_bytes_round_trip() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    back = cv2.imdecode(np.frombuffer(png_bytes(rgb), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(back[..., ::-1], rgb)


def test_gallery_writes_a_contact_sheet(tmp_path: Path) -> None:
    from agenthuman_local.gallery import CELL, LABEL_PX, main, poses

    out = tmp_path / "sheet.png"
    assert main([str(out), "--avatar", "avat_local_ben"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * LABEL_PX + CELL.height, len(poses()) * CELL.width, 3)
    cells = [sheet[2 * LABEL_PX :, i * CELL.width : (i + 1) * CELL.width] for i in range(6)]
    # Every pose shows something different from rest.
    assert all(np.abs(c.astype(int) - cells[0]).sum() > 0 for c in cells[1:])
    with pytest.raises(SystemExit):
        main([str(out), "--avatar", "avat_nobody"])


def test_a_shared_renderer_is_safe_across_threads(small: ProceduralRenderer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rows = [pose(jaw=j / 20, blink=(j % 3) / 2, gaze_x=(j % 5) / 4 - 0.5) for j in range(20)]
    alone = [small.render(r)[0] for r in rows]
    with ThreadPoolExecutor(max_workers=4) as pool:
        shared = list(pool.map(lambda r: small.render(r)[0], rows * 3))
    assert all(torch.equal(shared[i], alone[i % 20]) for i in range(60))


def test_a_frame_from_a_kept_composed_head_is_the_frame_composed_afresh() -> None:
    """The head without its features is kept per (background, tilt, origin); a frame made from
    it (tiles blended over the background) has exactly the pixels of one composed afresh."""
    r = ProceduralRenderer("avat_local_ada", SMALL)
    rng = np.random.default_rng(3)
    rows = torch.from_numpy(rng.uniform(-1, 1, (24, N_PARAMS)).astype(np.float32))
    rows[:, P.JAW] = torch.linspace(0, 1, 24)
    rows[12:, P.TX] = rows[12, P.TX]  # a still head: the kept one is used
    rows[12:, P.TY] = rows[12, P.TY]
    rows[12:, P.ROLL] = rows[12, P.ROLL]
    rows[12:, P.BREATH] = rows[12, P.BREATH]
    kept = [r.render(rows[i : i + 1])[0].clone() for i in range(24)]
    assert r._bases.hits > 0
    fresh = []
    for i in range(24):
        r._bases.clear()
        fresh.append(r.render(rows[i : i + 1])[0])
    for i in range(24):
        assert torch.equal(kept[i], fresh[i]), i
    batch = r.render(rows[10:16])
    assert all(torch.equal(batch[j], kept[10 + j]) for j in range(6))
    # And both are the head with its tiles pasted in, blended over the background in one go.
    a = r._assets
    for i in (0, 13, 23):
        row = rows[i].tolist()
        k = r.roll_index(row)
        head = a.head_i16[k].clone()
        for layer in range(len(r._layers)):
            c, top, tile = r._tiles(layer, [row])[0]
            head[top : top + tile.shape[0], c : c + tile.shape[1]] = tile
        want = a.backgrounds[r.background_index(row)].clone()
        r._blend(want, head, a.inv_alpha[k], *r.paste_origin(row))
        assert torch.equal(kept[i], want), i
