"""The inner mouth of the mesh photo avatar, drawn only where the lips have parted.

A pixel is inside the opening when, in the face's own frame, it lies under the split line (the
upper lip's edge, which stays) while the lower field samples the photo from above the split line
(so it is above the lower lip's displaced edge). Both distances come from the warp itself, so
the opening is exactly the gap between the lips, with anti-aliased edges, and nothing is
painted over a lip.

Inside: a cavity shaded from the lips inward (light falling past the upper lip, a darker
throat, the cheeks' shadow at the corners, each lip's inner shadow), a hint of tongue (a mound
with a rounded, lit top), and upper teeth — the photo's own where it shows them (the split
carries them with the upper lip), else synthesized: a row along an arch under the upper lip,
narrowing towards the corners, with separations, rounded tips, a lit upper part fading into
shadow towards the back, and the tips of the lower teeth on a wide opening. Colours come from
the photo: the cavity from its lips, the teeth from its eye whites and lit skin, so both match
the skin tone and exposure (a black-and-white photo gets greys).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from agenthuman_local.engine.photo_geometry import LUMA, MeshGeometry, saturation, smoothstep
from agenthuman_local.engine.photo_jaw import JAW_DROP_FH, opening_reach

TONGUE_MAX = 0.85
_U_MAX, _U_STEPS = 1.5, 601  # tables along the mouth: −1.5…1.5 half widths
_T_STEPS = 257  # tables between the lips: 0 (upper) … 1 (lower)
# The teeth's separations and rounded tips show on teeth at least this wide, pixels (fading in
# from the first); a separation is drawn over a pixel's footprint (this sigma).
_SEAM_PX = (4.0, 9.0)
_SPLIT_ROWS = 1  # the rows under the split line where the lower lip's depth is not yet the field's
_PIXEL_SIGMA = 0.5
# The opening's coverage of a pixel is taken down this many columns across it; a lip's edge
# counts as sloping at most this many pixels a column.
_SUBCOLUMNS, _STEEP = 4, 4.0
# Synthesized teeth (a photo that shows none): the longest visible length of each row, in face
# heights. The lower ones show only in front, this far along the mouth (half widths), with
# this much of the upper teeth's light (the upper lip and teeth shade them).
UPPER_TEETH_FH, LOWER_TEETH_FH = 0.042, 0.016
_LOWER_REACH, _LOWER_LIGHT = 0.45, 0.75


def _across_columns(v: torch.Tensor) -> torch.Tensor:
    """How `v` [B, 1, h, w] changes from one column to the next (central differences), at most
    `_STEEP` pixels a column (a field's fold is not a slope)."""
    padded = torch.cat([v[..., :1], v, v[..., -1:]], dim=-1)
    return ((padded[..., 2:] - padded[..., :-2]) * 0.5).clamp_(-_STEEP, _STEEP)


def _coverage(from_top: torch.Tensor, to_bottom: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The share of each pixel the opening covers: the part `keep` (0–1) of the gap between the
    lips about its middle, the gap's rows exact down each of `_SUBCOLUMNS` columns across the
    pixel. Near a corner the gap is a thin, steep sliver; cut at the pixels' centres it would be
    dotted (dark flecks beside the lips' corners)."""
    slope_top, slope_bottom = _across_columns(from_top), _across_columns(to_bottom)
    alpha = torch.zeros_like(from_top)
    for k in range(_SUBCOLUMNS):
        dx = (k + 0.5) / _SUBCOLUMNS - 0.5
        top, bottom = from_top + slope_top * dx, to_bottom + slope_bottom * dx
        half = (top + bottom).mul_(0.5).mul_(keep)
        middle = (bottom - top).mul_(0.5)  # under the pixel's centre
        upper = torch.maximum(middle - half, middle.new_tensor(-0.5))
        alpha += torch.minimum(middle + half, middle.new_tensor(0.5)).sub_(upper).clamp_(0.0, 1.0)
    return alpha.div_(_SUBCOLUMNS)


def _polygon_mean(rgb: np.ndarray, polygon: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], 1)
    pix = rgb[mask.astype(bool)]
    return pix.mean(axis=0) if len(pix) >= 4 else fallback


def _eye_white(rgb: np.ndarray, geo: MeshGeometry) -> np.ndarray | None:
    """The colour of white under this photo's light: the brighter sclera pixels (None when the
    eyes show too little sclera to tell)."""
    mask = np.zeros(rgb.shape[:2], np.uint8)
    for upper, lower in geo.eye_lids:
        cv2.fillPoly(mask, [np.round(np.concatenate([upper, lower[::-1]])).astype(np.int32)], 1)
    for iris in geo.irises:
        r = float(np.hypot(*(iris[1:] - iris[0]).T).mean()) * 1.1
        cv2.circle(mask, tuple(int(v) for v in np.round(iris[0])), max(1, int(r)), 0, -1)
    pix = rgb[mask.astype(bool)].astype(np.float32)
    if len(pix) < 6:
        return None
    lum = pix @ LUMA
    return pix[lum >= np.percentile(lum, 70)].mean(axis=0)


def _skin(rgb: np.ndarray, geo: MeshGeometry) -> np.ndarray:
    """The lit skin's colour: the brighter of patches on both cheeks and the chin."""
    lm = geo.vertices
    r = max(2, int(0.03 * geo.fh))
    best, best_lum = np.array([190.0, 150.0, 130.0], np.float32), -1.0
    for centre in (lm[50], lm[280], (lm[17] + geo.chin) / 2):
        x, y = (int(v) for v in np.round(centre))
        patch = rgb[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].reshape(-1, 3)
        if len(patch) >= 4:
            mean = patch.astype(np.float32).mean(axis=0)
            if float(mean @ LUMA) > best_lum:
                best, best_lum = mean, float(mean @ LUMA)
    return best


def _teeth_colour(rgb: np.ndarray, geo: MeshGeometry, chroma: float) -> np.ndarray:
    """Teeth in this photo's light: an ivory as bright as the eye whites when those can be
    read (and are near-neutral), kept within the lit skin's brightness range, tinted by the
    photo's light as far as the photo has colour at all."""
    skin = _skin(rgb, geo)
    skin_lum = float(skin @ LUMA)
    lum = 0.95 * skin_lum
    white = _eye_white(rgb, geo)
    if white is not None:
        if saturation(white) < 0.22:
            lum = float(white @ LUMA)
    lum = float(np.clip(lum, 0.8 * skin_lum, 1.1 * skin_lum))
    light = skin / max(skin_lum, 1.0)  # warm, from the skin; only a touch of it
    tone = np.array([1.0, 0.95, 0.85], np.float32) * (1.0 + 0.45 * (light - 1.0))
    tone = 1.0 + chroma * (tone / float(tone @ LUMA) - 1.0)
    return np.clip(lum * tone, 0, 250)


def _teeth(
    u: torch.Tensor, step: float, length_px: float, reach: float, half_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A row of teeth seen from the front, along the mouth (`u`: −1…1 corner to corner).

    The row is an arch: a tooth every `step` radians around it, so the teeth narrow towards
    the corners, the two middle ones a little wider, with the midline between them. Returns
    each column's visible length in pixels (longest in the middle, each tooth's tip rounded
    off at its sides, the canines a touch longer than their neighbours), the light across
    the row (bright in front, fading into shadow towards the back) with each tooth's face a
    little rounded, and how far into a separation each column is (1 in it, 0 on a tooth).
    `half_w` [len(u)]: pixels per unit of `u` there (each side's own, on a turned mouth).
    """
    theta = torch.asin((u / 1.15).clamp(-0.99, 0.99))
    phase = theta.abs() / step
    phase = phase * (1.0 - 0.15 * torch.exp(-(phase**2)))  # the middle incisors are wider
    k = phase.floor()
    w = phase - k  # across one tooth, 0…1
    edge = torch.minimum(w, 1.0 - w)
    tooth_px = (half_w * 1.15 * step * torch.cos(theta)).clamp(min=1.0)
    length = 1.0 - 0.12 * k.clamp(max=3.0) + 0.1 * (k == 2).float()
    # How much of a tooth's outline its width in pixels can show: on small teeth, a notch or
    # a line every few pixels reads as a row of dots.
    fine = smoothstep(_SEAM_PX[0], _SEAM_PX[1], tooth_px)
    tip = 1.0 - 0.35 * fine * (2.0 * edge - 1.0).abs() ** 6
    arch = (1.0 - (u / reach) ** 2).clamp(min=0.0).sqrt()
    height = length_px * arch * length.clamp(min=0.4) * tip
    form = (0.45 + 0.55 * torch.cos(theta) ** 3) * (0.93 + 0.07 * torch.sin(math.pi * w))
    # The separation as a pixel shows it: its 0.55 px line spread over the pixel, so a seam
    # between two pixel centres is as dark as one on a centre.
    spread = math.hypot(0.55, _PIXEL_SIGMA)
    seam = fine * (0.55 / spread) * torch.exp(-(((edge * tooth_px) / spread) ** 2))
    return height, form, seam


def _columns(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per batch item, `table` [B, W] at fractional columns `x` [B, 1, h, w], linear."""
    b, width = table.shape
    xc = x.clamp(0, width - 1).view(b, -1)
    i0 = xc.floor().long().clamp(max=max(0, width - 2))
    f = xc - i0
    low = table.gather(1, i0)
    high = table.gather(1, (i0 + 1).clamp(max=width - 1))
    return (low + (high - low) * f).view_as(x)


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
        # Each side's half width, to where its opening ends (a turned mouth is longer on one
        # side): the place along the mouth is measured per side, as the jaw's drop is.
        self._reach = opening_reach(geo)
        self._mx, self._my = mx, my
        self._ex = (float(geo.ex[0]), float(geo.ex[1]))  # along the mouth, corner to corner
        lm = geo.vertices
        lower_lip = np.concatenate([lm[list(geo.outer_lower)], lm[list(geo.inner_lower)][::-1]])
        lip = _polygon_mean(photo, lower_lip, np.array([150.0, 90.0, 90.0]))

        def rgb(c: np.ndarray) -> torch.Tensor:
            return torch.tensor(np.clip(c, 0, 255), dtype=torch.float32, device=device).view(
                1, 3, 1, 1
            )

        # The cavity and tongue are a mouth's dark reds at the lips' brightness, as saturated as
        # the photo's colours allow (a black-and-white photo gets greys); teeth are an ivory in
        # this photo's light (`_teeth_colour`), shaded in `composite`.
        lum = float(lip @ LUMA)
        chroma = float(np.clip(saturation(lip) / 0.25, 0.0, 1.0))

        def mouth_red(red: tuple[float, float, float]) -> np.ndarray:
            tone = np.asarray(red) / float(np.asarray(red) @ LUMA)
            return lum * (1.0 + chroma * (tone - 1.0))

        self._lit = rgb(mouth_red((0.75, 0.32, 0.32)) * 0.56)
        self._deep = rgb(mouth_red((0.6, 0.2, 0.22)) * 0.12)
        self._tongue = rgb(mouth_red((0.8, 0.36, 0.38)) * 0.6)
        self._teeth = rgb(_teeth_colour(photo, geo, chroma))
        self._upper_teeth_px = 0.0 if geo.teeth_at_rest else UPPER_TEETH_FH * fh
        self._lower_teeth_px = 0.0 if geo.teeth_at_rest else LOWER_TEETH_FH * fh
        # The rows of teeth depend on the place along the mouth alone: tabulated once, looked
        # up per pixel (a gather instead of the arch's two dozen operations every frame).
        # The same for the shading's factors that depend on the place along the mouth alone
        # (`_across`) or on the depth between the lips alone (`_between`).
        u = torch.linspace(-_U_MAX, _U_MAX, _U_STEPS, device=device)
        side_w = torch.where(u < 0, self._reach[0], self._reach[1])
        lo_height, lo_form, lo_seam = _teeth(u, 0.22, self._lower_teeth_px, _LOWER_REACH, side_w)
        # The lower lip hides the lower teeth but for the front ones, and those end within a
        # tooth's width (a row tapering along the lip reads as the lip's outline).
        lo_height = lo_height * (1.0 - (u / _LOWER_REACH) ** 4).clamp(min=0.0)
        self._across = torch.stack(
            [
                *_teeth(u, 0.27, self._upper_teeth_px, 0.95, side_w),
                lo_height,
                lo_form,
                lo_seam,
                (1.0 - 0.6 * u * u).clamp(min=0.0),  # light reaching in, across the mouth
                torch.exp(-((u / 0.5) ** 2)),  # the throat's width
                (1.0 - 0.65 * smoothstep(0.55, 1.1, u.abs())),  # the cheeks' shadow
                (1.0 - (u / 0.78) ** 2).clamp(min=0.0),  # the tongue's mound
                (1.0 - 0.5 * u * u).clamp(min=0.0)  # the tongue's sides and groove
                * (1.0 - 0.12 * torch.exp(-((u / 0.06) ** 2))),
                u.abs() - 1.0,  # past the corners
            ]
        )
        t = torch.linspace(0.0, 1.0, _T_STEPS, device=device)
        self._between = torch.stack(
            [
                torch.exp(-1.8 * t),  # light reaching in, from the upper lip
                torch.exp(-(((t - 0.5) / 0.3) ** 2)),  # the throat's depth
                1.0 - 0.35 * smoothstep(0.8, 1.0, t),  # the tongue's front, under the lip
            ]
        )

    def _split_at(self, x: torch.Tensor) -> torch.Tensor:
        """The split line's y at fractional columns x [B, 1, h, w] (linear between columns)."""
        return _columns(self._split.expand(x.shape[0], -1), x)

    def depths(
        self, q: torch.Tensor, s: torch.Tensor, edge: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per mouth-box pixel (`composite`'s arguments), how far under the upper lip's edge
        and how far above the lower lip's it is, pixels ([B, 1, h, w] each, ≥ 0 in the
        opening); down a column the second falls by one a row."""
        qx, qy = q[..., 0].unsqueeze(1), q[..., 1].unsqueeze(1)
        sx, sy = s[..., 0].unsqueeze(1), s[..., 1].unsqueeze(1)
        split_q = self._split_at(qx)
        to_bottom = self._split_at(sx) - sy  # ≥ 0 above the lower lip's edge
        if edge is None:
            from_top = qy - split_q  # ≥ 0 below the upper lip's edge
        else:
            # The upper lip's edge moved with it (the mouth narrows; with no teeth showing it
            # rises): the opening starts under the edge where it now is.
            top = self._split_at(qx - _columns(edge[..., 0], qx)) + _columns(edge[..., 1], qx)
            from_top = qy - top
            # Over the split line the field is the upper lip's, and on the row right under it
            # partly still: the lower lip's edge is as far as from the second pixel under the
            # split, plus the way down to it (from the first, the depth would step up and down
            # along a tilted mouth with where the split crosses each column: dotted teeth).
            h = qx.shape[2]
            first = (split_q[:, :, :1] - qy[:, :, :1]).ceil().add(_SPLIT_ROWS)
            first = first.clamp(0, h - 1).long()
            down = torch.arange(h, device=qx.device, dtype=qx.dtype).view(1, 1, h, 1)
            there = to_bottom.gather(2, first) + (first.to(qx.dtype) - down)
            to_bottom = torch.where(down < first, there, to_bottom)
        return from_top, to_bottom

    def composite(
        self, crop: torch.Tensor, q: torch.Tensor, s: torch.Tensor, edge: torch.Tensor | None = None
    ) -> None:
        """Paint into `crop` [B, 3, H, W] (0–255) in place.

        `q` [B, h, w, 2]: each mouth-box pixel's position in the face's own frame (before head
        motion); `s` [B, h, w, 2]: the photo position the face field maps it to (the lower
        face's under the split line); `edge` [B, W, 2]: how far the upper lip's edge over each
        column of the crop has moved (None: it stays on the split line).
        """
        from_top, to_bottom = self.depths(q, s, edge)
        qx, qy = q[..., 0].unsqueeze(1), q[..., 1].unsqueeze(1)
        gap = from_top + to_bottom
        # Where any of a pixel's columns (`_coverage`) may be in the opening.
        near = 0.5 + 0.5 * _STEEP
        inside = ((from_top > -near) & (to_bottom > -near) & (gap > -_STEEP)).any(dim=0)[0]
        if not bool(inside.any()):
            return
        rows_on, cols_on = inside.any(dim=1).nonzero(), inside.any(dim=0).nonzero()
        r0, r1 = int(rows_on.min()), int(rows_on.max()) + 1
        c0, c1 = int(cols_on.min()), int(cols_on.max()) + 1
        qx, qy, from_top, to_bottom, gap = (
            v[..., r0:r1, c0:c1] for v in (qx, qy, from_top, to_bottom, gap)
        )
        gap = gap.clamp(min=1.0)
        t = (from_top / gap).clamp(0.0, 1.0)  # 0 at the upper lip, 1 at the lower
        # Along the mouth in the face's own axes, so a tilted mouth closes into its corners.
        along = (qx - self._mx) * self._ex[0] + (qy - self._my) * self._ex[1]
        along = along / torch.where(along < 0, self._reach[0], self._reach[1])
        at = (along * ((_U_STEPS - 1) / (2 * _U_MAX)) + (_U_STEPS - 1) / 2).round_()
        at = at.clamp_(0, _U_STEPS - 1).long()
        (
            up_height,
            up_form,
            up_seam,
            lo_height,
            lo_form,
            lo_seam,
            lit_across,
            throat_across,
            cheeks,
            mound,
            tongue_across,
            past,
        ) = self._across[:, at]
        lit_down, throat_down, tongue_front = self._between[:, (t * (_T_STEPS - 1)).round().long()]
        openness = (gap / self._drop).clamp(0.0, 1.0)
        # The opening closes into the lips' inner corners, never past them towards the outer
        # ones or into the cheek, as a rounded point (a straight cut across a turned face's
        # corner reads as an edge); a thin sliver along the split stops at the inner corners.
        # Towards a corner the opening keeps the middle of the gap, |2t − 1| < √((tall − past) /
        # 0.35).
        tall = (openness * (0.08 / 0.3)).clamp_(max=0.08)
        alpha = _coverage(from_top, to_bottom, ((tall - past) / 0.35).clamp_(0.0, 1.0).sqrt_())

        # Light falls in past the upper lip onto the palate and dies towards the throat and
        # into the cheeks' shadow at the corners.
        colour = self._deep + (self._lit - self._deep) * (lit_down * lit_across)
        dark = (throat_down * throat_across * openness).mul_(-0.45).add_(1.0).mul_(cheeks)
        colour = colour * dark
        # The tongue: a mound rising from behind the lower lip once the mouth is well open,
        # its rounded top catching the light, a faint groove down the middle, its sides and
        # its front (under the lower lip) in shade.
        rise = (openness * 0.51 - 0.119).clamp_(0.0, 0.34)
        into = (t - 1.0 + rise * mound) * gap  # pixels under its top edge
        soft = gap * 0.12 + 1.0  # its top edge is round: it fades in over this many pixels
        tongue = (into / soft + 0.35).clamp_(0.0, 1.0) * (rise * 8.0).clamp_(0.0, TONGUE_MAX)
        sheen = ((into - soft) / soft).square_().neg_().exp_().mul_(0.12).add_(1.0)
        tongue_shade = sheen * tongue_across * tongue_front
        colour = colour + (self._tongue * tongue_shade - colour) * tongue
        if self._upper_teeth_px > 0:
            height = torch.minimum(up_height, 0.38 * gap)
            v = (from_top / height.clamp(min=1.0)).clamp_(0.0, 1.0)  # 0 at the lip, 1 at tips
            upper = (height - from_top + 0.5).clamp_(0.0, 1.0) * smoothstep(0.5, 1.5, up_height)
            # Shadowed right under the lip, lit across the upper part, the tips a little
            # translucent; the separations open up towards the tips.
            vertical = (0.8 + 0.2 * smoothstep(0.0, 0.3, v)) * (
                torch.exp(-(((v - 0.3) / 0.25) ** 2)) * 0.1 + 1.0
            )
            vertical = vertical * (v**4 * -0.2 + 1.0)
            gaps = ((v * 0.3 + 0.12) * up_seam).neg_().add_(1.0)
            light = (vertical * up_form * gaps).clamp_(0.0, 1.1)
            # What light the teeth lose in the mouth's shadow comes back warm off its walls.
            tooth = self._teeth * light + self._lit * (light.neg() + 1.0).clamp_(min=0.0).mul_(0.6)
            colour = colour + (tooth - colour) * upper
        if self._lower_teeth_px > 0:
            # They rise from behind the lower lip as it is pulled down, opaque (faded in, they
            # would be a grey film along the lip).
            show = (openness * 2.0 - 0.8).clamp_(0.0, 1.0)
            height = torch.minimum(lo_height * show, 0.2 * gap)
            lower = (height - to_bottom + 0.5).clamp_(0.0, 1.0) * smoothstep(0.5, 1.5, height)
            light = (lo_seam * -0.3 + 1.0) * lo_form * _LOWER_LIGHT
            tooth = self._teeth * light + self._lit * (light.neg() + 1.0).mul_(0.6)
            colour = colour + (tooth - colour) * lower
        # Each lip's inner shadow: the last pixels before a lip are darker.
        shadow = (from_top * (0.35 / 2.0)).clamp_(max=0.35).add_(0.65) * (
            (to_bottom * (0.3 / 2.5)).clamp_(max=0.3).add_(0.7)
        )
        colour = colour * shadow
        rows, cols = self.rows, self.cols
        region = crop[:, :, rows.start + r0 : rows.start + r1, cols.start + c0 : cols.start + c1]
        region += (colour - region) * alpha
