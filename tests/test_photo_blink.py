"""Blinks of the mesh photo avatar, measured on the rendered frames: at full blink each eye is
covered by skin of the lid's own tone — no eye showing through (a bright or dark streak), no dark
smudge, no pale patch — and the closed lid's edge is a line, not a row of pixel steps.

The photos are the test dependencies' own (skimage's astronaut, matplotlib's Grace Hopper) and
transformed copies; each check has a negative control that fails it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer, open_photo_renderer
from agenthuman_local.engine.rig import MeshRig
from tests import photos

SIZE = FrameSize(960, 720)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class EyeBlink:
    """One eye at rest and at full blink, in frame pixels."""

    lid_skin: float  # median luminance of the lid's skin above the eye, at rest
    lid_range: tuple[float, float]  # its 5th and 95th percentiles
    lashes: float  # the lash line's darkest tone at rest (its 10th percentile)
    shut: np.ndarray  # luminance of the eye's pixels (inside its contour) at full blink
    shut_rgb: np.ndarray  # their colour
    lid_rgb: np.ndarray  # the lid skin's median colour at rest
    over_iris: float  # median luminance of the closed lid over the iris's middle columns


def _filled(shape: tuple[int, ...], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask


def measure(renderer: PhotoRenderer, rest: np.ndarray, shut: np.ndarray) -> list[EyeBlink]:
    rig = renderer.rig
    eyes = []
    for upper, lower in rig.eye_lids:
        up, lo = rig.points(upper), rig.points(lower)
        h = float(np.max(lo[:, 1].max() - up[:, 1].min()))
        # The closed eye: inside the contour, above the closed lid's lash line (on the lower
        # lid), without the corners.
        x0, x1 = np.percentile(up[:, 0], [10, 90])
        keep_up, keep_lo = (
            up[(up[:, 0] >= x0) & (up[:, 0] <= x1)],
            lo[(lo[:, 0] >= x0) & (lo[:, 0] <= x1)],
        )
        poly = np.concatenate([keep_up, (keep_lo - [0, max(1.5, 0.3 * h)])[::-1]])
        inside = _filled(rest.shape[:2], poly)
        # The lid's skin: the band between the crease and the lashes, the middle of the eye.
        x0, x1 = np.percentile(up[:, 0], [25, 75])
        mid = up[(up[:, 0] >= x0) & (up[:, 0] <= x1)]
        band = _filled(
            rest.shape[:2], np.concatenate([mid - [0, 0.6 * h], (mid - [0, 0.25 * h])[::-1]])
        )
        lash = _filled(
            rest.shape[:2], np.concatenate([up - [0, 0.35 * h], (up + [0, 0.1 * h])[::-1]])
        )
        lum_rest, lum_shut = _luminance(rest), _luminance(shut)
        # The closed lid over the iris: its columns within 0.6 of the iris's radius of its
        # centre (where an iris the lid did not cover would show, as a darker smear).
        iris = rig.irises[len(eyes)]
        radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
        cols = np.abs(np.arange(rest.shape[1]) - iris[0, 0]) <= 0.6 * radius
        over_iris = (inside > 0) & cols[None, :]
        eyes.append(
            EyeBlink(
                lid_skin=float(np.median(lum_rest[band > 0])),
                lid_range=tuple(np.percentile(lum_rest[band > 0], [5, 95]).tolist()),
                lashes=float(np.percentile(lum_rest[lash > 0], 10)),
                shut=lum_shut[inside > 0],
                shut_rgb=shut[inside > 0].astype(np.float32),
                lid_rgb=np.median(rest[band > 0].astype(np.float32), axis=0),
                over_iris=float(np.median(lum_shut[over_iris])),
            )
        )
    return eyes


OVER_IRIS = 1.0


def blink_failures(eyes: list[EyeBlink]) -> list[str]:
    """What is wrong with the closed lids, or nothing."""
    out = []
    for i, e in enumerate(eyes):
        lo, mid, hi = np.percentile(e.shut, [5, 50, 95])
        skin_lo, skin_hi = e.lid_range
        if not 0.65 * e.lid_skin <= mid <= 1.4 * e.lid_skin:
            out.append(f"eye {i}: closed lid at {mid / e.lid_skin:.2f} of the lid's skin (median)")
        # Over the iris the closed lid is at least as light as the lid's skin at rest (it faces
        # the light there, the band under the brow is shaded): correctly closed lids measure
        # 1.08–1.39; an iris the lid did not cover, stretched into a smear, 0.59–0.92.
        if e.over_iris < OVER_IRIS * e.lid_skin:
            out.append(
                f"eye {i}: a darker smear over the iris, {e.over_iris / e.lid_skin:.2f} of the "
                "lid's skin"
            )
        if lo < 0.8 * skin_lo:
            out.append(
                f"eye {i}: a dark streak, 5th percentile {lo:.0f} < lid skin's {skin_lo:.0f}"
            )
        if hi > 1.2 * skin_hi + 10:
            out.append(f"eye {i}: a pale patch or eye white, 95th pct {hi:.0f} > {skin_hi:.0f}")
        darker = float(np.mean(e.shut < min(e.lashes, 0.6 * e.lid_skin)))
        if darker > 0.03:
            out.append(f"eye {i}: {darker:.0%} of the closed eye darker than the lashes")
        # Hue: the closed lid is the lid's colour (chroma direction), not a grey or a tint.
        chroma = np.median(e.shut_rgb, axis=0) - float(np.median(e.shut))
        lid_chroma = e.lid_rgb - float(e.lid_rgb @ np.array([0.299, 0.587, 0.114]))
        if float(np.abs(chroma - lid_chroma).max()) > 25.0:
            out.append(f"eye {i}: closed lid's colour {chroma.round()} vs lid {lid_chroma.round()}")
    return out


def _renderer(rgb: np.ndarray, path: Path) -> PhotoRenderer:
    save_avatar(prepare_face(photos.encode(rgb)), path)
    r = open_photo_renderer(path, SIZE)
    assert isinstance(r, PhotoRenderer)
    return r


def _frames(r: PhotoRenderer) -> tuple[np.ndarray, np.ndarray]:
    p = torch.zeros(2, N_PARAMS)
    p[1, P.BLINK] = 1.0
    rest, shut = r.render(p).numpy()
    return rest, shut


def _lids_put_low(avatar: Path, share: float = 0.2) -> None:
    """Rewrite the stored rig as the iris model gets a shadowed or hooded eye wrong: each upper
    lid point `share` of the eye's opening too low, so the eye's top shows above the contour."""
    import dataclasses

    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    lm = rig.landmarks.copy()
    for upper, lower in rig.eye_lids:
        lo = lm[list(lower)]
        order = np.argsort(lo[:, 0])
        for i in upper[1:-1]:
            y_lo = np.interp(lm[i, 0], lo[order, 0], lo[order, 1])
            lm[i, 1] += share * (y_lo - lm[i, 1])
    (avatar / "rig.json").write_text(dataclasses.replace(rig, landmarks=lm).to_json())


def _corners_put_short(avatar: Path, share: float = 0.2) -> None:
    """The same for a turned eye: each eye's contour `share` shorter at both corners."""
    import dataclasses

    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    lm = rig.landmarks.copy()
    for upper, lower in rig.eye_lids:
        idx = sorted(set(upper) | set(lower))
        centre = lm[idx, :2].mean(0)
        lm[idx, :2] = centre + (lm[idx, :2] - centre) * np.array([1 - share, 1.0])
    (avatar / "rig.json").write_text(dataclasses.replace(rig, landmarks=lm).to_json())


