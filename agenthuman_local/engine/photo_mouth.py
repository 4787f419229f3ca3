"""The synthetic inner mouth of the photo avatar: cavity, tongue and teeth, drawn into the gap.

The gap is found from the warp itself rather than from a second model of the mouth: an output
pixel is inside the open mouth when it lies below the lip line in the face's frame but samples
the photo from above the lip line. That stays exact whatever mix of jaw, rounding and head
motion made the field, and it gives anti-aliased edges for free.
"""

from __future__ import annotations

import math

import torch

from agenthuman_local.engine.photo_fields import JAW_DROP_ED, CropGeometry

# Colours in 0–255 RGB.
_CAVITY_LIT = (84.0, 30.0, 34.0)
_CAVITY_DEEP = (22.0, 6.0, 8.0)
_TONGUE = (128.0, 52.0, 58.0)
_TEETH = (238.0, 230.0, 212.0)


def _rgb(c: tuple[float, float, float], device: str) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float32, device=device).view(1, 3, 1, 1)


class InnerMouth:
    """Draws into the mouth box of warped crops."""

    def __init__(self, geo: CropGeometry, device: str = "cpu") -> None:
        self.geo = geo
        self._deep, self._lit = _rgb(_CAVITY_DEEP, device), _rgb(_CAVITY_LIT, device)
        self._tongue, self._teeth = _rgb(_TONGUE, device), _rgb(_TEETH, device)
        drop = JAW_DROP_ED * geo.ed
        x0 = max(0, int(geo.mouth_x - 1.35 * geo.half_w))
        x1 = min(geo.width, int(geo.mouth_x + 1.35 * geo.half_w) + 2)
        # Head motion moves the mouth by at most ~0.2 ed (photo_fields head amplitudes).
        pad = 0.2 * geo.ed
        y0 = max(0, int(geo.lip_y - max(geo.curve, 0.0) - pad) - 2)
        y1 = min(geo.height, int(geo.lip_y + drop + pad) + 3)
        self.rows = slice(y0, y1)
        self.cols = slice(x0, x1)
        self._drop = drop
        # Upper teeth show under the upper lip unless the photo already shows its own. The
        # lower incisors' edges show above the lower lip in every photo: the lip line is set
        # under the photo's upper teeth, so its lower teeth (if any) are hidden by the lip.
        self._upper_teeth_px = 0.0 if geo.teeth_visible else 0.2 * geo.half_w
        self._lower_teeth_px = 0.12 * geo.half_w
        self._tooth_w = 0.28 * geo.half_w

    def _line(self, x: torch.Tensor) -> torch.Tensor:
        return self.geo.lip_line(x)

    def composite(self, crop: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> None:
        """Paint the inner mouth into `crop` [B, 3, H, W] (0–255) in place.

        `q` [B, h, w, 2]: where each mouth-box pixel sits in the face's own frame (before head
        motion); `s` [B, h, w, 2]: the photo pixel the face field maps it to. Both in crop
        pixel indices.
        """
        geo = self.geo
        qx, qy = q[..., 0].unsqueeze(1), q[..., 1].unsqueeze(1)
        sx, sy = s[..., 0].unsqueeze(1), s[..., 1].unsqueeze(1)
        from_top = qy - self._line(qx)  # ≥ 0 below the upper lip
        to_bottom = self._line(sx) - sy  # ≥ 0 above the lower lip's edge
        gap = from_top + to_bottom  # the opening's height in this column; 0 when closed
        # Anti-aliased top and bottom edges, and a sub-pixel opening only partly drawn.
        alpha = (from_top + 0.5).clamp(0.0, 1.0) * (to_bottom + 0.5).clamp(0.0, 1.0)
        alpha = alpha * gap.clamp(0.0, 1.0)
        # Shade only the box the opening covers in this batch: usually far smaller than the
        # mouth box, and empty whenever the lips are together.
        inside = (alpha > 0).any(dim=0)[0]
        if not bool(inside.any()):
            return
        rows_on, cols_on = inside.any(dim=1).nonzero(), inside.any(dim=0).nonzero()
        r0, r1 = int(rows_on.min()), int(rows_on.max()) + 1
        c0, c1 = int(cols_on.min()), int(cols_on.max()) + 1
        qx, from_top, to_bottom, gap, alpha = (
            v[..., r0:r1, c0:c1] for v in (qx, from_top, to_bottom, gap, alpha)
        )
        gap = gap.clamp(min=1.0)
        t = (from_top / gap).clamp(0.0, 1.0)  # 0 at the upper lip, 1 at the lower
        u = ((qx - geo.mouth_x) / geo.half_w).clamp(-1.5, 1.5)
        openness = (gap / self._drop).clamp(0.0, 1.0)

        # Light falls in past the upper lip and dies towards the throat and the cheeks.
        lit = torch.exp(-3.0 * t) * (1.0 - 0.6 * u * u).clamp(min=0.0)
        colour = self._deep + (self._lit - self._deep) * lit
        # The tongue: a soft mound in the lower half, seen once the mouth is well open.
        mound = 1.0 - ((1.0 - t) / 0.5) ** 2 - (u / 0.7) ** 2
        tongue = (mound * 1.5).clamp(0.0, 1.0) * (openness * 1.6 - 0.4).clamp(0.0, 0.85)
        tongue_shade = (0.3 + 0.5 * (1.0 - u * u).clamp(min=0.0)) * (0.6 + 0.4 * t)
        colour = colour + (self._tongue * tongue_shade - colour) * tongue
        # Teeth: bands under the upper lip and above the lower one, in shadow towards the
        # corners, with faint gaps between teeth so they read as teeth and not as a white bar.
        across = (1.0 - (u / 0.8) ** 2).clamp(min=0.0)
        gaps = 1.0 - 0.12 * torch.cos(math.pi * (qx - geo.mouth_x) / self._tooth_w).abs() ** 12
        if self._upper_teeth_px > 0:
            upper = (self._upper_teeth_px * across.sqrt() - from_top + 0.5).clamp(0.0, 1.0)
            shade = (
                (0.72 + 0.28 * across)
                * gaps
                * (1.0 - 0.25 * (from_top / self._upper_teeth_px).clamp(0, 1))
            )
            colour = colour + (self._teeth * shade - colour) * upper
        if self._lower_teeth_px > 0:
            # Only the middle few lower teeth peek over the lower lip, in its shadow.
            across_lo = (1.0 - (u / 0.55) ** 2).clamp(min=0.0)
            lower = (self._lower_teeth_px * across_lo.sqrt() - to_bottom + 0.5).clamp(0.0, 1.0)
            lower = lower * openness.sqrt()
            shade = (0.78 + 0.17 * across_lo) * gaps
            colour = colour + (self._teeth * shade - colour) * lower
        rows, cols = self.rows, self.cols
        region = crop[:, :, rows.start + r0 : rows.start + r1, cols.start + c0 : cols.start + c1]
        region += (colour - region) * alpha
