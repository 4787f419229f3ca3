"""The procedural renderer's still assets, per style and frame size: where the character sits in
the frame (`Layout`), the frame sizes it accepts, and the painted backgrounds and pre-tilted heads
(`_Assets`), kept in one budgeted cache; and the crop-to-output-pixels steps (`_upscale`,
`_fixed_point`) that the heads go through here and a scaled frame's head goes through per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agenthuman_local.engine.base import FrameSize
from agenthuman_local.engine.cache import BudgetedCache, tensor_bytes
from agenthuman_local.engine.procedural_paint import (
    CROP_X,
    CROP_Y,
    paint_backgrounds,
    paint_head,
)
from agenthuman_local.engine.procedural_styles import Style
from agenthuman_local.engine.procedural_tilt import _tilted

MIN_SIDE = 128
MAX_SIDE = 1920
MAX_CROP_PX = 384
BREATH_LIFT = 0.012  # shoulder rise at full inhale, head units
BREATH_STEPS = 4  # pre-painted backgrounds between exhale and inhale


@dataclass(frozen=True)
class Layout:
    """Where the character sits in a frame of a given size."""

    unit_px: float  # one head unit in output pixels
    render_unit_px: float  # one head unit in crop pixels; < unit_px when the crop is scaled up
    centre_x: float  # face centre in output pixels
    centre_y: float


def layout_for(size: FrameSize) -> Layout:
    """Head and shoulders, face centred, a little headroom, whatever the aspect ratio."""
    w, h = size.width, size.height
    unit = min(0.43 * h, 0.47 * w)
    budget = MAX_CROP_PX / max(CROP_X[1] - CROP_X[0], CROP_Y[1] - CROP_Y[0])
    if unit <= budget * 1.1:
        unit = min(unit, budget)
    centre_y = 0.1 * h + -CROP_Y[0] * unit
    return Layout(unit, min(unit, budget), w / 2.0, centre_y)


def check_size(size: FrameSize) -> None:
    for name, v in (("width", size.width), ("height", size.height)):
        if not MIN_SIDE <= v <= MAX_SIDE or v % 2:
            raise ValueError(f"frame {name} must be even and {MIN_SIDE}..{MAX_SIDE}, got {v}")


@dataclass(frozen=True)
class _Assets:
    """Everything still, per style and size. Heads come in ROLL_STEPS tilts, index 0 = leftmost."""

    backgrounds: torch.Tensor  # uint8 [lifts, H, W, 3], shoulders raised by breath
    head_alpha: torch.Tensor  # float16 [tilts, h, w], crop pixels
    head_straight: (
        torch.Tensor
    )  # float16 [tilts, h, w, 3] un-premultiplied: what features draw over
    head_i16: torch.Tensor  # int16 [tilts, h2, w2, 3] premultiplied, output pixels
    inv_alpha: torch.Tensor  # int16 [tilts, h2, w2, 1], (1 - alpha) · 128


def _asset_bytes(a: _Assets) -> int:
    return tensor_bytes(a.backgrounds, a.head_alpha, a.head_straight, a.head_i16, a.inv_alpha)


# ~30 MB each at 960x720; the sizes in use and recently used, within `engine.cache_mb`.
_ASSETS: BudgetedCache[tuple[Style, int, int, str], _Assets] = BudgetedCache(
    "procedural assets", _asset_bytes
)


def _assets(style: Style, width: int, height: int, device: str) -> _Assets:
    key = (style, width, height, device)
    assets = _ASSETS.get(key)
    if assets is None:
        assets = _paint_assets(style, width, height, device)
        _ASSETS.put(key, assets)
    return assets


def _paint_assets(style: Style, width: int, height: int, device: str) -> _Assets:
    lay = layout_for(FrameSize(width, height))
    # At most a few backgrounds: big frames breathe in steps of more than a pixel.
    top = round(BREATH_LIFT * lay.unit_px)
    lifts = sorted({round(top * k / (BREATH_STEPS - 1)) for k in range(BREATH_STEPS)})
    bgs = paint_backgrounds(
        style, width, height, (lay.centre_x, lay.centre_y), lay.unit_px, lifts, device
    )
    backgrounds = (bgs * 255.0 + 0.5).to(torch.uint8).cpu()
    rgb, alpha = paint_head(style, lay.render_unit_px, device)
    tilts = _tilted(torch.cat([rgb, alpha[..., None]], -1), lay.render_unit_px)
    alphas = tilts[..., 3]
    straight = tilts[..., :3] / alphas[..., None].clamp(min=1e-3)
    big = _upscale(tilts, lay) if lay.render_unit_px < lay.unit_px else tilts
    head_i16, inv_alpha = _fixed_point(big[..., :3], big[..., 3:])
    return _Assets(backgrounds, alphas.half(), straight.half(), head_i16, inv_alpha)


def _fixed_point(premul: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied colour and alpha → int16 colour and (1 − alpha)·128 for `_blend`
    (`procedural.ProceduralRenderer`).

    Both are floored, so colour + background·(1 − alpha) never passes 255 and the uint8 store
    cannot wrap; 7 bits of alpha keep 255·128 inside int16.
    """
    colour = torch.floor(premul.clamp(0.0, 1.0) * 255.0).to(torch.int16).cpu()
    inv = torch.floor((1.0 - alpha.clamp(0.0, 1.0)) * 128.0).to(torch.int16).cpu()
    return colour, inv


def _upscale(crop: torch.Tensor, lay: Layout) -> torch.Tensor:
    """[B, h, w, C] crop pixels → [B, h2, w2, C] output pixels."""
    h2 = round((CROP_Y[1] - CROP_Y[0]) * lay.unit_px)
    w2 = round((CROP_X[1] - CROP_X[0]) * lay.unit_px)
    out = F.interpolate(crop.permute(0, 3, 1, 2), size=(h2, w2), mode="bilinear", antialias=False)
    return out.permute(0, 2, 3, 1).clamp(0.0, 1.0)
