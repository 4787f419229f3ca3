"""The eye a blink's lid must cover, measured once on the photo.

The eye is the mesh's eye contour, grown from the photo's pixels where the contour misses part of
the eye (turned, shadowed and hooded eyes: the iris model puts the lid too low or the corner
short): the iris past the corners, white of the eye that shows past the contour, and eye-hued
pixels just under the lower contour (a lit cheek's tone is the white's). A lid that stopped at
the contour would leave a bright or dark streak of eye. All in the eye's own axes (along its
corner-to-corner line `s`, across it `t`, down the face). `engine.photo_lid_tone` measures the
lid above it; `engine.photo_blink` moves the lid with both per frame.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d

from agenthuman_local.engine.photo_geometry import LUMA, MeshGeometry, saturation
from agenthuman_local.engine.rig import GREY_SKIN_SAT

# How far past the contour the eye is looked for: up (a lid the model put too low), down, and
# past each corner (along the eye), in eye openings / eye lengths.
GROW_UP, GROW_DOWN, GROW_SIDE = 0.45, 0.0, 0.12
# White of the eye: this much brighter than the skin around it (×, and + levels), at most this
# saturated relative to that skin.
_SCLERA_GAIN, _SCLERA_LEVELS, _SCLERA_SAT = 1.18, 10.0, 0.6
# Eye under the lower contour (the iris model puts the lower lid too high over a turned eye):
# within this many eye openings of it, pixels whose red leads their green by at most this share
# of the cheek's lead (skin is red-dominant, an iris or a lit white of the eye is not) and at
# least this share of the cheek's tone (not a lash).
_HUE_DOWN, _HUE_RED, _HUE_LUM = 0.25, 0.5, 0.6
# Skin inside the contour: within this share of the cheek's tone (a wider band takes in the
# astronaut's own eye corner) and this close to its chromaticity.
# An end of the contour is skin (the nose hiding a turned eye's corner) from its end while its
# columns are at least _HIDDEN_START skin, going on while at least _HIDDEN_GO, over 2 px or more,
# never past _HIDDEN_MAX of the eye's length; the cut eye closes to a point over _HIDDEN_TAPER px.
_SKIN_LUM, _SKIN_CHROMA = (0.75, 1.25), 0.03
_HIDDEN_START, _HIDDEN_GO, _HIDDEN_MAX, _HIDDEN_TAPER = 0.85, 0.5, 0.4, 3.0


def local(
    pts: np.ndarray, origin: np.ndarray, ax: np.ndarray, nrm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    d = pts - origin
    return d @ ax, d @ nrm


def curve(s_knots: np.ndarray, t_knots: np.ndarray, s: np.ndarray) -> np.ndarray:
    order = np.argsort(s_knots)
    return np.interp(s, s_knots[order], t_knots[order])


def eye_mask(
    geo: MeshGeometry, photo: np.ndarray, eye: int, rows: slice, cols: slice
) -> tuple[np.ndarray, tuple[float, float]]:
    """bool [h, w] over the crop's `rows`/`cols`: the eye the closed lid must cover (the
    contour, the iris past its corners, white of the eye showing past it), and the span along
    the eye (`s`) it is seen over: the contour's, less an end the nose hides (`_hidden_ends`)."""
    upper, lower = geo.eye_lids[eye]
    c0, c1 = upper[0], upper[-1]
    length = float(np.hypot(*(c1 - c0)))
    ax = (c1 - c0) / max(length, 1e-6)
    nrm = np.array([-ax[1], ax[0]], np.float32)
    if float(nrm @ geo.ey) < 0:
        nrm = -nrm
    su, tu = local(upper, c0, ax, nrm)
    sl, tl = local(lower, c0, ax, nrm)
    gy, gx = np.mgrid[rows, cols].astype(np.float32)
    s, t = local(np.stack([gx, gy], -1), c0, ax, nrm)
    sc = np.clip(s, 0.0, length)
    t_up, t_lo = curve(su, tu, sc), curve(sl, tl, sc)
    inside = (s >= 0) & (s <= length)
    h_max = float(np.max(curve(sl, tl, su) - tu))
    mask = inside & (t >= t_up - 0.5) & (t <= t_lo + 0.5)

    # The iris past the corners (a corner put short on a turned eye), never above the lid.
    iris = geo.irises[eye]
    radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
    in_iris = np.hypot(gx - iris[0, 0], gy - iris[0, 1]) <= radius + 0.5
    mask |= in_iris & ~inside

    # White of the eye past the contour: clearly brighter than the skin round the eye and no
    # more saturated, joined to the eye.
    rgb = photo[rows, cols].astype(np.float32)
    lum = rgb @ LUMA
    sat = saturation(rgb)
    mid = (s > 0.2 * length) & (s < 0.8 * length)
    above = mid & (t < t_up - 0.3 * h_max) & (t > t_up - 0.9 * h_max)
    below = mid & (t > t_lo + 0.4 * h_max) & (t < t_lo + 1.2 * h_max)
    span = _hidden_ends(rgb, s, t, t_up, t_lo, below, length)
    if above.sum() >= 4 and below.sum() >= 4:
        # Above the eye its white is compared with the lid's skin, below with the cheek's (a
        # shadowed lid is far darker than the lit cheek).
        up_lum, lo_lum = float(np.median(lum[above])), float(np.median(lum[below]))
        skin_lum = np.where(t < t_up, up_lum, np.where(t > t_lo, lo_lum, max(up_lum, lo_lum)))
        skin_sat = float(np.median(sat[above | below]))
        near = (
            (s > -GROW_SIDE * length)
            & (s < (1 + GROW_SIDE) * length)
            & (t > t_up - GROW_UP * h_max)
            & (t < t_lo + GROW_DOWN * h_max)
        )
        white = (
            near
            & (lum > _SCLERA_GAIN * skin_lum + _SCLERA_LEVELS)
            & (sat <= _SCLERA_SAT * skin_sat + 0.02)
        )
        white |= _eye_hued(rgb, lum, s, t, t_lo, below, length, h_max, lo_lum)
        candidates = (white | mask).astype(np.uint8)
        n, labels = cv2.connectedComponents(candidates, connectivity=8)
        joined = np.unique(labels[mask & (labels > 0)])
        mask |= np.isin(labels, joined) & white
    # Nothing past a hidden end is eye (the iris's circle there lies behind the nose).
    if span[0] > 0.0:
        mask &= s >= span[0]
    if span[1] < length:
        mask &= s <= span[1]
    return mask, span


