"""`python -m agenthuman_local.gallery OUT.png [--avatar ID | --image FILE]`: a contact sheet.

One row per avatar, one column per pose (rest, mid-vowel, wide open, closed "m", blink,
listening), so anyone can judge the renderers at a glance (SPEC §9). `--avatar` shows one
shipped avatar; `--image` adds a photo avatar made from FILE to every shipped one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P, Renderer
from agenthuman_local.engine.engine import SHIPPED_AVATARS, png_bytes
from agenthuman_local.engine.procedural import ProceduralRenderer

CELL = FrameSize(400, 300)
LABEL_PX = 28


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
    from agenthuman_local.engine.photo import open_photo_renderer

    try:
        save_avatar(prepare_face(image.read_bytes()), workdir)
    except (OSError, FaceError) as exc:
        raise SystemExit(f"{image}: {exc}") from exc
    return open_photo_renderer(workdir, size, "cpu")


def _label(img: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)


def _zoom(frame: np.ndarray, centre: tuple[float, float], factor: int = 2) -> np.ndarray:
    """A CELL-sized `factor`× enlargement of `frame` around `centre` (x, y)."""
    w, h = CELL.width // factor, CELL.height // factor
    x0 = int(np.clip(round(centre[0] - w / 2), 0, frame.shape[1] - w))
    y0 = int(np.clip(round(centre[1] - h / 2), 0, frame.shape[0] - h))
    patch = frame[y0 : y0 + h, x0 : x0 + w]
    return cv2.resize(patch, (CELL.width, CELL.height), interpolation=cv2.INTER_NEAREST)


def _zoom_centres(renderer: Renderer) -> list[tuple[str, tuple[float, float]]]:
    """Where a photo renderer's mouth and eyes are, for the 2× rows; none for the others."""
    rig = getattr(renderer, "rig", None)
    if rig is None or not hasattr(rig, "irises"):
        return []
    mouth = rig.mouth_corners.mean(axis=0)
    eyes = rig.irises[:, 0].mean(axis=0)
    return [("mouth 2x", (float(mouth[0]), float(mouth[1]))), ("eyes 2x", (eyes[0], eyes[1]))]


def contact_sheet(rows: list[tuple[str, Renderer]]) -> np.ndarray:
    """uint8 RGB sheet: a label row, then one row of poses per renderer (photo avatars add a
    2× row of the mouth and one of the eyes)."""
    names, params = zip(*poses(), strict=True)
    batch = torch.stack(list(params))
    width = CELL.width * len(names)
    strips: list[tuple[str, list[np.ndarray]]] = []
    for title, renderer in rows:
        frames = list(renderer.render(batch).numpy())
        strips.append((title, frames))
        for what, centre in _zoom_centres(renderer):
            strips.append((f"{title}: {what}", [_zoom(f, centre) for f in frames]))
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
    with tempfile.TemporaryDirectory() as tmp:
        if args.image:
            rows.append((f"photo ({args.image.name})", photo_renderer(args.image, CELL, Path(tmp))))
        sheet = contact_sheet(rows)
    args.out.write_bytes(png_bytes(sheet))
    print(f"wrote {args.out} ({len(rows)} avatars × {len(poses())} poses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
