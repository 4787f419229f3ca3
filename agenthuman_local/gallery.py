"""`python -m agenthuman_local.gallery OUT.png [--avatar ID | --image FILE]`: a contact sheet.

One row per avatar, one column per pose (rest, mid-vowel, wide open, closed "m", blink,
listening), so anyone can judge the renderers at a glance (SPEC §9). `--avatar` shows one
shipped avatar; `--image` adds a photo avatar made from FILE to every shipped one. A photo
avatar adds a row of its mouth and one of its eyes, each pose cropped from a frame rendered at
`ZOOM_FRAME` and enlarged by a whole factor (≥ 2×, nearest pixel: the rendered pixels as they
are), following the head in every pose, so lips, teeth and lids can be judged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P, Renderer
from agenthuman_local.engine.engine import SHIPPED_AVATARS, png_bytes
from agenthuman_local.engine.photo import open_photo_renderer
from agenthuman_local.engine.procedural import ProceduralRenderer

CELL = FrameSize(400, 300)
LABEL_PX = 28
# The zoom rows' frames: a session's usual size, where the face crop is drawn at its full
# resolution (the gallery's own cells show it smaller).
ZOOM_FRAME = FrameSize(960, 720)
# How much of the face a zoom cell shows at least: the mouth's corner-to-corner width, and each
# eye's (in its half of the cell), times these.
_MOUTH_SPAN, _EYE_SPAN = 1.3, 1.5


def poses() -> list[tuple[str, torch.Tensor]]:
    def pose(**values: float) -> torch.Tensor:
        row = torch.zeros(N_PARAMS)
        for name, v in values.items():
            row[P[name.upper()]] = v
        return row

    return [
        ("rest", pose()),
        ("mid-vowel", pose(jaw=0.5, spread=0.4)),
        ("wide open", pose(jaw=1.0)),
        ('closed "m"', pose(jaw=0.6, closure=1.0)),
        ("blink", pose(blink=1.0)),
        ("listening", pose(listen=1.0, brow=0.35, roll=0.45, pitch=-0.25, ty=-0.1)),
    ]


def photo_renderer(image: Path, size: FrameSize, workdir: Path) -> Renderer:
    """The `--image` hook: prepare the photo as an upload would, then the photo renderer."""
    from agenthuman_local.engine.faces import FaceError, prepare_face, save_avatar

    try:
        save_avatar(prepare_face(image.read_bytes()), workdir)
    except (OSError, FaceError) as exc:
        raise SystemExit(f"{image}: {exc}") from exc
    return open_photo_renderer(workdir, size, "cpu")


def _label(img: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)


@dataclass(frozen=True)
class Zoom:
    """One zoom cell: what it shows, the frame pixels it crops (one box per part of the cell,
    side by side: the mouth, or each eye) and by how much it enlarges them."""

    label: str
    boxes: tuple[tuple[int, int, int, int], ...]  # x0, y0, x1, y1 in the zoom frame
    factor: int


def _zoom_box(
    centre: tuple[float, float], factor: int, part: tuple[int, int], size: FrameSize
) -> tuple[int, int, int, int]:
    """The `part`-sized (w, h) cell's crop at `factor`, around `centre`, inside the frame."""
    w, h = part[0] // factor, part[1] // factor
    x0 = int(np.clip(round(centre[0] - w / 2), 0, size.width - w))
    y0 = int(np.clip(round(centre[1] - h / 2), 0, size.height - h))
    return x0, y0, x0 + w, y0 + h


