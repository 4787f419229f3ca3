"""The blink check of the mesh photo avatar, shared by its tests: at full blink each eye is
covered by skin of the lid's own tone — no eye showing through (a bright or dark streak), no dark
smudge, no pale patch. `measure` reads a rendered rest and shut frame against the true rig;
`blink_failures` says what is wrong. The photos are the test dependencies' own (skimage's
astronaut, matplotlib's Grace Hopper) and transformed copies (`CASES`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer, open_photo_renderer
from tests import photos

SIZE = FrameSize(960, 720)


def luminance(rgb: np.ndarray) -> np.ndarray:
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


def filled(shape: tuple[int, ...], polygon: np.ndarray) -> np.ndarray:
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
        inside = filled(rest.shape[:2], poly)
        # The lid's skin: the band between the crease and the lashes, the middle of the eye.
        x0, x1 = np.percentile(up[:, 0], [25, 75])
        mid = up[(up[:, 0] >= x0) & (up[:, 0] <= x1)]
        band = filled(
            rest.shape[:2], np.concatenate([mid - [0, 0.6 * h], (mid - [0, 0.25 * h])[::-1]])
        )
        lash = filled(
            rest.shape[:2], np.concatenate([up - [0, 0.35 * h], (up + [0, 0.1 * h])[::-1]])
        )
        lum_rest, lum_shut = luminance(rest), luminance(shut)
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


def renderer(rgb: np.ndarray, path: Path) -> PhotoRenderer:
    save_avatar(prepare_face(photos.encode(rgb)), path)
    r = open_photo_renderer(path, SIZE)
    assert isinstance(r, PhotoRenderer)
    return r


def frames(r: PhotoRenderer) -> tuple[np.ndarray, np.ndarray]:
    p = torch.zeros(2, N_PARAMS)
    p[1, P.BLINK] = 1.0
    rest, shut = r.render(p).numpy()
    return rest, shut


CASES = {
    "astronaut": photos.astronaut,
    "grace": photos.grace_hopper,
    "grace mirrored": lambda: photos.grace_hopper()[:, ::-1].copy(),
}
