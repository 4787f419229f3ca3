"""The closed lid's tone (`engine.photo_lid_tone.lid_lift`) on synthetic eyes: its skin, not its
lashes, fading into the corners; finite on a tiny eye; lit over a lit eye whatever shades the
band above it; in the cheek's hue under a tinted shadow."""

from __future__ import annotations

import numpy as np


def _lift_case(shown_dark: bool) -> tuple[np.ndarray, ...]:
    """A synthetic eye 30 px long, 10 px open, in its own axes (s along, t down): lid skin 150
    over it, its lower 3 rows (the margin over the eye) lashes at 30, the cheek 170 under it."""
    t_px, s_px = np.mgrid[-20:20, -2:33].astype(np.float32)
    t_up, t_lo = np.zeros_like(s_px), np.full_like(s_px, 10.0)
    inside = (s_px >= 0) & (s_px <= 30)
    h = np.where(inside, 10.0 - 6.0 * ((s_px - 15) / 15) ** 2, 0.0).clip(0)
    lum = np.full(s_px.shape, 150.0, np.float32)
    lum[(t_px < 0) & (t_px >= -3)] = 30.0 if shown_dark else 150.0
    lum[t_px > 10] = 170.0
    rgb = np.repeat(lum[..., None], 3, -1) * np.array([1.0, 0.8, 0.7], np.float32)
    return rgb, s_px, t_px, t_up, t_lo, h, t_up - 8.0


def test_the_closed_lids_tone_is_its_skin_not_its_lashes_and_fades_into_the_corners() -> None:
    """`lid_lift` fades to nothing at the corners (the old one ended at full strength there: a
    hard-edged block), and a lid as light as 0.8 of the cheek is not lightened towards it (the
    old one: 6.8 levels, a pale smear on a lit eye)."""
    from agenthuman_local.engine.photo_geometry import LUMA
    from agenthuman_local.engine.photo_lid_tone import lid_lift

    rgb, s_px, t_px, t_up, t_lo, h, top = _lift_case(shown_dark=True)
    lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, h, top, 10.0, 4.0) @ LUMA
    mid = (np.abs(s_px - 15) <= 1) & (t_px > -4) & (t_px < 10)
    ends = (h > 0) & ((s_px <= 0.5) | (s_px >= 29.5)) & (t_px > -4) & (t_px < 10)
    assert np.abs(lift[mid]).max() > 5.0  # the lashes in the shown lid: it is matched
    assert np.abs(lift[ends]).max() < 0.05 * np.abs(lift[mid]).max()
    rgb, *rest = _lift_case(shown_dark=False)
    lit = lid_lift(rgb, *rest, 10.0, 4.0) @ LUMA
    assert np.abs(lit[mid]).max() < 3.0


def test_a_tiny_eyes_lid_tone_is_finite_and_warns_nothing() -> None:
    """An eye barely open (Perry's far eye in a 400×300 gallery cell: its lash line, capped at
    0.45 of an opening under 2 px, thinner than the 1 px kept for the shown lid) has rows of lid
    skin to stretch but none shown: the old tone took the mean of an empty selection (a
    RuntimeWarning, then NaN)."""
    import warnings

    from agenthuman_local.engine.photo_lid_tone import lid_lift

    rgb, s_px, t_px, t_up, t_lo, h, _ = _lift_case(shown_dark=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, np.minimum(h, 2.0), t_up - 1.0, 2.0, 0.5)
    assert np.isfinite(lift).all()


def _shaded_band_case(white: float) -> tuple[np.ndarray, ...]:
    """The synthetic eye of `_lift_case` under a band shaded to 60 (a brow's shadow or a glasses
    rim over the lid), its white at `white`, the cheek 170 under it."""
    rgb, s_px, t_px, t_up, t_lo, h, top = _lift_case(shown_dark=False)
    lum = np.full(s_px.shape, 60.0, np.float32)
    lum[(t_px >= 0) & (t_px <= 10)] = white
    lum[t_px > 10] = 170.0
    rgb = np.repeat(lum[..., None], 3, -1) * np.array([1.0, 0.8, 0.7], np.float32)
    return rgb, s_px, t_px, t_up, t_lo, h, top


def test_a_lid_over_a_lit_eye_closes_lit_whatever_shades_its_band() -> None:
    """Walter's eyes under his glasses' rim: the eye's white is lit as the cheek is, the band
    above it dark. The closed lid lies on the eye's surface, so it is lit: lifted by the most
    (`_LIT_MAX`), not by the shadowed lid's share (it closed as a dark block). Under a dark
    eye (a shadow over the whole eye) only that share."""
    from agenthuman_local.engine.photo_geometry import LUMA
    from agenthuman_local.engine.photo_lid_tone import _LIFT_MAX, _LIT_MAX, lid_lift

    lifts = {}
    for white in (200.0, 40.0):
        rgb, s_px, t_px, t_up, t_lo, h, top = _shaded_band_case(white)
        lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, h, top, 10.0, 1.0) @ LUMA
        mid = (np.abs(s_px - 15) <= 1) & (t_px > -4) & (t_px < 10)
        lifts[white] = float(np.median(lift[mid]))
    assert lifts[200.0] > 0.9 * _LIT_MAX, lifts
    assert 0.0 < lifts[40.0] <= _LIFT_MAX, lifts


