"""Blinks of the mesh photo avatar: the upper lid slides down the eye onto the lower lid.

The lid is the photo's own: per column of the eye, the band of lid skin between the lid crease
and the lashes stretches down, the lash line moves with the lid's edge, and what is under the
edge is the eye as it was (the lid covers it from the top, as a real lid does). It is a warp, not
a painted patch, so tone, texture and glasses stay the photo's; it is added to the face field in
the face's own frame, so the head's motion carries it, and costs nothing when no lid moves.
"""

from __future__ import annotations

import numpy as np
import torch

from agenthuman_local.engine.photo_warp import MeshGeometry


class LidWarp:
    def __init__(self, geo: MeshGeometry, photo: np.ndarray, device: str = "cpu") -> None:
        """`photo`: the crop at rest, RGB uint8 [H, W, 3], the lid's tone is measured on."""
        self._eyes: list[tuple[slice, slice, torch.Tensor, ...]] = []  # type: ignore[misc]
        self._gains: list[float] = []
        lum = photo.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        for upper, lower in geo.eye_lids:
            x_lo, x_hi = (
                float(min(upper[:, 0].min(), lower[:, 0].min())),
                float(max(upper[:, 0].max(), lower[:, 0].max())),
            )
            ou, ol = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
            x0, x1 = max(0, int(x_lo) - 1), min(geo.width, int(x_hi) + 3)
            xs = np.arange(x0, x1, dtype=np.float32)
            y_up = np.interp(xs, upper[ou, 0], upper[ou, 1])
            y_lo = np.interp(xs, lower[ol, 0], lower[ol, 1])
            inside = (xs >= x_lo) & (xs <= x_hi)
            h = np.where(inside, np.clip(y_lo - y_up, 0.0, None), 0.0)
            h_max = float(h.max()) if h.size else 0.0
            if h_max < 1.0 or x1 - x0 < 3:
                continue
            # The lid's skin band thins into the corners with the eye's opening.
            top = y_up - 0.8 * h_max * np.sqrt(h / h_max)
            lash = max(1.0, 0.22 * h_max)
            y0 = max(0, int(top.min()) - 1)
            y1 = min(geo.height, int(y_lo.max()) + 3)
            if y1 - y0 < 3:
                continue

            def t(a: np.ndarray) -> torch.Tensor:
                return torch.tensor(a, dtype=torch.float32, device=device).view(1, 1, -1)

            ys = torch.arange(y0, y1, dtype=torch.float32, device=device).view(1, -1, 1)
            self._eyes.append((slice(y0, y1), slice(x0, x1), ys, t(y_up), t(h), t(top), lash))
            # A closed lid shows skin that is folded away and shaded while the eye is open: the
            # stretched band is brought up to the tone of the skin under the eye, never darker.
            grid_y = np.arange(geo.height, dtype=np.float32)[:, None]
            cols = lum[:, x0:x1]
            band = (grid_y >= top) & (grid_y < y_up - lash) & (h > 0)
            below = (grid_y >= y_lo + 0.4 * h_max) & (grid_y < y_lo + 1.4 * h_max) & (h > 0)
            if band.any() and below.any():
                gain = float(cols[below].mean() / max(1.0, cols[band].mean()))
            else:
                gain = 1.0
            self._gains.append(float(np.clip(0.9 * gain, 1.0, 1.25)))

    def patches(self) -> list[tuple[slice, slice]]:
        return [(rows, cols) for rows, cols, *_ in self._eyes]

    def displacements(self, blink: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per eye patch, the vertical displacement [B, h, w] (pixels) the lids add, and the
        gain [B, h, w] that brings the stretched lid to the skin's tone (1 elsewhere)."""
        b = blink.clamp(0.0, 1.0).view(-1, 1, 1)
        out = []
        for (_rows, _cols, ys, y_up, h, top, lash), gain in zip(
            self._eyes, self._gains, strict=True
        ):
            # Past the lower lid by half a pixel when shut, so no sliver of eye stays.
            edge = y_up + b * (h + 0.6 * (h > 0))
            skin_span = (y_up - lash - top).clamp(min=0.5)
            stretched = top + (ys - top) * skin_span / (edge - lash - top).clamp(min=0.5)
            src = torch.where(ys < edge - lash, stretched, ys - (edge - y_up))
            src = torch.where(ys < top, ys, src)
            d = ys - src
            # The lid's edge over the eye: a one-pixel ramp instead of a stair.
            d = d * (1.0 - (ys - edge + 0.5).clamp(0.0, 1.0))
            # The gain grows with the stretch, fading in below the band's top and out at the
            # lashes.
            cover = ((ys - top) / (0.3 * (y_up - top)).clamp(min=1.0)).clamp(0, 1)
            cover = cover * (edge - lash - ys).clamp(0, 1) * b
            out.append((d, 1.0 + (gain - 1.0) * cover))
        return out
