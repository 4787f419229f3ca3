"""The inner mouth of the mesh photo avatar, drawn only where the lips have parted.

A pixel is inside the opening when, in the face's own frame, it lies under the split line (the
upper lip's edge, which stays) while the lower field samples the photo from above the split line
(so it is above the lower lip's displaced edge). Both distances come from the warp itself, so
the opening is exactly the gap between the lips, with anti-aliased edges, and nothing is
painted over a lip.

Inside: a cavity shaded from the lips inward (each lip's inner shadow, a darker throat), upper
teeth as a row partly hidden under the upper lip — synthesized in the photo's own light (the
eye whites' tone) when the photo shows no teeth at rest; a photo that does keeps its own, which
the split carries with the upper lip — and a hint of tongue. Colours come from the photo's lips
so the cavity matches the skin tone and exposure.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from agenthuman_local.engine.photo_warp import JAW_DROP_FH, MeshGeometry

TONGUE_MAX = 0.8


def _polygon_mean(rgb: np.ndarray, polygon: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], 1)
    pix = rgb[mask.astype(bool)]
    return pix.mean(axis=0) if len(pix) >= 4 else fallback


def _eye_white(rgb: np.ndarray, geo: MeshGeometry) -> np.ndarray:
    """The colour of white under this photo's light: the brighter sclera pixels."""
    mask = np.zeros(rgb.shape[:2], np.uint8)
    for upper, lower in geo.eye_lids:
        cv2.fillPoly(mask, [np.round(np.concatenate([upper, lower[::-1]])).astype(np.int32)], 1)
    for iris in geo.irises:
        r = float(np.hypot(*(iris[1:] - iris[0]).T).mean()) * 1.1
        cv2.circle(mask, tuple(int(v) for v in np.round(iris[0])), max(1, int(r)), 0, -1)
    pix = rgb[mask.astype(bool)].astype(np.float32)
    if len(pix) < 6:
        return np.array([215.0, 205.0, 190.0])
    lum = pix @ np.array([0.299, 0.587, 0.114], np.float32)
    return pix[lum >= np.percentile(lum, 70)].mean(axis=0)