def _carried_on(avatar: Path, share: float = 0.35) -> None:
    """The same for a turned head's far eye: each eye's contour carried on `share` further
    towards the nose (as the mesh carries it on behind the nose), over the skin beside it."""
    import dataclasses

    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    lm = rig.landmarks.copy()
    nose_x = float(lm[4, 0])
    for upper, lower in rig.eye_lids:
        idx = np.array(sorted(set(upper) | set(lower)))
        centre = lm[idx, :2].mean(0)
        near = idx[(lm[idx, 0] - centre[0]) * np.sign(nose_x - centre[0]) > 0]
        lm[near, 0] = centre[0] + (lm[near, 0] - centre[0]) * (1 + share)
    (avatar / "rig.json").write_text(dataclasses.replace(rig, landmarks=lm).to_json())


CASES = {
    "astronaut": photos.astronaut,
    "grace": photos.grace_hopper,
    "grace mirrored": lambda: photos.grace_hopper()[:, ::-1].copy(),
}


MISSED = {"lids put low": _lids_put_low, "corners put short": _corners_put_short}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = {}
    for name, make in CASES.items():
        r = _renderer(make(), tmp_path_factory.mktemp("blink") / "avatar")
        rest, shut = _frames(r)
        out[name] = (r, rest, shut)
    return out