def _eye_hued(
    rgb: np.ndarray,
    lum: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
    t_lo: np.ndarray,
    below: np.ndarray,
    length: float,
    h_max: float,
    cheek_lum: float,
) -> np.ndarray:
    """bool: pixels just under the lower contour (`_HUE_DOWN`) whose hue is the eye's, not the
    skin's. Under a lit eye the cheek is lit near white: its tone cannot tell it from the white
    of the eye or a pale iris there, only its hue can (Jesse's lit eye: iris [215 218 198] 1-2 px
    under the contour near the outer corner, red's lead over green -0.01 to 0.06 of red, the
    cheek's 0.14; left out, it stayed as a green-grey smear under the closed lid). None on a
    black-and-white photo (`GREY_SKIN_SAT`)."""
    ref = np.median(rgb[below], axis=0)
    top = max(float(ref.max()), 1.0)
    if saturation(ref) < GREY_SKIN_SAT:
        return np.zeros(s.shape, bool)
    red = (rgb[..., 0] - rgb[..., 1]) / np.maximum(rgb.max(-1), 1.0)
    return (
        (s >= 0)
        & (s <= length)
        & (t > t_lo)
        & (t < t_lo + _HUE_DOWN * h_max)
        & (red <= _HUE_RED * (ref[0] - ref[1]) / top)
        & (lum >= _HUE_LUM * cheek_lum)
    )