def _factor(span: float, cell_w: int) -> int:
    """The whole enlargement (≥ 2) at which `span` frame pixels fill `cell_w` at most."""
    return max(2, int(cell_w // max(span, 1.0)))


def zooms(renderer: Renderer, pose: torch.Tensor) -> list[Zoom]:
    """Where a photo renderer's mouth and eyes are in the frame of `pose` (its head motion
    included), as zoom cells; none for renderers without a mesh rig."""
    rig = getattr(renderer, "rig", None)
    if rig is None or not hasattr(rig, "irises") or not hasattr(renderer, "head_offset"):
        return []
    dx, dy = renderer.head_offset(pose.tolist())
    size = renderer.size
    corners = rig.mouth_corners
    # The mouth, from the top of the upper lip to the lower lip's place when wide open.
    top = float(rig.points(rig.outer_upper_lip)[:, 1].min())
    bottom = float(rig.points(rig.outer_lower_lip)[:, 1].max()) + 0.1 * rig.face_height
    mouth = (float(corners[:, 0].mean()) + dx, (top + bottom) / 2 + dy)
    whole = (CELL.width, CELL.height)
    f_mouth = _factor(_MOUTH_SPAN * float(np.hypot(*(corners[1] - corners[0]))), CELL.width)
    # Each eye in its half of the cell.
    half = (CELL.width // 2, CELL.height)
    eyes = [np.concatenate([rig.points(u), rig.points(lo)]) for u, lo in rig.eye_lids]
    f_eyes = _factor(_EYE_SPAN * max(float(np.ptp(e[:, 0])) for e in eyes), half[0])
    eye_boxes = tuple(
        _zoom_box((float(e[:, 0].mean()) + dx, float(e[:, 1].mean()) + dy), f_eyes, half, size)
        for e in eyes
    )
    return [
        Zoom(f"mouth {f_mouth}x", (_zoom_box(mouth, f_mouth, whole, size),), f_mouth),
        Zoom(f"eyes {f_eyes}x", eye_boxes, f_eyes),
    ]


def _crop(frame: np.ndarray, zoom: Zoom) -> np.ndarray:
    part_w = CELL.width // len(zoom.boxes)
    parts = []
    for x0, y0, x1, y1 in zoom.boxes:
        patch = np.ascontiguousarray(frame[y0:y1, x0:x1])
        size = ((x1 - x0) * zoom.factor, (y1 - y0) * zoom.factor)
        big = cv2.resize(patch, size, interpolation=cv2.INTER_NEAREST)
        cell = np.full((CELL.height, part_w, 3), 245, np.uint8)
        cell[: big.shape[0], : big.shape[1]] = big[: CELL.height, :part_w]
        parts.append(cell)
    out = np.concatenate(parts, axis=1)
    for i in range(1, len(parts)):  # a thin gap between the eyes
        out[:, i * part_w - 1 : i * part_w + 1] = 245
    return out


def contact_sheet(
    rows: list[tuple[str, Renderer]], zoomed: dict[str, Renderer] | None = None
) -> np.ndarray:
    """uint8 RGB sheet: a label row, then one row of poses per renderer; a renderer whose
    title is in `zoomed` adds a row of its mouth and one of its eyes, cropped from that
    renderer's frames (the same avatar at `ZOOM_FRAME`)."""
    names, params = zip(*poses(), strict=True)
    batch = torch.stack(list(params))
    width = CELL.width * len(names)
    strips: list[tuple[str, list[np.ndarray]]] = []
    for title, renderer in rows:
        frames = list(renderer.render(batch).numpy())
        strips.append((title, frames))
        big = (zoomed or {}).get(title)
        if big is None:
            continue
        big_frames = list(big.render(batch).numpy())
        cells = [zooms(big, p) for p in params]
        for k in range(len(cells[0])):
            label = cells[0][k].label
            strips.append(
                (
                    f"{title}: {label}",
                    [_crop(f, c[k]) for f, c in zip(big_frames, cells, strict=True)],
                )
            )
    sheet = np.full((LABEL_PX + len(strips) * (CELL.height + LABEL_PX), width, 3), 245, np.uint8)
    for i, name in enumerate(names):
        _label(sheet, name, i * CELL.width + 8, LABEL_PX - 8)
    for r, (title, frames) in enumerate(strips):
        top = LABEL_PX + r * (CELL.height + LABEL_PX)
        _label(sheet, title, 8, top + LABEL_PX - 8)
        for i, frame in enumerate(frames):
            y = top + LABEL_PX
            sheet[y : y + CELL.height, i * CELL.width : (i + 1) * CELL.width] = frame
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agenthuman_local.gallery")
    parser.add_argument("out", type=Path, help="where to write the PNG contact sheet")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--avatar", help="only this shipped avatar id")
    which.add_argument("--image", type=Path, help="also a photo avatar made from this image")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.avatar and args.avatar not in SHIPPED_AVATARS:
        parser.error(f"unknown avatar {args.avatar!r}; shipped: {', '.join(SHIPPED_AVATARS)}")
    ids = [args.avatar] if args.avatar else list(SHIPPED_AVATARS)
    rows: list[tuple[str, Renderer]] = [
        (f"{SHIPPED_AVATARS[i]} ({i})", ProceduralRenderer(i, CELL)) for i in ids
    ]
    zoomed: dict[str, Renderer] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.image:
            title = f"photo ({args.image.name})"
            rows.append((title, photo_renderer(args.image, CELL, Path(tmp))))
            zoomed[title] = open_photo_renderer(Path(tmp), ZOOM_FRAME, "cpu")
        sheet = contact_sheet(rows, zoomed)
    args.out.write_bytes(png_bytes(sheet))
    print(f"wrote {args.out} ({len(rows)} avatars × {len(poses())} poses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