def _missed(photo: str, how: str, root: Path) -> tuple[PhotoRenderer, np.ndarray, np.ndarray]:
    """The true rig (for measuring) and the frames drawn from a rig whose eyes were missed."""
    rgb = CASES[photo]()
    true = _renderer(rgb, root / "true")
    avatar = root / "missed"
    save_avatar(prepare_face(photos.encode(rgb)), avatar)
    MISSED[how](avatar)
    missed = open_photo_renderer(avatar, SIZE)
    assert isinstance(missed, PhotoRenderer)
    rest, shut = _frames(missed)
    return true, rest, shut


# The iris's top above a lid put too low is not covered: a dark iris and a dark, wrinkled lid are
# not told apart by tone (only white of the eye is). The lid's edge carries the dark rows over the
# contour down whole only up to a lash's thickness, the rest is stretched from the lid's skin down
# to them and closes as a smear over the iris (seen at 6×; median 0.59–0.92 of the lid's skin over
# the iris, needs 1.0). Tried this session, not enough: the eye grown up through iris-dark pixels in
# the iris's circle (it also climbs the lashes on the true rig and raises the lid's band into the
# crease), and the stretch made non-linear so the rows by the lashes are pressed into a line
# (Grace 0.85/0.71, the astronaut 0.91/0.88).
_IRIS_MISSED = pytest.mark.xfail(
    strict=True, reason="an iris the lid model put too low shows as a smear under the closed lid"
)


@pytest.mark.parametrize(
    ("photo", "how"),
    [
        pytest.param("astronaut", "lids put low", marks=_IRIS_MISSED),
        ("astronaut", "corners put short"),
        ("grace", "corners put short"),
        ("grace mirrored", "corners put short"),
        pytest.param("grace", "lids put low", marks=_IRIS_MISSED),
        pytest.param("grace mirrored", "lids put low", marks=_IRIS_MISSED),
    ],
)
def test_a_lid_closes_over_the_eye_the_model_missed(photo: str, how: str, tmp_path: Path) -> None:
    """Where the iris model puts the lid too low or the corners short (shadowed, hooded, turned
    eyes), the lid still covers the whole eye: none of it shows through the closed lid."""
    true, rest, shut = _missed(photo, how, tmp_path)
    assert blink_failures(measure(true, rest, shut)) == []


@pytest.mark.parametrize("case", list(CASES))
def test_a_closed_lid_is_the_lids_own_skin_over_the_whole_eye(rendered, case: str) -> None:
    r, rest, shut = rendered[case]
    assert blink_failures(measure(r, rest, shut)) == []


def test_an_eye_left_open_fails_the_check(rendered) -> None:
    r, rest, _ = rendered["astronaut"]
    failures = blink_failures(measure(r, rest, rest))
    assert any("darker than the lashes" in f or "dark streak" in f for f in failures), failures


