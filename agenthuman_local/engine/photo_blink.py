"""Blinks of the mesh photo avatar: the upper lid slides down the eye onto the lower lid.

The lid is the photo's own: across the eye (in the eye's own axes, so a tilted or turned eye
closes along its contour), the band of lid skin between the crease and the lashes moves down
with the lid's edge, lashes first, and the skin under the crease unfolds behind it; what is
under the edge is the eye as it was (the lid covers it from the top, as a real lid does). At
the closed lid's edge a soft lash line is shaded in. It is a warp, not a painted patch, so
tone, texture and glasses stay the photo's; it is added to the face field in the face's own
frame, so the head's motion carries it, and costs nothing when no lid moves.

The eye the lid must cover is the mesh's eye contour, grown from the photo's pixels where the
contour misses part of the eye (turned, shadowed and hooded eyes: the iris model puts the lid
too low or the corner short): the iris past the corners, and white of the eye that shows past
the contour. A lid that stopped at the contour would leave a bright or dark streak of eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d

from agenthuman_local.engine.photo_warp import MeshGeometry

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# The visible band of lid skin above the lashes, in eye openings (the contour's tallest gap).
_BAND = 0.8
# Of that band, the part that slides down whole with the lashes; the rest (under the crease)
# stretches to fill the gap it leaves.
_KEEP = 0.7
# How far past the contour the eye is looked for: up (a lid the model put too low), down, and
# past each corner (along the eye), in eye openings / eye lengths.
_GROW_UP, _GROW_DOWN, _GROW_SIDE = 0.45, 0.0, 0.12
# White of the eye: this much brighter than the skin around it (×, and + levels), at most this
# saturated relative to that skin.
_SCLERA_GAIN, _SCLERA_LEVELS, _SCLERA_SAT = 1.18, 10.0, 0.6
_LASH_DARK = 0.25  # the closed lid's lash line, at its darkest
# The closed lid's edge moves this share of the way to the cheek's colour, by at most this many
# levels (luma).
_LIFT, _LIFT_MAX = 0.3, 25.0
_MATCH_MAX = 40.0  # the stretched skin brought to the visible lid's tone by at most this (luma)
_LASH_PX = 0.9  # its half-width, pixels
_LASH_MAX = 0.45  # the thickest lash line over the eye that rides down whole, in openings
# The stretched lid skin is drawn from a copy blurred along the eye by this share of the eye's
# length (a Gaussian's sigma), mixed in by this many times how much it is stretched (1 − 1/×).
_SMOOTH, _SMOOTH_MIX = 0.06, 1.0


def _local(
    pts: np.ndarray, origin: np.ndarray, ax: np.ndarray, nrm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    d = pts - origin
    return d @ ax, d @ nrm


def _curve(s_knots: np.ndarray, t_knots: np.ndarray, s: np.ndarray) -> np.ndarray:
    order = np.argsort(s_knots)
    return np.interp(s, s_knots[order], t_knots[order])


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
    lift: torch.Tensor  # [1, 3, h, w] the colour added to the closed lid (`_lid_lift`)
    own: torch.Tensor  # [1, 3, h, w] the photo's pixels, for the lid's anti-aliased edge
    smooth: torch.Tensor  # [1, 3, h, w] the photo's pixels blurred along the eye
    grid: torch.Tensor  # [1, h, w, 2] the patch's pixel centres in grid_sample's units
    to_grid: torch.Tensor  # [2] pixels → grid_sample's units over the patch
    nrm: torch.Tensor  # [2] the across-the-eye unit vector (x, y)


def eye_mask(
    geo: MeshGeometry, photo: np.ndarray, eye: int, rows: slice, cols: slice
) -> np.ndarray:
    """bool [h, w] over the crop's `rows`/`cols`: the eye the closed lid must cover (the
    contour, the iris past its corners, white of the eye showing past it)."""
    upper, lower = geo.eye_lids[eye]
    c0, c1 = upper[0], upper[-1]
    length = float(np.hypot(*(c1 - c0)))
    ax = (c1 - c0) / max(length, 1e-6)
    nrm = np.array([-ax[1], ax[0]], np.float32)
    if float(nrm @ geo.ey) < 0:
        nrm = -nrm
    su, tu = _local(upper, c0, ax, nrm)
    sl, tl = _local(lower, c0, ax, nrm)
    gy, gx = np.mgrid[rows, cols].astype(np.float32)
    s, t = _local(np.stack([gx, gy], -1), c0, ax, nrm)
    sc = np.clip(s, 0.0, length)
    t_up, t_lo = _curve(su, tu, sc), _curve(sl, tl, sc)
    inside = (s >= 0) & (s <= length)
    h_max = float(np.max(_curve(sl, tl, su) - tu))
    mask = inside & (t >= t_up - 0.5) & (t <= t_lo + 0.5)

    # The iris past the corners (a corner put short on a turned eye), never above the lid.
    iris = geo.irises[eye]
    radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
    in_iris = np.hypot(gx - iris[0, 0], gy - iris[0, 1]) <= radius + 0.5
    mask |= in_iris & ~inside

    # White of the eye past the contour: clearly brighter than the skin round the eye and no
    # more saturated, joined to the eye.
    rgb = photo[rows, cols].astype(np.float32)
    lum = rgb @ _LUMA
    sat = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1.0)
    mid = (s > 0.2 * length) & (s < 0.8 * length)
    above = mid & (t < t_up - 0.3 * h_max) & (t > t_up - 0.9 * h_max)
    below = mid & (t > t_lo + 0.4 * h_max) & (t < t_lo + 1.2 * h_max)
    if above.sum() >= 4 and below.sum() >= 4:
        # Above the eye its white is compared with the lid's skin, below with the cheek's (a
        # shadowed lid is far darker than the lit cheek).
        up_lum, lo_lum = float(np.median(lum[above])), float(np.median(lum[below]))
        skin_lum = np.where(t < t_up, up_lum, np.where(t > t_lo, lo_lum, max(up_lum, lo_lum)))
        skin_sat = float(np.median(sat[above | below]))
        near = (
            (s > -_GROW_SIDE * length)
            & (s < (1 + _GROW_SIDE) * length)
            & (t > t_up - _GROW_UP * h_max)
            & (t < t_lo + _GROW_DOWN * h_max)
        )
        white = (
            near
            & (lum > _SCLERA_GAIN * skin_lum + _SCLERA_LEVELS)
            & (sat <= _SCLERA_SAT * skin_sat + 0.02)
        )
        candidates = (white | mask).astype(np.uint8)
        n, labels = cv2.connectedComponents(candidates, connectivity=8)
        joined = np.unique(labels[mask & (labels > 0)])
        mask |= np.isin(labels, joined) & white
    return mask


def _eye_bounds(
    mask: np.ndarray,
    s_px: np.ndarray,
    t_px: np.ndarray,
    upper: tuple[np.ndarray, np.ndarray],
    lower: tuple[np.ndarray, np.ndarray],
    length: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, where the eye begins and ends across its column (t_up, t_lo) and the
    opening between (0 outside the eye): the contour, grown to every pixel of `mask` outside it,
    smoothed along the eye so neighbouring columns of the lid stretch alike."""
    sc = np.clip(s_px, 0.0, length)
    c_up, c_lo = _curve(*upper, sc), _curve(*lower, sc)
    inside = (s_px >= 0) & (s_px <= length)
    grown = mask & ~(inside & (t_px >= c_up - 0.5) & (t_px <= c_lo + 0.5))
    lo_s = min(0.0, float(s_px[mask].min())) if mask.any() else 0.0
    hi_s = max(length, float(s_px[mask].max())) if mask.any() else length
    bins = np.arange(np.floor(lo_s), np.ceil(hi_s) + 0.5, 0.5)
    inb = (bins >= 0) & (bins <= length)
    bc = np.clip(bins, 0.0, length)
    e_top = np.where(inb, _curve(*upper, bc), np.inf)
    e_bot = np.where(inb, _curve(*lower, bc), -np.inf)
    gs, gt = s_px[grown], t_px[grown]
    for i, b in enumerate(bins):
        sel = np.abs(gs - b) <= 0.75
        if sel.any():
            e_top[i] = min(e_top[i], float(gt[sel].min()) - 0.5)
            e_bot[i] = max(e_bot[i], float(gt[sel].max()) + 0.5)
    found = np.isfinite(e_top) & np.isfinite(e_bot)
    bins, e_top, e_bot = bins[found], e_top[found], e_bot[found]
    # Pixel steps of the grown edge would make the lid's stretch differ column to column
    # (streaks): take the extreme over ±1.5 px, then average over ±2.5 px.
    e_top = uniform_filter1d(minimum_filter1d(e_top, 7, mode="nearest"), 11, mode="nearest")
    e_bot = uniform_filter1d(maximum_filter1d(e_bot, 7, mode="nearest"), 11, mode="nearest")
    e_top = np.where(
        (bins >= 0) & (bins <= length),
        np.minimum(e_top, _curve(*upper, np.clip(bins, 0, length))),
        e_top,
    )
    e_bot = np.where(
        (bins >= 0) & (bins <= length),
        np.maximum(e_bot, _curve(*lower, np.clip(bins, 0, length))),
        e_bot,
    )
    t_up = np.interp(s_px, bins, e_top)
    t_lo = np.interp(s_px, bins, e_bot)
    in_eye = (s_px >= bins[0] - 0.5) & (s_px <= bins[-1] + 0.5)
    return t_up, t_lo, np.where(in_eye, np.clip(t_lo - t_up, 0.0, None), 0.0)


