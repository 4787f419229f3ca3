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
    def __init__(self, geo: MeshGeometry, device: str = "cpu") -> None:
        self._eyes: list[tuple[slice, slice, torch.Tensor, ...]] = []  # type: ignore[misc]
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

    def patches(self) -> list[tuple[slice, slice]]:
        return [(rows, cols) for rows, cols, *_ in self._eyes]

    def displacements(self, blink: torch.Tensor) -> list[torch.Tensor]:
        """Per eye patch, the vertical displacement [B, h, w] (pixels) the lids add."""
        b = blink.clamp(0.0, 1.0).view(-1, 1, 1)
        out = []
        for _rows, _cols, ys, y_up, h, top, lash in self._eyes:
            # Past the lower lid by half a pixel when shut, so no sliver of eye stays.
            edge = y_up + b * (h + 0.6 * (h > 0))
            skin_span = (y_up - lash - top).clamp(min=0.5)
            stretched = top + (ys - top) * skin_span / (edge - lash - top).clamp(min=0.5)
            src = torch.where(ys < edge - lash, stretched, ys - (edge - y_up))
            src = torch.where(ys < top, ys, src)
            d = ys - src
            # The lid's edge over the eye: a one-pixel ramp instead of a stair.
            d = d * (1.0 - (ys - edge + 0.5).clamp(0.0, 1.0))
            out.append(d)
        return out