def test_a_dark_smudge_for_a_lid_fails_the_check(rendered) -> None:
    r, rest, shut = rendered["grace"]
    smudged = shut.copy()
    for upper, lower in r.rig.eye_lids:
        pts = np.concatenate([r.rig.points(upper), r.rig.points(lower)[::-1]])
        mask = np.zeros(shut.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        smudged[mask > 0] = (smudged[mask > 0] * 0.45).astype(np.uint8)
    failures = blink_failures(measure(r, rest, smudged))
    assert any("dark streak" in f or "closed lid at" in f for f in failures), failures


def test_a_darker_smear_over_the_iris_fails_the_check(rendered) -> None:
    """Negative control: the closed lid 0.8 as light in the iris's columns (only there) fails,
    although the whole closed lid's median stays within its bounds."""
    r, rest, shut = rendered["grace"]
    smeared = shut.astype(np.float32)
    for iris in r.rig.irises:
        radius = float(np.mean(np.hypot(*(iris[1:] - iris[0]).T)))
        x0, x1 = int(iris[0, 0] - radius), int(iris[0, 0] + radius) + 1
        smeared[:, x0:x1] *= 0.8
    smeared = smeared.astype(np.uint8)
    failures = blink_failures(measure(r, rest, smeared))
    assert failures and all("smear over the iris" in f for f in failures), failures


def test_a_pale_patch_for_a_lid_fails_the_check(rendered) -> None:
    r, rest, shut = rendered["astronaut"]
    pale = shut.copy()
    for upper, lower in r.rig.eye_lids:
        pts = np.concatenate([r.rig.points(upper), r.rig.points(lower)[::-1]])
        mask = np.zeros(shut.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        pale[mask > 0] = np.clip(pale[mask > 0].astype(np.float32) * 1.6, 0, 255).astype(np.uint8)
    failures = blink_failures(measure(r, rest, pale))
    assert any("pale patch" in f or "closed lid at" in f for f in failures), failures


def test_a_half_blink_covers_the_top_of_the_eye_only(rendered) -> None:
    r, rest, _ = rendered["grace"]
    p = torch.zeros(1, N_PARAMS)
    p[0, P.BLINK] = 0.5
    half = r.render(p).numpy()[0]
    for upper, lower in r.rig.eye_lids:
        up, lo = r.rig.points(upper), r.rig.points(lower)
        cx = int(round(up[4, 0]))
        y_up, y_lo = up[4, 1], lo[4, 1]
        h = y_lo - y_up
        col = slice(cx - 1, cx + 2)
        top = slice(int(y_up + 0.1 * h), int(y_up + 0.35 * h) + 1)
        bottom = slice(int(y_lo - 0.3 * h), int(y_lo - 0.05 * h) + 1)
        # The top of the eye changed (the lid is over it); its bottom is the eye as it was.
        assert np.abs(_luminance(half[top, col]) - _luminance(rest[top, col])).mean() > 10
        assert np.abs(_luminance(half[bottom, col]) - _luminance(rest[bottom, col])).mean() < 6


# A closed lid's column-to-column variation (its column means less their 5-column average),
# luminance levels. Stretched down over the eye, a wrinkled lid's folds and pores became
# vertical streaks (Grace: 4.8–8.3); skin with no streaks varies by about 2–3.5.
MAX_STREAKS = 4.5


def closed_lid_streaks(r: PhotoRenderer, shut: np.ndarray) -> list[float]:
    """Per eye, how much the closed lid's stretched skin (from a third of the eye's opening
    above its top edge to under the lash line) varies from column to column, over the middle
    60 % of the eye."""
    out = []
    lum = _luminance(shut)
    for upper, lower in r.rig.eye_lids:
        up, lo = r.rig.points(upper), r.rig.points(lower)
        h = float(lo[:, 1].max() - up[:, 1].min())
        x0, x1 = np.percentile(up[:, 0], [20, 80])
        top = up[(up[:, 0] >= x0) & (up[:, 0] <= x1)] - [0, 0.3 * h]
        bottom = lo[(lo[:, 0] >= x0) & (lo[:, 0] <= x1)] - [0, max(1.5, 0.4 * h)]
        ys, xs = np.nonzero(_filled(shut.shape, np.concatenate([top, bottom[::-1]])))
        cols = np.arange(xs.min(), xs.max() + 1)
        prof = np.array([lum[ys[xs == c], c].mean() for c in cols])
        smooth = np.convolve(np.pad(prof, 2, mode="edge"), np.ones(5) / 5, "valid")
        out.append(float(np.std(prof - smooth)))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_closed_lid_has_no_streaks(rendered, case: str) -> None:
    r, _, shut = rendered[case]
    assert max(closed_lid_streaks(r, shut)) < MAX_STREAKS


def test_streaks_on_a_closed_lid_are_seen(rendered) -> None:
    """Negative control: stripes two columns wide, ±6 levels, on the closed lids fail."""
    r, _, shut = rendered["astronaut"]
    striped = shut.astype(np.float32)
    striped += np.where(np.arange(shut.shape[1]) % 4 < 2, 6.0, -6.0)[None, :, None]
    striped = np.clip(striped, 0, 255).astype(np.uint8)
    assert min(closed_lid_streaks(r, striped)) >= MAX_STREAKS


# The closed lid's fine grain (what a 1 px blur takes out), against the skin's under the eye at
# rest: stretched and smoothed, the lid was a flat pale patch (the least eye of each case 0.20
# to 0.27; 0.37 to 0.48 with the grain given back).
MIN_GRAIN = 0.33


def closed_lid_grain(r: PhotoRenderer, rest: np.ndarray, shut: np.ndarray) -> list[float]:
    """Per eye, the spread of the closed lid's fine texture (over the middle 60 % of the eye,
    above the lash line's band) over that of the skin half to one and a half openings under
    it."""
    out = []
    for upper, lower in r.rig.eye_lids:
        up, lo = r.rig.points(upper), r.rig.points(lower)
        h = float(lo[:, 1].max() - up[:, 1].min())
        x0, x1 = np.percentile(up[:, 0], [20, 80])
        top, bottom = (
            up[(up[:, 0] >= x0) & (up[:, 0] <= x1)],
            lo[(lo[:, 0] >= x0) & (lo[:, 0] <= x1)],
        )
        lid = _filled(shut.shape, np.concatenate([top, (bottom - [0, max(1.5, 0.6 * h)])[::-1]]))
        cheek = _filled(
            shut.shape, np.concatenate([bottom + [0, 0.5 * h], (bottom + [0, 1.5 * h])[::-1]])
        )

        def fine(img: np.ndarray) -> np.ndarray:
            lum = _luminance(img)
            return lum - cv2.GaussianBlur(lum, (0, 0), 1.0)

        out.append(float(np.std(fine(shut)[lid > 0]) / np.std(fine(rest)[cheek > 0])))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_closed_lid_keeps_the_skins_grain(rendered, case: str) -> None:
    r, rest, shut = rendered[case]
    assert min(closed_lid_grain(r, rest, shut)) >= MIN_GRAIN


def test_a_smoothed_lid_fails_the_grain_check(rendered) -> None:
    """Negative control: the closed lids blurred (σ 1 px) fail."""
    r, rest, shut = rendered["astronaut"]
    blurred = cv2.GaussianBlur(shut, (0, 0), 1.0)
    assert min(closed_lid_grain(r, rest, blurred)) < MIN_GRAIN


def _margin_shadowed(avatar: Path, depth: float = 0.6, shade: float = 0.3) -> None:
    """Rewrite the stored photo as a shadowed lid margin looks (Walter's near eye): the rows over
    each eye's upper contour, up to `depth` of its opening, `shade` as light (soft-edged), the rig
    unchanged, so the contour sits under the dark margin."""
    from agenthuman_local.engine.rig import MeshRig

    rig = MeshRig.from_json((avatar / "rig.json").read_text())
    bgr = cv2.imread(str(avatar / "image.jpg")).astype(np.float32)
    gain = np.ones(bgr.shape[:2], np.float32)
    for upper, lower in rig.eye_lids:
        up, lo = rig.landmarks[list(upper), :2], rig.landmarks[list(lower), :2]
        h = float(lo[:, 1].max() - up[:, 1].min())
        band = np.concatenate([up + [0, 0.5], (up - [0, depth * h])[::-1]])
        mask = _filled(bgr.shape, band).astype(np.float32)
        mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.08 * h))
        gain = np.minimum(gain, 1.0 - (1.0 - shade) * mask)
    cv2.imwrite(str(avatar / "image.jpg"), np.clip(bgr * gain[..., None], 0, 255).astype(np.uint8))


