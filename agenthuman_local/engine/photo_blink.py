"""Blinks of the mesh photo avatar: the upper lid slides down the eye onto the lower lid.

The lid is the photo's own: across the eye (in the eye's own axes, so a tilted or turned eye
closes along its contour), the band of lid skin between the crease and the lashes stretches
down, the lash line moves with the lid's edge, and what is under the edge is the eye as it was
(the lid covers it from the top, as a real lid does). It is a warp, not a painted patch, so
tone, texture and glasses stay the photo's; it is added to the face field in the face's own
frame, so the head's motion carries it, and costs nothing when no lid moves.
"""

from __future__ import annotations

import numpy as np
import torch

from agenthuman_local.engine.photo_warp import MeshGeometry


def _local(
    pts: np.ndarray, origin: np.ndarray, ax: np.ndarray, nrm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    d = pts - origin
    return d @ ax, d @ nrm


class LidWarp:
    """Per eye, in the eye's own axes (along its corner-to-corner line `s`, across it `t`,
    pointing down the face), so a tilted or turned eye closes along its own contour."""

    def __init__(self, geo: MeshGeometry, photo: np.ndarray, device: str = "cpu") -> None:
        """`photo`: the crop at rest, RGB uint8 [H, W, 3], the lid's tone is measured on."""
        self._eyes: list[
            tuple[
                slice,
                slice,
                torch.Tensor,
                torch.Tensor,
                torch.Tensor,
                torch.Tensor,
                float,
                torch.Tensor,
            ]
        ] = []
        self._gains: list[float] = []
        lum = photo.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        for upper, lower in geo.eye_lids:
            c0, c1 = upper[0], upper[-1]
            length = float(np.hypot(*(c1 - c0)))
            if length < 3.0:
                continue
            ax = (c1 - c0) / length
            nrm = np.array([-ax[1], ax[0]], np.float32)
            if float(nrm @ geo.ey) < 0:
                nrm = -nrm
            su, tu = _local(upper, c0, ax, nrm)
            sl, tl = _local(lower, c0, ax, nrm)
            h_max = float(np.max(np.interp(su, sl[np.argsort(sl)], tl[np.argsort(sl)]) - tu))
            if h_max < 1.0:
                continue
            band = 0.8 * h_max
            pts = np.concatenate([upper, lower, upper - nrm * (band + 1.0)])
            (x0, y0), (x1, y1) = np.floor(pts.min(0)) - 2, np.ceil(pts.max(0)) + 3
            x0, y0 = int(max(0, x0)), int(max(0, y0))
            x1, y1 = int(min(geo.width, x1)), int(min(geo.height, y1))
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            s_px, t_px = _local(np.stack([gx, gy], -1).reshape(-1, 2), c0, ax, nrm)
            s_px, t_px = s_px.reshape(gx.shape), t_px.reshape(gx.shape)
            t_up = np.interp(s_px, su[np.argsort(su)], tu[np.argsort(su)])
            t_lo = np.interp(s_px, sl[np.argsort(sl)], tl[np.argsort(sl)])
            inside = (s_px >= 0.0) & (s_px <= length)
            h = np.where(inside, np.clip(t_lo - t_up, 0.0, None), 0.0)
            # The lid's skin band thins into the corners with the eye's opening.
            top = t_up - band * np.sqrt(h / h_max)
            lash = max(1.0, 0.22 * h_max)
            # A closed lid shows skin that is folded away and shaded while the eye is open: the
            # stretched band is brought up to the tone of the skin under the eye, never darker.
            patch = lum[y0:y1, x0:x1]
            skin = (t_px >= top) & (t_px < t_up - lash) & (h > 0)
            below = (t_px >= t_lo + 0.4 * h_max) & (t_px < t_lo + 1.4 * h_max) & inside
            gain = 1.0
            if skin.any() and below.any():
                gain = float(patch[below].mean() / max(1.0, patch[skin].mean()))
            self._gains.append(float(np.clip(0.9 * gain, 1.0, 1.25)))

            def t(a: np.ndarray) -> torch.Tensor:
                return torch.tensor(a, dtype=torch.float32, device=device).unsqueeze(0)

            n = torch.tensor(nrm, dtype=torch.float32, device=device)
            self._eyes.append(
                (slice(y0, y1), slice(x0, x1), t(t_px), t(t_up), t(h), t(top), lash, n)
            )

    def patches(self) -> list[tuple[slice, slice]]:
        return [(rows, cols) for rows, cols, *_ in self._eyes]

    def displacements(self, blink: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per eye patch, the displacement [B, h, w, 2] (pixels, x then y) the lids add, and
        the gain [B, h, w] that brings the stretched lid to the skin's tone (1 elsewhere)."""
        b = blink.clamp(0.0, 1.0).view(-1, 1, 1)
        out = []
        for (_rows, _cols, ts, t_up, h, top, lash, nrm), gain in zip(
            self._eyes, self._gains, strict=True
        ):
            # Past the lower lid by half a pixel when shut, so no sliver of eye stays.
            edge = t_up + b * (h + 0.6 * (h > 0))
            skin_span = (t_up - lash - top).clamp(min=0.5)
            stretched = top + (ts - top) * skin_span / (edge - lash - top).clamp(min=0.5)
            src = torch.where(ts < edge - lash, stretched, ts - (edge - t_up))
            src = torch.where(ts < top, ts, src)
            d = ts - src
            # The lid's edge over the eye: a one-pixel ramp instead of a stair.
            d = d * (1.0 - (ts - edge + 0.5).clamp(0.0, 1.0))
            # The gain grows with the stretch, fading in below the band's top and out at the
            # lashes.
            cover = ((ts - top) / (0.3 * (t_up - top)).clamp(min=1.0)).clamp(0, 1)
            cover = cover * (edge - lash - ts).clamp(0, 1) * b
            out.append((d.unsqueeze(-1) * nrm, 1.0 + (gain - 1.0) * cover))
        return out
