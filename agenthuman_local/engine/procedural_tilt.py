"""Head tilt for the procedural renderer: the whole-step tilts, the neck pivot they turn about,
and the `grid_sample` rotations that pre-tilt the head (`procedural_assets`) and each feature tile
(`procedural.ProceduralRenderer`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from agenthuman_local.engine.procedural_paint import CROP_X, CROP_Y

# Head tilt: pre-rotated heads in whole steps, so a frame only picks one.
ROLL_STEPS = 13
ROLL_STEP_DEG = 0.5  # a step moves the crown under 2 px at 960x720
MAX_ROLL_DEG = 3.0
ROLL_PIVOT_Y = 0.45  # head units: the top of the neck


def roll_pivot(unit: float) -> tuple[float, float]:
    """Where the head tilts about (the top of the neck), in crop pixels."""
    return (-CROP_X[0] * unit, (ROLL_PIVOT_Y - CROP_Y[0]) * unit)


def _tilted(rgba: torch.Tensor, unit: float) -> torch.Tensor:
    """Premultiplied [h, w, 4] → [ROLL_STEPS, h, w, 4], rotated about the neck."""
    src = rgba.permute(2, 0, 1)[None].expand(ROLL_STEPS, -1, -1, -1)
    angles = [roll_degrees(k) for k in range(ROLL_STEPS)]
    return _rotate(src, roll_pivot(unit), angles).permute(0, 2, 3, 1).contiguous()


def _rotate(images: torch.Tensor, pivot: tuple[float, float], degrees: list[float]) -> torch.Tensor:
    """[N, C, h, w] → each rotated by its angle about `pivot` (pixel units); zeros outside."""
    _, _, h, w = images.shape
    grids = _rotation_grids(h, w, pivot, degrees, images.device)
    return F.grid_sample(images, grids, align_corners=False, padding_mode="zeros")


def _rotation_grids(
    h: int, w: int, pivot: tuple[float, float], degrees: list[float], device: str | torch.device
) -> torch.Tensor:
    """The `grid_sample` grids [N, h, w, 2] that rotate an h × w image about `pivot`."""
    px, py = pivot
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    grids = []
    for deg in degrees:
        theta = math.radians(deg)
        cos, sin = math.cos(theta), math.sin(theta)
        # Sample the upright image where each output pixel came from (inverse rotation).
        sx = px + cos * (xs - px) + sin * (ys - py)
        sy = py - sin * (xs - px) + cos * (ys - py)
        grids.append(torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1))
    return torch.stack(grids)


def roll_degrees(index: int) -> float:
    return (index - ROLL_STEPS // 2) * ROLL_STEP_DEG