class Cavity:
    """Paints the inner mouth into the mouth box of warped crops."""

    def __init__(self, geo: MeshGeometry, photo: np.ndarray, split: torch.Tensor) -> None:
        """`photo`: the crop at rest, RGB uint8 [H, W, 3]; `split`: the split line per column."""
        self.geo = geo
        device = split.device
        fh, hw = geo.fh, geo.half_w
        drop = JAW_DROP_FH * fh
        mx, my = (float(v) for v in geo.mouth)
        x0 = max(0, int(mx - 1.25 * hw))
        x1 = min(geo.width, int(mx + 1.25 * hw) + 2)
        pad = 0.09 * fh  # head motion moves the mouth by at most this much
        y0 = max(0, int(float(geo.split_y.min()) - pad) - 2)
        y1 = min(geo.height, int(float(geo.split_y.max()) + drop + pad) + 3)
        self.rows, self.cols = slice(y0, y1), slice(x0, x1)
        self._split = split
        self._drop = drop
        self._hw = hw
        self._mx = mx
        lm = geo.vertices
        lower_lip = np.concatenate([lm[list(geo.outer_lower)], lm[list(geo.inner_lower)][::-1]])
        lip = _polygon_mean(photo, lower_lip, np.array([150.0, 90.0, 90.0]))
        white = _eye_white(photo, geo)

        def rgb(c: np.ndarray) -> torch.Tensor:
            return torch.tensor(np.clip(c, 0, 255), dtype=torch.float32, device=device).view(
                1, 3, 1, 1
            )

        # The cavity and tongue are a mouth's dark reds at the lips' brightness, as saturated as
        # the photo's colours allow (a black-and-white photo gets greys); teeth are a warm
        # off-white in the light that falls on the eye whites, a little shaded by the lips.
        lum = float(lip @ np.array([0.299, 0.587, 0.114]))
        chroma = float(np.clip((lip.max() - lip.min()) / max(lip.max(), 1.0) / 0.25, 0.0, 1.0))

        def mouth_red(red: tuple[float, float, float]) -> np.ndarray:
            tone = np.asarray(red) / float(np.asarray(red) @ np.array([0.299, 0.587, 0.114]))
            return lum * (1.0 + chroma * (tone - 1.0))

        self._lit = rgb(mouth_red((0.75, 0.3, 0.3)) * 0.5)
        self._deep = rgb(mouth_red((0.6, 0.2, 0.22)) * 0.14)
        self._tongue = rgb(mouth_red((0.85, 0.42, 0.45)) * 0.78)
        self._teeth = rgb(white * np.array([0.82, 0.8, 0.74]))
        self._upper_teeth_px = 0.0 if geo.teeth_at_rest else 0.045 * fh
        self._lower_teeth_px = 0.0 if geo.teeth_at_rest else 0.015 * fh
        self._tooth_w = 0.42 * hw

    def _split_at(self, x: torch.Tensor) -> torch.Tensor:
        """The split line's y at fractional columns x (linear between columns)."""
        w = self._split.shape[0]
        xc = x.clamp(0, w - 1)
        i0 = xc.floor().long().clamp(max=w - 2) if w > 1 else xc.long()
        f = xc - i0
        return self._split[i0] * (1 - f) + self._split[(i0 + 1).clamp(max=w - 1)] * f

    def composite(self, crop: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> None:
        """Paint into `crop` [B, 3, H, W] (0–255) in place.

        `q` [B, h, w, 2]: each mouth-box pixel's position in the face's own frame (before head
        motion); `s` [B, h, w, 2]: the photo position the lower face field maps it to.
        """
        qx, qy = q[..., 0].unsqueeze(1), q[..., 1].unsqueeze(1)
        sx, sy = s[..., 0].unsqueeze(1), s[..., 1].unsqueeze(1)
        from_top = qy - self._split_at(qx)  # ≥ 0 below the upper lip's edge
        to_bottom = self._split_at(sx) - sy  # ≥ 0 above the lower lip's edge
        gap = from_top + to_bottom
        alpha = (from_top + 0.5).clamp(0.0, 1.0) * (to_bottom + 0.5).clamp(0.0, 1.0)
        alpha = alpha * gap.clamp(0.0, 1.0)
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
        u = ((qx - self._mx) / self._hw).clamp(-1.5, 1.5)
        # The opening closes into the lips' corners, never past them into the cheek.
        alpha = alpha * ((1.12 - u.abs()) / 0.12).clamp(0.0, 1.0)
        openness = (gap / self._drop).clamp(0.0, 1.0)

        # Light falls in past the upper lip and dies towards the throat and the corners.
        lit = torch.exp(-2.5 * t) * (1.0 - 0.7 * u * u).clamp(min=0.0)
        colour = self._deep + (self._lit - self._deep) * lit
        # The throat: darkest in the middle of a wide opening.
        throat = torch.exp(-(((t - 0.55) / 0.25) ** 2) - (u / 0.45) ** 2) * openness
        colour = colour * (1.0 - 0.35 * throat)
        # A hint of tongue: a soft mound at the bottom, once the mouth is well open.
        mound = 1.0 - ((1.0 - t) / 0.45) ** 2 - (u / 0.65) ** 2
        tongue = (mound * 1.5).clamp(0.0, 1.0) * (openness * 1.6 - 0.3).clamp(0.0, TONGUE_MAX)
        tongue_shade = (0.35 + 0.45 * (1.0 - u * u).clamp(min=0.0)) * (0.55 + 0.45 * t)
        colour = colour + (self._tongue * tongue_shade - colour) * tongue
        # Teeth: a row under the upper lip (and the tips of the lower ones on a wide opening),
        # shaded towards the corners, with faint gaps so they read as teeth, not a white bar.
        across = (1.0 - (u / 0.8) ** 2).clamp(min=0.0)
        gaps = 1.0 - 0.08 * torch.cos(math.pi * (qx - self._mx) / self._tooth_w).abs() ** 10
        if self._upper_teeth_px > 0:
            height = torch.minimum(self._upper_teeth_px * across.sqrt(), 0.45 * gap)
            upper = (height - from_top + 0.5).clamp(0.0, 1.0)
            shade = (0.62 + 0.38 * across) * gaps * (1.0 - 0.3 * (from_top / height.clamp(min=1)))
            colour = colour + (self._teeth * shade.clamp(0, 1) - colour) * upper
        if self._lower_teeth_px > 0:
            across_lo = (1.0 - (u / 0.5) ** 2).clamp(min=0.0)
            height = torch.minimum(self._lower_teeth_px * across_lo.sqrt(), 0.2 * gap)
            lower = (height - to_bottom + 0.5).clamp(0.0, 1.0) * (openness * 2 - 0.6).clamp(0, 1)
            shade = (0.5 + 0.25 * across_lo) * gaps
            colour = colour + (self._teeth * shade - colour) * lower
        # Each lip's inner shadow: the last pixels before a lip are darker.
        shadow = (0.65 + 0.35 * (from_top / 2.0).clamp(0, 1)) * (
            0.7 + 0.3 * (to_bottom / 2.5).clamp(0, 1)
        )
        colour = colour * shadow
        rows, cols = self.rows, self.cols
        region = crop[:, :, rows.start + r0 : rows.start + r1, cols.start + c0 : cols.start + c1]
        region += (colour - region) * alpha
