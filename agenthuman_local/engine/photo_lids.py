"""Blinks for the photo avatar: a synthetic upper lid drawn down over each eye.

Warping the photo's lid down over the eye stretches lashes and iris into streaks at this size
(tried first), so the lid is drawn instead: the skin colour measured just above the eye, shaded
towards its edge, with a lash line along the edge. Drawn in the face's own frame, like the
inner mouth, so head motion carries it along.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agenthuman_local.engine.photo_fields import CropGeometry

_LASH = (48.0, 34.0, 30.0)


def _rows(top: float, height: float, limit: int) -> slice:
    start = min(max(0, int(top)), limit - 1)
    return slice(start, min(limit, max(start + 1, int(top + height))))


def _mean_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """[3, ...] → [1, 3, 1, 1]; a patch off the crop's edge counts as mid-grey."""
    flat = pixels.reshape(3, -1)
    mean = flat.mean(dim=1) if flat.shape[1] else torch.full((3,), 128.0, device=pixels.device)
    return mean.view(1, 3, 1, 1)


class EyeLids:
    def __init__(self, geo: CropGeometry, src: torch.Tensor) -> None:
        """`src` is the photo's crop [1, 3, H, W] (0–255) the lid colour is measured from."""
        self._eyes: list[tuple[slice, slice, float, float, float, float, torch.Tensor]] = []
        self._src = src
        self._lash = torch.tensor(_LASH, device=src.device).view(1, 3, 1, 1)
        self._size = (geo.width, geo.height)
        pad = 0.2 * geo.ed  # head motion moves an eye by at most this much
        for ex, ey, box_w in geo.eyes:
            half_w, half_h = 0.34 * box_w, 0.135 * box_w
            ey = ey + 0.02 * box_w
            x0 = max(0, int(ex - half_w - pad))
            x1 = min(geo.width, int(ex + half_w + pad) + 2)
            y0 = max(0, int(ey - 2.0 * half_h - pad))
            y1 = min(geo.height, int(ey + 1.2 * half_h + pad) + 2)
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            # The band under the brow is the brightest skin near the eye; a real lid sits in
            # the tone of the skin around the eye, so the band is toned to match that ring.
            cx0, cx1 = max(0, int(ex - half_w)), min(geo.width, int(ex + half_w) + 1)
            band = src[0, :, _rows(ey - 3.2 * half_h, half_h, geo.height), cx0:cx1]
            beside = _rows(ey - 0.5 * half_h, half_h, geo.height)
            left = slice(max(0, int(ex - 1.6 * half_w)), max(1, int(ex - 1.2 * half_w)))
            right = slice(min(geo.width - 1, int(ex + 1.2 * half_w)), int(ex + 1.6 * half_w))
            below = _rows(ey + 1.6 * half_h, half_h, geo.height)
            ring = torch.cat(
                [
                    src[0, :, below, cx0:cx1].reshape(3, -1),
                    src[0, :, beside, left].reshape(3, -1),
                    src[0, :, beside, right].reshape(3, -1),
                ],
                dim=1,
            )
            gain = (_mean_rgb(ring) / _mean_rgb(band).clamp(min=1.0)).clamp(0.75, 1.1)
            self._eyes.append((slice(y0, y1), slice(x0, x1), ex, ey, half_w, half_h, gain))

    def patches(self) -> list[tuple[slice, slice]]:
        return [(rows, cols) for rows, cols, *_ in self._eyes]

    def composite(self, crop: torch.Tensor, qs: list[torch.Tensor], blink: torch.Tensor) -> None:
        """Paint the lids into `crop` [B, 3, H, W] in place.

        `qs[i]` [B, h, w, 2]: face-frame pixel positions of eye patch i; `blink` [B] in [0, 1].
        """
        b = blink.clamp(0.0, 1.0).view(-1, 1, 1, 1)
        lash = self._lash
        for (rows, cols, ex, ey, half_w, half_h, gain), q in zip(self._eyes, qs, strict=True):
            qx, qy = q[..., 0].unsqueeze(1), q[..., 1].unsqueeze(1)
            prof = (1.0 - ((qx - ex) / half_w) ** 2).clamp(min=0.0).sqrt()
            upper = ey - half_h * prof
            lower = ey + 0.7 * half_h * prof
            edge = upper + b * (lower - upper)
            # Fades in above the photo's own upper lashes and covers them: left showing, they
            # would outline the closed lid like a pair of goggles.
            top = ((qy - (upper - 1.0 * half_h)) / (0.7 * half_h)).clamp(0.0, 1.0)
            alpha = top * (edge - qy + 0.5).clamp(0.0, 1.0)
            alpha = (
                alpha
                * ((edge - upper) / (0.4 * half_h)).clamp(0.0, 1.0)
                * (prof * 3).clamp(max=1.0)
            )
            depth = ((qy - upper) / (edge - upper).clamp(min=1.0)).clamp(0.0, 1.0)
            # A convex lid: darker towards its edge and its corners.
            shade = gain * (1.0 - 0.18 * depth - 0.12 * (1.0 - prof))
            colour = self._lid_skin(qx, qy, upper - half_h, edge, ey - 3.2 * half_h, half_h)
            colour = colour * shade
            lash_w = (1.0 - (edge - qy - 0.3).abs() / 1.6).clamp(min=0.0) * prof.clamp(max=1.0)
            colour = colour + (lash - colour) * (0.9 * lash_w)
            region = crop[:, :, rows, cols]
            region += (colour - region) * alpha

    def _lid_skin(
        self,
        qx: torch.Tensor,
        qy: torch.Tensor,
        top: torch.Tensor,
        edge: torch.Tensor,
        band_y: float,
        band_h: float,
    ) -> torch.Tensor:
        """The photo's own skin from the band under the brow, stretched over the lid: real
        tone and texture, which a flat colour never matches."""
        rel = ((qy - top) / (edge - top).clamp(min=1.0)).clamp(0.0, 1.0)
        sy = band_y + rel * band_h
        w, h = self._size
        grid = torch.cat([(2 * qx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=1).permute(0, 2, 3, 1)
        src = self._src.expand(qx.shape[0], -1, -1, -1)
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
