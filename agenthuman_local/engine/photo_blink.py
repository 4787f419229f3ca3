"""Blinks of the mesh photo avatar: the upper lid slides down the eye onto the lower lid.

The lid is the photo's own: across the eye (in the eye's own axes, so a tilted or turned eye
closes along its contour), the band of lid skin between the crease and the lashes moves down
with the lid's edge, lashes first, and the skin under the crease unfolds behind it; what is
under the edge is the eye as it was (the lid covers it from the top, as a real lid does). At
the closed lid's edge a soft lash line is shaded in. It is a warp, not a painted patch, so
tone, texture and glasses stay the photo's; it is added to the face field in the face's own
frame, so the head's motion carries it, and costs nothing when no lid moves.

The eye and the lid's measures come from `engine.photo_eye`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agenthuman_local.engine.photo_eye import (
    GROW_DOWN,
    GROW_SIDE,
    GROW_UP,
    curve,
    eye_bounds,
    eye_mask,
    local,
)
from agenthuman_local.engine.photo_geometry import LUMA, MeshGeometry
from agenthuman_local.engine.photo_lid_tone import BAND, lid_lift, lid_rows

_LASH_DARK = 0.25  # the closed lid's lash line, at its darkest
_LASH_PX = 0.9  # its half-width, pixels
# The photo's lash rows ride down on the closed lid's edge squeezed to at most this many eye
# openings: a lash line measured thick (lashes, lid margin and its shade: Jesse's lit eye, 4.4 px
# of a 9.7 px opening) closed as a dark band across 0.45 of the lid; shut, the lashes point down.
# At 0.3 and under, Grace's mirrored far lid closes at over 1.4 of its band's tone (lashes in it).
_LASH_SHUT = 0.35
# The stretched lid skin is drawn from a copy blurred along the eye by this share of the eye's
# length (a Gaussian's sigma), mixed in by this many times how much it is stretched (1 − 1/×).
_SMOOTH, _SMOOTH_MIX = 0.06, 1.0
# ...and given back the fine grain the blur took out, from the skin this many eye openings
# under the eye (a blur of this sigma, px, takes it out there).
_GRAIN_DOWN, _GRAIN_SIGMA = 1.6, 1.2


@dataclass(frozen=True)
class _Eye:
    """One eye's lid, per pixel of its patch ([1, h, w] unless said), in the eye's axes."""

    rows: slice
    cols: slice
    below_top: torch.Tensor  # how far under the top of the lid's skin band (≤ 0: nothing moves)
    below_eye: torch.Tensor  # how far under the eye's top edge (the open lid's edge)
    travel: torch.Tensor  # how far the lid's edge goes when shut (past the lower lid)
    skin: torch.Tensor  # the height of the band's skin above the lashes (≥ 0.5)
    in_lid: torch.Tensor  # bool: in the band or the eye (what the lid can cover)
    line: torch.Tensor  # the lash line's darkness, thinning into the corners
    lash: float  # the lash line's width over the eye, pixels
    squeeze: float  # the share of `lash` it is squeezed to when shut (≤ 1)
    lift: (
        torch.Tensor
    )  # [1, 3, h, w] the colour added to the closed lid (`photo_lid_tone.lid_lift`)
    own: torch.Tensor  # [1, 3, h, w] the photo's pixels, for the lid's anti-aliased edge
    smooth: torch.Tensor  # [1, 3, h, w] the photo's pixels blurred along the eye
    grain: torch.Tensor  # [1, 3, h, w] the fine texture of the skin under the eye, zero-mean
    grid: torch.Tensor  # [1, h, w, 2] the patch's pixel centres in grid_sample's units
    to_grid: torch.Tensor  # [2] pixels → grid_sample's units over the patch
    nrm: torch.Tensor  # [2] the across-the-eye unit vector (x, y)


def _along_blur(rgb: np.ndarray, ax: np.ndarray, sigma: float) -> np.ndarray:
    """`rgb` [h, w, 3] blurred along the unit vector `ax` only (a Gaussian of `sigma` px)."""
    r = int(np.ceil(2.5 * sigma))
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    for o in np.linspace(-r, r, 8 * r + 1):
        x, y = r + o * float(ax[0]), r + o * float(ax[1])
        i, j = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - i, y - j
        w = float(np.exp(-0.5 * (o / sigma) ** 2))
        for dj, wy in ((0, 1 - fy), (1, fy)):
            for di, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= j + dj <= 2 * r and 0 <= i + di <= 2 * r:
                    kernel[j + dj, i + di] += w * wx * wy
    kernel /= kernel.sum()
    return cv2.filter2D(rgb.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)


def _grain(photo: np.ndarray, gx: np.ndarray, gy: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The skin's fine texture [h, w, 3] (what a blur of `_GRAIN_SIGMA` takes out), as it is
    `offset` (x, y) pixels from each patch pixel (`gx`, `gy`): under the eye, where the skin
    is the lid's kind and is not stretched."""
    rgb = photo.astype(np.float32)
    fine = rgb - cv2.GaussianBlur(rgb, (0, 0), _GRAIN_SIGMA)
    mx, my = (gx + float(offset[0])).astype(np.float32), (gy + float(offset[1])).astype(np.float32)
    return cv2.remap(fine, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _patch_grid(h: int, w: int, device: str) -> torch.Tensor:
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).unsqueeze(0).to(device)