def _shaded_frames(photo: str, root: Path) -> tuple[PhotoRenderer, np.ndarray, np.ndarray]:
    """The true renderer and its frame at rest (the lid's skin unshaded, for measuring), and the
    closed lid drawn from the photo with its lid margin shadowed (`_margin_shadowed`)."""
    rgb = CASES[photo]()
    true = _renderer(rgb, root / "true")
    rest, _ = _frames(true)
    avatar = root / "shaded"
    save_avatar(prepare_face(photos.encode(rgb)), avatar)
    _margin_shadowed(avatar)
    shaded = open_photo_renderer(avatar, SIZE)
    assert isinstance(shaded, PhotoRenderer)
    return true, rest, _frames(shaded)[1]


# Not fixed: the eye is not grown up over a shadowed margin, so the band's skin stretched down is
# the dark margin (the old and the present lid: 0.39-0.42 of the skin on the astronaut). Tried this
# session: the eye grown up through pixels under 0.45 of the lid's skin where that dark run averages
# over 0.34 openings (Walter's near eye 0.35, his far one 0.47: both then close as skin over the
# whole eye and its shadowed corner); but a lash line measures up to 0.33 (Grace with its corners
# put short, Grace mirrored), and a lid grown over it closes as a flat pale cap stretched from the
# brow's lit ridge (1.5-2.75 of the lid's skin).
_MARGIN_MISSED = pytest.mark.xfail(
    strict=True, reason="a shadowed lid margin over the contour closes as a dark block"
)