def _lit_eye_case() -> tuple[np.ndarray, ...]:
    """Jesse's lit eye, in the synthetic eye's axes: pink lid skin (220) over it, its lower 4
    rows lashes (110, thicker than the 2.2 px of the shown lid's margin), the eye's white lit
    a little brighter than the cheek (210 against 204, luma), the cheek pink but lit near white,
    without its hue, under the eye's outer third."""
    t_px, s_px = np.mgrid[-20:20, -2:33].astype(np.float32)
    t_up, t_lo = np.zeros_like(s_px), np.full_like(s_px, 10.0)
    inside = (s_px >= 0) & (s_px <= 30)
    h = np.where(inside, 10.0 - 6.0 * ((s_px - 15) / 15) ** 2, 0.0).clip(0)
    pink = np.array([1.0, 0.8, 0.7], np.float32)
    rgb = np.zeros((*s_px.shape, 3), np.float32)
    rgb[t_px < 0] = 220.0 * pink
    rgb[(t_px < 0) & (t_px >= -4)] = 110.0 * pink
    rgb[(t_px >= 0) & (t_px <= 10)] = 210.0
    rgb[t_px > 10] = 240.0 * pink
    rgb[(t_px > 10) & (s_px < 10)] = (246.0, 242.0, 230.0)
    return rgb, s_px, t_px, t_up, t_lo, h, t_up - 8.0


def test_a_lid_over_a_lit_eye_closes_as_its_own_lit_skin_not_a_grey_cap() -> None:
    """Jesse's lit eye closed as a grey cap on a pink face: its shown lid takes in the thick
    lashes, and the lit eye's lift stopped at 0.8 of the cheek (the old tone: 0.87 of the lid's
    skin), towards a cheek lit near white (more blue than red added: grey-blue). Over a lit eye the
    closed lid is as light as its lid's lit skin, and lifted in the skin's hue."""
    from agenthuman_local.engine.photo_geometry import LUMA
    from agenthuman_local.engine.photo_lid_tone import lid_lift

    rgb, s_px, t_px, t_up, t_lo, h, top = _lit_eye_case()
    lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, h, top, 10.0, 4.0)
    skin = 220.0 * float(np.array([1.0, 0.8, 0.7]) @ LUMA)
    source = (t_px >= -8) & (t_px < -4)
    eye = (t_px >= 0) & (t_px < 10)
    for cols in (np.abs(s_px - 15) <= 1, (s_px >= 6) & (s_px <= 9)):
        closed = rgb[source & cols].mean(0) + np.median(lift[eye & cols], axis=0)
        assert float(closed @ LUMA) >= 0.95 * skin, (closed, skin)
        # The skin's hue (blue 0.7 of red), not greyed towards the white cheek (old: 0.74).
        assert closed[2] / closed[0] <= 0.72, closed


def test_a_lid_in_a_tinted_shadow_closes_in_the_cheeks_hue() -> None:
    """Jesse's shadowed eye: the shadow over his lid has its own cast, blue over red as skin never
    is ([28 18 34]), and the lift kept it at 0.57 of the closed lid: a mauve patch ([81 55 60]) on
    a brown face. The kept part takes the cheek's hue (red over green over blue) at its tone."""
    from agenthuman_local.engine.photo_geometry import LUMA
    from agenthuman_local.engine.photo_lid_tone import lid_lift

    rgb, s_px, t_px, t_up, t_lo, h, top = _shaded_band_case(120.0)
    band = t_px < 0
    rgb[band] = (rgb[band] @ LUMA)[:, None] * 0.4 * np.array([1.0, 0.65, 1.2], np.float32)
    lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, h, top, 10.0, 1.0)
    mid = (np.abs(s_px - 15) <= 1) & (t_px > -4) & (t_px < 0)
    r, g, b = np.median(rgb[mid] + lift[mid], axis=0)
    assert r > g > b, (r, g, b)
    assert float(np.median(lift[mid] @ LUMA)) > 10.0


def test_a_lid_closes_no_cooler_than_its_own_skin_under_a_pale_cheek() -> None:
    """Jesse's lit eye closed grey-lavender: his lid's skin is warm (red over blue 0.33-0.53 of
    its tone along the eye), the cheek under it lit so pale (0.27) that the lift towards its hue
    took out red and added blue ([3 20 27] on the inner half). The closed lid keeps at least its
    own skin's warmth."""
    from agenthuman_local.engine.photo_geometry import LUMA
    from agenthuman_local.engine.photo_lid_tone import lid_lift

    def warmth(c: np.ndarray) -> float:
        return float((c[0] - c[2]) / (c @ LUMA))

    rgb, s_px, t_px, t_up, t_lo, h, top = _lit_eye_case()
    warm = np.array([1.0, 0.72, 0.58], np.float32)
    rgb[t_px < 0] = 200.0 * warm
    rgb[(t_px < 0) & (t_px >= -4)] = 150.0 * warm
    rgb[t_px > 10] = (244.0, 230.0, 214.0)
    lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, h, top, 10.0, 4.0)
    source = (t_px >= -8) & (t_px < -4)
    eye = (t_px >= 0) & (t_px < 10)
    cols = np.abs(s_px - 15) <= 1
    closed = rgb[source & cols].mean(0) + np.median(lift[eye & cols], axis=0)
    assert float(closed @ LUMA) > float(rgb[source & cols].mean(0) @ LUMA) - 1.0, closed
    assert warmth(closed) >= warmth(200.0 * warm) - 0.01, (closed, warmth(closed))
