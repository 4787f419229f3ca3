"""The eye a blink's lid must cover, and the lid's shape and tone, measured once on the photo.

The eye is the mesh's eye contour, grown from the photo's pixels where the contour misses part of
the eye (turned, shadowed and hooded eyes: the iris model puts the lid too low or the corner
short): the iris past the corners, white of the eye that shows past the contour, and eye-hued
pixels just under the lower contour (a lit cheek's tone is the white's). A lid that stopped at
the contour would leave a bright or dark streak of eye. The lid above it: how thick its lash
line is, how tall its band of skin up to the crease, and the tone the closed lid is brought to.
All in the eye's own axes (along its corner-to-corner line `s`, across it `t`, down the face).
`engine.photo_blink` moves the lid with these per frame.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d

from agenthuman_local.engine.photo_geometry import LUMA, MeshGeometry

# The visible band of lid skin above the lashes, in eye openings (the contour's tallest gap).
BAND = 0.8
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
# A shadowed lid (darker than _SHADED of the skin under the eye) closes this share of the way to
# that tone, by at most this many levels (luma).
_SHADED, _LIFT, _LIFT_MAX = 0.8, 0.3, 25.0
# A lid over a lit eye closes to at least this share of its white's tone (the brighter fifth of
# the eye), as far as the shaded skin's tone and by at most this many levels.
_LIT_SKIN, _LIT_MAX = 0.8, 40.0
# An eye whose white is at least this share of the skin under it (its tone) is lit as the cheek
# is: its lid closes as light as the lit part of its own skin (this percentile of the band's tone
# over the eye), as far as the white's and the cheek's tones.
_LIT_EYE, _LIT_BAND = 0.9, 75.0
_MATCH_MAX = 40.0  # the stretched skin brought to the visible lid's tone by at most this (luma)
_TAPER = 0.15  # the lid's tone fades out over this share of the eye's length at each corner
_LASH_MAX = 0.45  # the thickest lash line over the eye that rides down whole, in openings
# Skin inside the contour: within this share of the cheek's tone (a wider band takes in the
# astronaut's own eye corner) and this close to its chromaticity.
# An end of the contour is skin (the nose hiding a turned eye's corner) from its end while its
# columns are at least _HIDDEN_START skin, going on while at least _HIDDEN_GO, over 2 px or more,
# never past _HIDDEN_MAX of the eye's length; the cut eye closes to a point over _HIDDEN_TAPER px.
_SKIN_LUM, _SKIN_CHROMA = (0.75, 1.25), 0.03
_HIDDEN_START, _HIDDEN_GO, _HIDDEN_MAX, _HIDDEN_TAPER = 0.85, 0.5, 0.4, 3.0
_GREY_SAT = 0.05  # a cheek less saturated than this: a black-and-white photo (no chromaticity)


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
    sat = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1.0)
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
    black-and-white photo (`_GREY_SAT`)."""
    ref = np.median(rgb[below], axis=0)
    top = max(float(ref.max()), 1.0)
    if (ref.max() - ref.min()) / top < _GREY_SAT:
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
    if (ref.max() - ref.min()) / max(float(ref.max()), 1.0) < _GREY_SAT:
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