def _lid_rows(
    lum: np.ndarray,
    s_px: np.ndarray,
    t_px: np.ndarray,
    t_up: np.ndarray,
    h: np.ndarray,
    length: float,
    h_max: float,
) -> tuple[float, float]:
    """(lashes, band): how thick the lash line over the eye is (the dark rows right above it,
    which ride down whole on the lid's edge), and how tall the band of lid skin is from the
    eye up to the crease, a brow or a glasses frame (where the rows above the lashes turn
    clearly darker), at most `_BAND` openings. From the rows' mean tone across the eye's
    middle."""
    mid = (s_px > 0.15 * length) & (s_px < 0.85 * length) & (h > 0)
    above = t_up - t_px  # how far above the eye's top edge
    steps = np.arange(0.0, _BAND * h_max + 1.0, 0.5)
    rows = []
    for k in steps:
        sel = mid & (above >= k) & (above < k + 1.0)
        rows.append(float(np.mean(lum[sel])) if sel.sum() >= 2 else np.nan)
    profile = np.array(rows)
    thin = max(1.0, 0.22 * h_max)
    if not np.isfinite(profile).any():
        return thin, _BAND * h_max
    skin_rows = np.isfinite(profile) & (steps >= 0.3 * h_max) & (steps <= 0.8 * h_max)
    skin = float(np.percentile(profile[skin_rows], 75)) if skin_rows.any() else np.nan
    lash = thin
    if np.isfinite(skin):
        out = np.nonzero(np.isfinite(profile) & (steps >= thin) & (profile >= 0.85 * skin))[0]
        if len(out):
            lash = float(steps[out[0]])
    lash = float(np.clip(lash, thin, _LASH_MAX * h_max))
    lid = np.isfinite(profile) & (steps >= lash) & (steps < lash + 0.3 * h_max)
    if not lid.any():
        return lash, _BAND * h_max
    ref = float(np.median(profile[lid]))
    dark = np.nonzero(np.isfinite(profile) & (steps >= lash) & (profile < 0.75 * ref))[0]
    band = _BAND * h_max if len(dark) == 0 else float(steps[dark[0]]) - 0.5
    return lash, float(np.clip(band, lash + 0.25 * h_max, max(_BAND * h_max, lash + 0.25 * h_max)))