class LidWarp:
    """Per eye, in the eye's own axes (along its corner-to-corner line `s`, across it `t`,
    pointing down the face), so a tilted or turned eye closes along its own contour."""

    def __init__(self, geo: MeshGeometry, photo: np.ndarray, device: str = "cpu") -> None:
        """`photo`: the crop at rest, RGB uint8 [H, W, 3], the eye is found and the lid's tone
        measured on."""
        self._eyes: list[_Eye] = []
        lum_all = photo.astype(np.float32) @ LUMA
        for e, (upper, lower) in enumerate(geo.eye_lids):
            c0, c1 = upper[0], upper[-1]
            length = float(np.hypot(*(c1 - c0)))
            if length < 3.0:
                continue
            ax = (c1 - c0) / length
            nrm = np.array([-ax[1], ax[0]], np.float32)
            if float(nrm @ geo.ey) < 0:
                nrm = -nrm
            su, tu = local(upper, c0, ax, nrm)
            sl, tl = local(lower, c0, ax, nrm)
            h_max = float(np.max(curve(sl, tl, su) - tu))
            if h_max < 1.0:
                continue
            iris = geo.irises[e]
            radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
            # Room for the eye grown past the contour, the lid's band above it and the skin under
            # it (the lid's tone is measured there).
            reach = (GROW_UP + BAND) * h_max + 2.0
            pts = np.concatenate(
                [upper, lower, upper - nrm * reach, lower + nrm * (GROW_DOWN + 1.0) * h_max]
                + [np.stack([c0 - ax * GROW_SIDE * length, c1 + ax * GROW_SIDE * length])]
                + [np.stack([iris[0] - radius - 1, iris[0] + radius + 1])]
            )
            (x0, y0), (x1, y1) = np.floor(pts.min(0)) - 2, np.ceil(pts.max(0)) + 3
            x0, y0 = int(max(0, x0)), int(max(0, y0))
            x1, y1 = int(min(geo.width, x1)), int(min(geo.height, y1))
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            rows, cols = slice(y0, y1), slice(x0, x1)
            mask, span = eye_mask(geo, photo, e, rows, cols)
            gy, gx = np.mgrid[rows, cols].astype(np.float32)
            s_px, t_px = local(np.stack([gx, gy], -1), c0, ax, nrm)
            t_up, t_lo, h = eye_bounds(mask, s_px, t_px, (su, tu), (sl, tl), length, span)
            lash, band = lid_rows(lum_all[rows, cols], s_px, t_px, t_up, h, length, h_max)
            # The lid's skin band thins into the corners with the eye's opening.
            top = t_up - band * np.sqrt(np.clip(h / max(h_max, float(h.max())), 0, 1))
            lift = lid_lift(
                photo[rows, cols].astype(np.float32), s_px, t_px, t_up, t_lo, h, top, h_max, lash
            )

            def t(a: np.ndarray) -> torch.Tensor:
                return torch.tensor(a, dtype=torch.float32, device=device).unsqueeze(0)

            def rgb(a: np.ndarray) -> torch.Tensor:
                return t(np.ascontiguousarray(a, np.float32)).permute(0, 3, 1, 2).contiguous()

            open_ = h > 0
            opening = np.sqrt(np.clip(h / max(1.0, float(h.max())), 0, 1))
            self._eyes.append(
                _Eye(
                    rows=rows,
                    cols=cols,
                    below_top=t(t_px - top),
                    below_eye=t(t_px - t_up),
                    # Past the lower lid by 0.6 px when shut, so no sliver of eye stays.
                    travel=t(h + 0.6 * open_),
                    skin=t(np.clip(t_up - lash - top, 0.5, None)),
                    in_lid=t((t_px >= top) & open_).bool(),
                    line=t(_LASH_DARK * opening * open_),
                    lash=lash,
                    squeeze=min(1.0, _LASH_SHUT * h_max / lash),
                    lift=rgb(lift),
                    own=rgb(photo[rows, cols]),
                    smooth=rgb(_along_blur(photo[rows, cols], ax, max(1.0, _SMOOTH * length))),
                    grain=rgb(_grain(photo, gx, gy, nrm * _GRAIN_DOWN * h_max)),
                    grid=_patch_grid(y1 - y0, x1 - x0, device),
                    to_grid=torch.tensor(
                        [2.0 / (x1 - x0), 2.0 / (y1 - y0)], dtype=torch.float32, device=device
                    ),
                    nrm=torch.tensor(nrm, dtype=torch.float32, device=device),
                )
            )

    def patches(self) -> list[tuple[slice, slice]]:
        return [(eye.rows, eye.cols) for eye in self._eyes]

    def displacements(
        self, blink: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per eye patch, the displacement [B, h, w, 2] (pixels, x then y) the lids add, then
        what the sampled pixels [B, 3, h, w] are multiplied by ([B, 1, h, w]: the lash line)
        and what is added to them ([B, 3, h, w]: the lid's tone), 1 and 0 elsewhere."""
        b = blink.clamp(0.0, 1.0).view(-1, 1, 1)
        out = []
        for eye in self._eyes:
            travel = b * eye.travel
            under_edge = eye.below_eye - travel  # ≥ 0 under the lid's edge, on the eye
            # The lashes ride down squeezed from `lash` to `lash · q` (a pixel `u` above the
            # edge samples `u / q` above the open edge); the band's skin above them stretches
            # down over the rest of the gap: a pixel `below_top` under the band's top samples
            # `below_top · skin / fold` under it.
            q = 1.0 - b * (1.0 - eye.squeeze)
            lash = eye.lash * q
            fold = eye.skin + travel + (eye.lash - lash)
            d = torch.where(
                under_edge < -lash,
                eye.below_top * (1.0 - eye.skin / fold.clamp(min=0.5)),
                travel + under_edge * (1.0 - 1.0 / q),
            )
            # A pixel the edge crosses samples the lid and is mixed with the eye under it by how
            # much of it the lid covers: an anti-aliased edge from one sample.
            lid = eye.in_lid & (under_edge < 0.5)
            d = d * lid
            cover = torch.where(lid, (0.5 - under_edge).clamp(0, 1), 1.0)
            # The lid's tone (`lid_lift`): its own at the crease, the shown lid's (nudged
            # towards the cheek's) from halfway down, its own again over the lashes; and the
            # lash line along the edge, a soft dark line on the lid side.
            ramp = (eye.below_top / (0.5 * fold).clamp(min=1.0)).clamp(0, 1)
            ramp = ramp * (-under_edge / lash).clamp(0, 1) * eye.in_lid
            line = torch.exp(-(((under_edge + 0.7) / _LASH_PX) ** 2)) * eye.line
            mul = cover * (1.0 - line * (2 * b).clamp(max=1.0))
            c = cover.unsqueeze(1)
            add = eye.own + c * (eye.lift * (ramp * b).unsqueeze(1) - eye.own)
            move = d.unsqueeze(-1) * eye.nrm
            # The stretched skin is magnified across the eye only, so its pores and wrinkles
            # would become streaks: it is drawn from the photo blurred along the eye, the more
            # the more it is stretched (the same samples, from the blurred copy).
            stretch = (
                torch.where(under_edge < -lash, 1.0 - eye.skin / fold.clamp(min=0.5), 0.0) * lid
            )
            if bool((stretch > 0).any()):
                smooth = F.grid_sample(
                    eye.smooth.expand(len(b), -1, -1, -1),
                    eye.grid - move * eye.to_grid,
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=False,
                )
                k = (stretch * _SMOOTH_MIX).clamp_(max=1.0)
                add = add + (mul * k).unsqueeze(1) * (smooth + eye.grain)
                mul = mul * (1.0 - k)
            out.append((move, mul.unsqueeze(1), add))
        return out