@_MARGIN_MISSED
@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_a_shadowed_lid_margin_closes_as_no_dark_block(photo: str, tmp_path: Path) -> None:
    """Where the contour sits under a shadowed lid margin (Walter's eyes: the dark rows over the
    eye are eye and shade, not a lash line), the closed lid is not the dark margin stretched down
    over the eye (a dark block): not darker than the lid's skin of the unshaded photo, no dark
    streak."""
    true, rest, shut = _shaded_frames(photo, tmp_path)
    failures = blink_failures(measure(true, rest, shut))
    dark = [f for f in failures if "dark streak" in f or "darker" in f or " at 0." in f]
    assert dark == [], failures


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
    from agenthuman_local.engine.photo_eye import LUMA, lid_lift

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

    from agenthuman_local.engine.photo_eye import lid_lift

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
    from agenthuman_local.engine.photo_eye import _LIFT_MAX, _LIT_MAX, LUMA, lid_lift

    lifts = {}
    for white in (200.0, 40.0):
        rgb, s_px, t_px, t_up, t_lo, h, top = _shaded_band_case(white)
        lift = lid_lift(rgb, s_px, t_px, t_up, t_lo, h, top, 10.0, 1.0) @ LUMA
        mid = (np.abs(s_px - 15) <= 1) & (t_px > -4) & (t_px < 10)
        lifts[white] = float(np.median(lift[mid]))
    assert lifts[200.0] > 0.9 * _LIT_MAX, lifts
    assert 0.0 < lifts[40.0] <= _LIFT_MAX, lifts


def test_a_lid_is_not_drawn_over_the_skin_a_contour_runs_on_over(tmp_path: Path) -> None:
    """Walter's far eye: the mesh carries the contour on behind his nose, and the closed lid
    was drawn over the nose (a dark block with a stepped edge). An end of the contour whose
    columns are the cheek's skin is not eye: with the astronaut's image-left contour carried on
    0.35 towards the nose, the skin it runs over (past the true contour, 2 px clear of it)
    stays as it is when the lid closes (mean change 6.6 levels; 58 when the lid covered it).
    Her other eye's nose side is shaded to 0.56-0.62 of the cheek, which is not taken for
    skin (a shaded corner and a dark iris are not told apart by tone), so it is not checked."""
    rgb = photos.astronaut()
    true = _renderer(rgb, tmp_path / "true")
    avatar = tmp_path / "carried"
    save_avatar(prepare_face(photos.encode(rgb)), avatar)
    _carried_on(avatar)
    carried = open_photo_renderer(avatar, SIZE)
    assert isinstance(carried, PhotoRenderer)
    rest, shut = _frames(carried)
    upper, lower = true.rig.eye_lids[0]

    def filled(rig: MeshRig) -> np.ndarray:
        pts = np.concatenate([rig.points(upper), rig.points(lower)[::-1]])
        mask = np.zeros(rest.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        return mask

    clear = cv2.dilate(filled(true.rig), np.ones((5, 5), np.uint8))
    over = (filled(carried.rig) > 0) & (clear == 0)
    assert over.sum() >= 8
    change = np.abs(rest.astype(np.float32) - shut.astype(np.float32)).sum(-1)[over]
    assert change.mean() < 15.0, change.mean()