def _hidden_ends(
    rgb: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
    t_up: np.ndarray,
    t_lo: np.ndarray,
    below: np.ndarray,
    length: float,
) -> tuple[float, float]:
    """The span along the eye (`s`) it is seen over: the contour's [0, length], less each end
    whose columns inside the contour are the cheek's skin. On a turned head the mesh carries
    the far eye's contour on behind the nose, and a lid closed over all of it was drawn on the
    nose: a dark block with a stepped edge (Walter's far eye, under his glasses' rim)."""
    if below.sum() < 4:
        return 0.0, length
    ref = np.median(rgb[below], axis=0)
    if saturation(ref) < GREY_SKIN_SAT:
        return 0.0, length
    chroma = rgb / np.maximum(rgb.sum(-1, keepdims=True), 1.0)
    tone = (rgb @ LUMA) / max(float(ref @ LUMA), 1.0)
    skin = (tone > _SKIN_LUM[0]) & (tone < _SKIN_LUM[1])
    skin &= np.abs(chroma - ref / max(float(ref.sum()), 1.0)).max(-1) < _SKIN_CHROMA
    inside = (s >= 0) & (s <= length) & (t >= t_up) & (t <= t_lo)
    edges = np.arange(0.0, length, 1.0)
    share = np.zeros(len(edges))
    for i, e in enumerate(edges):
        column = inside & (s >= e) & (s < e + 1.0)
        if column.any():
            share[i] = float(skin[column].mean())

    def run(shares: np.ndarray) -> int:
        n = 0
        while n < len(shares) and shares[n] >= (_HIDDEN_START if n == 0 else _HIDDEN_GO):
            n += 1
        return n if n >= 2 else 0

    most = int(_HIDDEN_MAX * length)
    start, end = min(run(share), most), min(run(share[::-1]), most)
    return float(start), length - float(end)


def eye_bounds(
    mask: np.ndarray,
    s_px: np.ndarray,
    t_px: np.ndarray,
    upper: tuple[np.ndarray, np.ndarray],
    lower: tuple[np.ndarray, np.ndarray],
    length: float,
    span: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, where the eye begins and ends across its column (t_up, t_lo) and the
    opening between (0 outside the eye): the contour over `span` (`eye_mask`'s), grown to
    every pixel of `mask` outside it, smoothed along the eye so neighbouring columns of the lid
    stretch alike. A span cut short of a corner closes to a point there."""
    s0, s1 = span
    sc = np.clip(s_px, 0.0, length)
    c_up, c_lo = curve(*upper, sc), curve(*lower, sc)
    inside = (s_px >= s0) & (s_px <= s1)
    grown = mask & ~(inside & (t_px >= c_up - 0.5) & (t_px <= c_lo + 0.5))
    lo_s = min(0.0, float(s_px[mask].min())) if mask.any() else 0.0
    hi_s = max(length, float(s_px[mask].max())) if mask.any() else length
    bins = np.arange(np.floor(lo_s), np.ceil(hi_s) + 0.5, 0.5)
    inb = (bins >= s0) & (bins <= s1)
    bc = np.clip(bins, 0.0, length)
    e_top = np.where(inb, curve(*upper, bc), np.inf)
    e_bot = np.where(inb, curve(*lower, bc), -np.inf)
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
    on = (bins >= s0) & (bins <= s1)
    e_top = np.where(on, np.minimum(e_top, curve(*upper, np.clip(bins, 0, length))), e_top)
    e_bot = np.where(on, np.maximum(e_bot, curve(*lower, np.clip(bins, 0, length))), e_bot)
    # Past the contour's corners the grown eye closes to a point at its end, so the closed lid
    # has no square end there.
    mid = 0.5 * (e_top + e_bot)
    past = np.maximum(
        np.clip(-bins / max(-bins[0], 1e-6), 0, 1) if bins[0] < 0 else 0.0,
        np.clip((bins - length) / max(bins[-1] - length, 1e-6), 0, 1) if bins[-1] > length else 0.0,
    )
    taper = min(_HIDDEN_TAPER, 0.15 * length)
    if s0 > 0.0:
        past = np.maximum(past, np.clip((s0 + taper - bins) / taper, 0, 1))
    if s1 < length:
        past = np.maximum(past, np.clip((bins - (s1 - taper)) / taper, 0, 1))
    close = np.sqrt(np.clip(1.0 - past, 0.0, 1.0))
    e_top, e_bot = mid + close * (e_top - mid), mid + close * (e_bot - mid)
    t_up = np.interp(s_px, bins, e_top)
    t_lo = np.interp(s_px, bins, e_bot)
    in_eye = (s_px >= bins[0] - 0.5) & (s_px <= bins[-1] + 0.5)
    return t_up, t_lo, np.where(in_eye, np.clip(t_lo - t_up, 0.0, None), 0.0)