def lid_rows(
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
    clearly darker), at most `BAND` openings. From the rows' mean tone across the eye's
    middle."""
    mid = (s_px > 0.15 * length) & (s_px < 0.85 * length) & (h > 0)
    above = t_up - t_px  # how far above the eye's top edge
    steps = np.arange(0.0, BAND * h_max + 1.0, 0.5)
    rows = []
    for k in steps:
        sel = mid & (above >= k) & (above < k + 1.0)
        rows.append(float(np.mean(lum[sel])) if sel.sum() >= 2 else np.nan)
    profile = np.array(rows)
    thin = max(1.0, 0.22 * h_max)
    if not np.isfinite(profile).any():
        return thin, BAND * h_max
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
        return lash, BAND * h_max
    ref = float(np.median(profile[lid]))
    dark = np.nonzero(np.isfinite(profile) & (steps >= lash) & (profile < 0.75 * ref))[0]
    band = BAND * h_max if len(dark) == 0 else float(steps[dark[0]]) - 0.5
    return lash, float(np.clip(band, lash + 0.25 * h_max, max(BAND * h_max, lash + 0.25 * h_max)))


def lid_lift(
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
    to the tone of the visible lid, so the closed lid is no pale patch; (2) a shadowed lid (darker
    than `_SHADED` of the skin under the eye) is lightened towards that skin, by at most
    `_LIFT_MAX` levels, a lit one not (its cheek may be lit white: a grey smear): skin folded
    away while the eye is open is shaded, the closed lid sits where the eye's surface is lit,
    so it does not close as a dark smudge; over a lit eye it goes further, to the tone the eye's
    surface is lit to (`_LIT_SKIN`), and over one lit as the cheek is to the lid's own lit skin
    (`_LIT_BAND`). Both fade out into the corners, where the lid is thin, so the closed lid has
    no edge there. Added, not multiplied, so the skin's texture keeps its contrast."""
    zero = np.zeros((*h.shape, 3), np.float32)
    thin = max(1.0, 0.22 * h_max)
    source = (t_px >= top) & (t_px < t_up - lash) & (h > 0)
    shown = (t_px >= top) & (t_px < t_up - thin) & (h > 0)
    under = (t_px > t_lo + 0.3 * h_max) & (t_px < t_lo + 0.9 * h_max) & (h > 0)
    if source.sum() < 4 or under.sum() < 4 or shown.sum() < 4:
        return zero
    lo, hi = float(s_px[h > 0].min()), float(s_px[h > 0].max())
    bins = np.arange(np.floor(lo), np.ceil(hi) + 1.0, 1.0)
    vis = np.full((len(bins), 3), np.nan)
    src = np.full((len(bins), 3), np.nan)
    cheek = np.full((len(bins), 3), np.nan)
    for i, b in enumerate(bins):
        col = np.abs(s_px - b) <= 1.0
        if (shown & col).sum() >= 2:
            vis[i] = rgb[shown & col].mean(0)
        if (source & col).sum() >= 2:
            src[i] = rgb[source & col].mean(0)
        if (under & col).sum() >= 2:
            cheek[i] = rgb[under & col].mean(0)
    ok = [np.isfinite(a[:, 0]) for a in (vis, src, cheek)]
    if not all(o.any() for o in ok):
        return zero
    # Smooth along the eye: the lid's tone changes slowly across it.
    width = max(1, int(0.3 * len(bins)) | 1)

    def smooth(a: np.ndarray, good: np.ndarray) -> np.ndarray:
        cols = [np.interp(bins, bins[good], a[good, c]) for c in range(3)]
        return np.stack([uniform_filter1d(c, width, mode="nearest") for c in cols], -1)

    vis, src, cheek = (smooth(a, o) for a, o in zip((vis, src, cheek), ok, strict=True))
    match = vis - src
    # The match: at most _MATCH_MAX levels either way.
    luma = np.abs(match @ LUMA)
    match *= np.minimum(1.0, _MATCH_MAX / np.maximum(luma, 1e-6))[:, None]
    # The lift: only a lid darker than `_SHADED` of the cheek, a share of the way there, at
    # most _LIFT_MAX levels (luma); towards the cheek's colour (a shadow's own hue, scaled up,
    # would be a tint): each column's tone, in the hue of the cheek along the whole eye. A
    # cheek lit near white loses its hue (Jesse's lit cheek, [246 242 230] under the eye's outer
    # third): the way from a pink lid to it is blue, and it closed a grey-blue cap.
    v_l, c_l = vis @ LUMA, cheek @ LUMA
    hue = np.median(rgb[under], axis=0)
    cheek = c_l[:, None] * (hue / max(float(hue @ LUMA), 1.0))[None, :]
    amount = np.clip(_LIFT * (_SHADED * c_l - v_l), 0.0, _LIFT_MAX)
    # A lid over a lit eye (its white bright near the cheek's tone) is lit as the eye's surface
    # is, whatever shades the band above it (a brow's shadow, a glasses rim): it goes the whole
    # way to its lit tone, by at most _LIT_MAX levels. Over an eye lit as the cheek is
    # (`_LIT_EYE`), that tone is at least its own lid's lit skin, taken over the whole eye (the
    # band thins into the corners to its shaded margin): the shown lid takes in its lashes
    # (Jesse's lit lid: shown 144, band 170, its lit skin 183, white 206, cheek 204), and at
    # `_LIT_SKIN` of the cheek alone it closed a dark cap on a pink face.
    eye = (t_px >= t_up) & (t_px <= t_lo) & (h > 0)
    if eye.sum() >= 4:
        lum = rgb @ LUMA
        white = float(np.percentile(lum[eye], 80))
        lit = np.minimum(_SHADED * c_l, _LIT_SKIN * white)
        if white >= _LIT_EYE * float(np.median(lum[under])):
            skin = float(np.percentile(lum[source], _LIT_BAND))
            lit = np.maximum(lit, np.minimum(skin, np.minimum(c_l, white)))
        amount = np.maximum(amount, np.clip(lit - v_l, 0.0, _LIT_MAX))
    share = np.clip(amount / np.maximum(c_l - v_l, 1.0), 0.0, 1.0)
    lift = (cheek - vis) * share[:, None]
    # A lid in deep shadow can carry the shadow's own cast, blue over red as skin never is
    # (Jesse's shadowed lid [28 18 34]): the part of it the lift keeps takes the cheek's hue at
    # its own tone, or the lid closed as a mauve patch ([81 55 60], lifted).
    cast = (vis[:, 2] > vis[:, 0])[:, None]
    tinted = v_l[:, None] * cheek / np.maximum(c_l, 1.0)[:, None] - vis
    lift += np.where(cast, (1.0 - share)[:, None] * tinted, 0.0)
    diff = match + lift
    # Into the corners (the last `_TAPER` of the eye's length each side) the lift fades out.
    span = max(hi - lo, 1.0)
    edge = np.minimum(bins - lo, hi - bins) / (_TAPER * span)
    diff *= (np.clip(edge, 0.0, 1.0) ** 2 * (3 - 2 * np.clip(edge, 0.0, 1.0)))[:, None]
    out = np.stack([np.interp(s_px, bins, diff[:, c]) for c in range(3)], -1)
    return np.where((h > 0)[..., None], out, 0.0).astype(np.float32)
