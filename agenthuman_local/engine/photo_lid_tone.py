"""The closed lid's make-up, measured once on the photo above each eye: how thick its lash line
is (the dark rows that ride down on the lid's edge), how tall its band of skin up to the
crease, and the colour added to that skin stretched down over the eye, so the closed lid has the
tone of the lid as it shows, lit as the eye's surface is, in the cheek's hue (never cooler than
the lid's own skin). In the eye's own axes (`engine.photo_eye`: along its corner-to-corner line
`s`, across it `t`, down the face); `engine.photo_blink` draws the lid with these per frame.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

from agenthuman_local.engine.photo_geometry import LUMA

# The visible band of lid skin above the lashes, in eye openings (the contour's tallest gap).
BAND = 0.8
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


def _warmth(rgb: np.ndarray) -> np.ndarray:
    """How far red leads blue, per colour [..., 3], as a share of its tone (skin's warmth)."""
    return (rgb[..., 0] - rgb[..., 2]) / np.maximum(rgb @ LUMA, 1.0)


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
    # The lid closes no cooler than its own skin, shown or stretched: a cheek lit almost white has
    # little red left in its hue (Jesse's lit cheek: red over blue 0.27 of its tone), and towards
    # it a pink lid (0.33-0.53 along the eye) closed grey-lavender. Where the target is cooler,
    # it takes that much of the stretched skin's own hue at its tone.
    target = src + diff
    warm_t, warm_src = _warmth(target), _warmth(src)
    floor = np.minimum(warm_src, _warmth(vis))
    k = np.clip((floor - warm_t) / np.maximum(warm_src - warm_t, 1e-6), 0.0, 1.0)
    own = src * ((target @ LUMA) / np.maximum(src @ LUMA, 1.0))[:, None]
    diff += k[:, None] * (own - target)
    # Into the corners (the last `_TAPER` of the eye's length each side) the lift fades out.
    span = max(hi - lo, 1.0)
    edge = np.minimum(bins - lo, hi - bins) / (_TAPER * span)
    diff *= (np.clip(edge, 0.0, 1.0) ** 2 * (3 - 2 * np.clip(edge, 0.0, 1.0)))[:, None]
    out = np.stack([np.interp(s_px, bins, diff[:, c]) for c in range(3)], -1)
    return np.where((h > 0)[..., None], out, 0.0).astype(np.float32)