def _lid_lift(
    rgb: np.ndarray,
    s_px: np.ndarray,
    t_px: np.ndarray,
    t_up: np.ndarray,
    t_lo: np.ndarray,
    h: np.ndarray,
    top: np.ndarray,
    h_max: float,
    lash: float,
) -> np.ndarray:
    """Per pixel (by its column along the eye), the colour [h, w, 3] added to the closed lid's
    stretched skin. Two parts: (1) the stretched skin is the band's part above the lashes, which
    is lighter than the lid as it shows (lashes, shade and wrinkles in it): it is brought back
    to the tone of the visible lid, so the closed lid is no pale patch; (2) a share of the way
    towards the skin under the eye: skin folded away while the eye is open is shaded (a hooded
    or shadowed lid), the closed lid sits where the eye's surface is lit, so it does not close
    as a dark smudge. Added, not multiplied, so the skin's texture keeps its contrast."""
    zero = np.zeros((*h.shape, 3), np.float32)
    thin = max(1.0, 0.22 * h_max)
    source = (t_px >= top) & (t_px < t_up - lash) & (h > 0)
    shown = (t_px >= top) & (t_px < t_up - thin) & (h > 0)
    under = (t_px > t_lo + 0.3 * h_max) & (t_px < t_lo + 0.9 * h_max) & (h > 0)
    if source.sum() < 4 or under.sum() < 4:
        return zero
    lo, hi = float(s_px[h > 0].min()), float(s_px[h > 0].max())
    bins = np.arange(np.floor(lo), np.ceil(hi) + 1.0, 1.0)
    match = np.full((len(bins), 3), np.nan)
    cheek = np.full((len(bins), 3), np.nan)
    for i, b in enumerate(bins):
        col = np.abs(s_px - b) <= 1.0
        if (source & col).sum() >= 2 and (under & col).sum() >= 2:
            vis = rgb[shown & col].mean(0)
            match[i] = vis - rgb[source & col].mean(0)
            cheek[i] = rgb[under & col].mean(0) - vis
    ok = np.isfinite(match[:, 0])
    if not ok.any():
        return zero
    # Smooth along the eye: the lid's tone changes slowly across it.
    width = max(1, int(0.3 * len(bins)) | 1)

    def smooth(a: np.ndarray) -> np.ndarray:
        cols = [np.interp(bins, bins[ok], a[ok, c]) for c in range(3)]
        return np.stack([uniform_filter1d(c, width, mode="nearest") for c in cols], -1)

    match, cheek = smooth(match), smooth(cheek) * _LIFT
    # The lift: never darker, at most _LIFT_MAX levels lighter (luma); the hue moves with it.
    luma = cheek @ _LUMA
    cheek *= np.where(luma > 0, np.minimum(1.0, _LIFT_MAX / np.maximum(luma, 1e-6)), 0.0)[:, None]
    # The match: at most _MATCH_MAX levels either way.
    luma = np.abs(match @ _LUMA)
    match *= np.minimum(1.0, _MATCH_MAX / np.maximum(luma, 1e-6))[:, None]
    diff = match + cheek
    out = np.stack([np.interp(s_px, bins, diff[:, c]) for c in range(3)], -1)
    return np.where((h > 0)[..., None], out, 0.0).astype(np.float32)


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
        lum_all = photo.astype(np.float32) @ _LUMA
        for e, (upper, lower) in enumerate(geo.eye_lids):
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
            h_max = float(np.max(_curve(sl, tl, su) - tu))
            if h_max < 1.0:
                continue
            iris = geo.irises[e]
            radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
            # Room for the eye grown past the contour, the lid's band above it and the skin under
            # it (the lid's tone is measured there).
            reach = (_GROW_UP + _BAND) * h_max + 2.0
            pts = np.concatenate(
                [upper, lower, upper - nrm * reach, lower + nrm * (_GROW_DOWN + 1.0) * h_max]
                + [np.stack([c0 - ax * _GROW_SIDE * length, c1 + ax * _GROW_SIDE * length])]
                + [np.stack([iris[0] - radius - 1, iris[0] + radius + 1])]
            )
            (x0, y0), (x1, y1) = np.floor(pts.min(0)) - 2, np.ceil(pts.max(0)) + 3
            x0, y0 = int(max(0, x0)), int(max(0, y0))
            x1, y1 = int(min(geo.width, x1)), int(min(geo.height, y1))
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            rows, cols = slice(y0, y1), slice(x0, x1)
            mask = eye_mask(geo, photo, e, rows, cols)
            gy, gx = np.mgrid[rows, cols].astype(np.float32)
            s_px, t_px = _local(np.stack([gx, gy], -1), c0, ax, nrm)
            t_up, t_lo, h = _eye_bounds(mask, s_px, t_px, (su, tu), (sl, tl), length)
            lash, band = _lid_rows(lum_all[rows, cols], s_px, t_px, t_up, h, length, h_max)
            # The lid's skin band thins into the corners with the eye's opening.
            top = t_up - band * np.sqrt(np.clip(h / max(h_max, float(h.max())), 0, 1))
            lift = _lid_lift(
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
                    lift=rgb(lift),
                    own=rgb(photo[rows, cols]),
                    smooth=rgb(_along_blur(photo[rows, cols], ax, max(1.0, _SMOOTH * length))),
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
            # The band's skin above the lashes stretches down over the gap the lid opens: a
            # pixel `below_top` under the band's top samples `below_top · skin / fold` under
            # it; the lashes and what is under them to the edge move down whole.
            fold = eye.skin + travel
            d = torch.where(
                under_edge < -eye.lash,
                eye.below_top * (1.0 - eye.skin / fold.clamp(min=0.5)),
                travel,
            )
            # A pixel the edge crosses samples the lid and is mixed with the eye under it by how
            # much of it the lid covers: an anti-aliased edge from one sample.
            lid = eye.in_lid & (under_edge < 0.5)
            d = d * lid
            cover = torch.where(lid, (0.5 - under_edge).clamp(0, 1), 1.0)
            # The lid's tone (`_lid_lift`): its own at the crease, the shown lid's (nudged
            # towards the cheek's) from halfway down, its own again over the lashes; and the
            # lash line along the edge, a soft dark line on the lid side.
            ramp = (eye.below_top / (0.5 * fold).clamp(min=1.0)).clamp(0, 1)
            ramp = ramp * (-under_edge / eye.lash).clamp(0, 1) * eye.in_lid
            line = torch.exp(-(((under_edge + 0.7) / _LASH_PX) ** 2)) * eye.line
            mul = cover * (1.0 - line * (2 * b).clamp(max=1.0))
            c = cover.unsqueeze(1)
            add = eye.own + c * (eye.lift * (ramp * b).unsqueeze(1) - eye.own)
            move = d.unsqueeze(-1) * eye.nrm
            # The stretched skin is magnified across the eye only, so its pores and wrinkles
            # would become streaks: it is drawn from the photo blurred along the eye, the more
            # the more it is stretched (the same samples, from the blurred copy).
            stretch = (
                torch.where(under_edge < -eye.lash, 1.0 - eye.skin / fold.clamp(min=0.5), 0.0) * lid
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
                add = add + (mul * k).unsqueeze(1) * smooth
                mul = mul * (1.0 - k)
            out.append((move, mul.unsqueeze(1), add))
        return out
