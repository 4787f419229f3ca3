"""Rig version 1, `HaarRig`: boxes and a lip line from OpenCV's Haar cascades (until 2026-12).

Avatars whose re-rig by the face mesh fails keep it, and the old renderer (`engine.photo_legacy`)
reads it; `haar_view` gives that renderer the same geometry from a version-2 rig. `load_rig`
reads a stored rig of either version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from agenthuman_local.engine.rig import CHIN, RIG_VERSION, Box, MeshRig

HAAR_RIG_VERSION = 1

# alt2 gave no false positives on skimage's non-face images where `default` found faces in
# coins, the moon and a retina (measured while writing this module).
_FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
_EYE_CASCADE = "haarcascade_eye.xml"
_EYE_FACE_PX = 160  # eyes are searched in a face at least this wide


@dataclass(frozen=True)
class HaarRig:
    """Face geometry of one photo from Haar cascades (rig version 1).

    `lip_y` is the line where the mouth opens (between the lips, or under the upper teeth when the
    photo shows them) at the mouth's centre; `lip_curve_px` is how far the corners sit above that
    (positive for a smile). `eyes_from` / `mouth_from` say whether a detector or the geometric
    prior placed them, so a caller can tell a confident rig from a guessed one.
    """

    image_width: int
    image_height: int
    face: Box
    left_eye: Box  # the eye on the image's left
    right_eye: Box
    mouth_x: float
    lip_y: float
    mouth_width: float
    lip_curve_px: float
    chin_y: float
    teeth_visible: bool
    eyes_from: str = "prior"
    mouth_from: str = "prior"
    version: int = HAAR_RIG_VERSION

    @property
    def eye_distance(self) -> float:
        return float(
            np.hypot(self.right_eye.cx - self.left_eye.cx, self.right_eye.cy - self.left_eye.cy)
        )

    def scaled(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> HaarRig:
        """The same rig after the image is scaled by `scale` and shifted by (dx, dy) pixels."""
        return HaarRig(
            image_width=round(self.image_width * scale),
            image_height=round(self.image_height * scale),
            face=self.face.scaled(scale, dx, dy),
            left_eye=self.left_eye.scaled(scale, dx, dy),
            right_eye=self.right_eye.scaled(scale, dx, dy),
            mouth_x=self.mouth_x * scale + dx,
            lip_y=self.lip_y * scale + dy,
            mouth_width=self.mouth_width * scale,
            lip_curve_px=self.lip_curve_px * scale,
            chin_y=self.chin_y * scale + dy,
            teeth_visible=self.teeth_visible,
            eyes_from=self.eyes_from,
            mouth_from=self.mouth_from,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> HaarRig:
        """A version-1 rig; a version-2 rig is read as the version-1 geometry it implies
        (`haar_view`), so the version-1 renderer can draw either."""
        raw = json.loads(text)
        if raw.get("version") == RIG_VERSION:
            return haar_view(MeshRig.from_json(text))
        if raw.get("version") != HAAR_RIG_VERSION:
            raise ValueError(
                f"rig.json version {raw.get('version')!r}, expected {HAAR_RIG_VERSION}"
            )
        boxes: dict[str, Any] = {k: Box(**raw.pop(k)) for k in ("face", "left_eye", "right_eye")}
        return cls(**boxes, **raw)


def _cascade(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)  # type: ignore[attr-defined]
    if classifier.empty():
        raise RuntimeError(f"OpenCV Haar cascade {name} is missing (need opencv-python-headless<5)")
    return classifier


def equalised_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def detect_faces(gray: np.ndarray, min_size_px: int = 20) -> list[Box]:
    """Frontal faces in an equalised grayscale image, largest first."""
    found = _cascade(_FACE_CASCADE).detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size_px, min_size_px)
    )
    boxes = [Box(float(x), float(y), float(w), float(h)) for x, y, w, h in found]
    return sorted(boxes, key=lambda b: b.w, reverse=True)


def _find_eyes(gray: np.ndarray, face: Box) -> tuple[Box, Box] | None:
    x0, y0 = int(face.x), int(face.y)
    roi = gray[y0 : int(face.y + face.h * 0.6), x0 : int(face.x + face.w)]
    # The eye cascade's window is 20 px: a small face's eyes are below it, so enlarge first.
    zoom = max(1.0, _EYE_FACE_PX / face.w)
    if zoom > 1.0:
        roi = cv2.resize(roi, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    min_px = max(5, int(face.w * zoom * 0.12))
    found = _cascade(_EYE_CASCADE).detectMultiScale(
        roi,
        scaleFactor=1.1,
        minNeighbors=3,
        minSize=(min_px, min_px),
        maxSize=(int(face.w * zoom * 0.45),) * 2,
    )
    eyes = (
        [Box(x / zoom + x0, y / zoom + y0, w / zoom, h / zoom) for x, y, w, h in np.asarray(found)]
        if len(found)
        else []
    )
    left = [e for e in eyes if e.cx < face.cx and e.cy < face.y + face.h * 0.55]
    right = [e for e in eyes if e.cx >= face.cx and e.cy < face.y + face.h * 0.55]
    best: tuple[float, tuple[Box, Box]] | None = None
    for le in left:
        for re in right:
            gap = re.cx - le.cx
            if not face.w * 0.3 <= gap <= face.w * 0.7:
                continue
            # Prefer a level pair of similar size that sits where eyes usually are.
            cost = abs(le.cy - re.cy) / face.h + abs(le.w - re.w) / face.w
            cost += abs((le.cy + re.cy) / 2 - (face.y + face.h * 0.38)) / face.h
            if best is None or cost < best[0]:
                best = (cost, (le, re))
    return None if best is None else best[1]


def _prior_eyes(face: Box) -> tuple[Box, Box]:
    size = face.w * 0.25
    cy = face.y + face.h * 0.38
    return (
        Box(face.x + face.w * 0.3 - size / 2, cy - size / 2, size, size),
        Box(face.x + face.w * 0.7 - size / 2, cy - size / 2, size, size),
    )


def _teeth(rgb: np.ndarray) -> np.ndarray | None:
    """The largest blob of teeth-like pixels in a mouth patch, or None when there is none."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32) / 255.0
    value, sat = hsv[..., 2], hsv[..., 1]
    # Teeth are among the brightest pixels around the mouth and clearly less saturated than
    # the skin, whatever the skin tone and exposure (percentiles, not fixed levels).
    bright = value >= np.percentile(value, 60)
    mask = bright & (sat <= 0.75 * np.median(sat) + 0.02) & (sat < 0.3)
    # Close gaps between teeth sideways only, so the blob does not bridge to a lip highlight.
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _lip_line(
    rgb: np.ndarray, cx: float, prior_y: float, half_w: float, eye_dist: float
) -> tuple[float, float, float, bool] | None:
    """(lip_y, lip_curve_px, mouth_width, teeth_visible) from pixels, or None when unclear."""
    h_img, w_img = rgb.shape[:2]
    y0 = int(max(0, prior_y - 0.25 * eye_dist))
    y1 = int(min(h_img, prior_y + 0.25 * eye_dist))
    x0 = int(max(0, cx - half_w * 1.5))
    x1 = int(min(w_img, cx + half_w * 1.5))
    if y1 - y0 < 5 or x1 - x0 < 8:
        return None
    cols = np.arange(x0, x1)
    inner = np.abs(cols - cx) < half_w * 0.85
    teeth = _teeth(rgb[y0:y1, x0:x1])
    teeth_cols = np.zeros(cols.shape, bool) if teeth is None else np.asarray(teeth.any(axis=0))
    teeth_visible = bool(teeth_cols[inner].mean() > 0.5)
    ys: list[float] = []
    us: list[float] = []
    if teeth is not None and teeth_visible:
        # The mouth opens under the upper teeth, so they stay with the upper lip.
        for j in np.nonzero(inner & teeth_cols)[0]:
            rows = np.nonzero(teeth[:, j])[0]
            # The end of the first run from the top: the upper teeth's edge, not a lip highlight.
            breaks = np.nonzero(np.diff(rows) > 1)[0]
            bottom = rows[breaks[0]] if breaks.size else rows[-1]
            ys.append(float(bottom + 1 + y0))
            us.append(float((cols[j] - cx) / half_w))
        tx = cols[teeth_cols]
        # Side teeth fall in shadow and escape the blob, so the blob underestimates the width.
        width = float(np.clip((tx.max() - tx.min() + 1) * 1.25, half_w * 2, half_w * 2.6))
    else:
        gray = cv2.GaussianBlur(cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), (3, 3), 0)
        for j in np.nonzero(inner)[0]:
            ys.append(float(np.argmin(gray[:, j]) + y0 + 0.5))
            us.append(float((cols[j] - cx) / half_w))
        width = half_w * 2
    if len(ys) < 6:
        return None
    u2 = np.square(np.asarray(us))
    yv = np.asarray(ys)
    # Robust quadratic y = a - c·u²: fit, drop the worst third, refit.
    coeffs = np.polyfit(u2, yv, 1)
    resid = np.abs(np.polyval(coeffs, u2) - yv)
    keep = resid <= np.quantile(resid, 0.67)
    if keep.sum() >= 4:
        coeffs = np.polyfit(u2[keep], yv[keep], 1)
    lip_y = float(coeffs[1])
    # The fit spans ±0.85 of the half width; the corners sit higher still on a smile.
    curve = float(np.clip(-coeffs[0], -0.1 * eye_dist, 0.3 * eye_dist))
    if abs(lip_y - prior_y) > 0.25 * eye_dist:
        return None
    return lip_y, curve, width, teeth_visible


def find_rig(rgb: np.ndarray, face: Box, gray: np.ndarray | None = None) -> HaarRig:
    """The Haar rig (version 1) of the face `face` in an RGB uint8 image."""
    if gray is None:
        gray = equalised_gray(rgb)
    eyes = _find_eyes(gray, face)
    eyes_from = "haar" if eyes is not None else "prior"
    left, right = eyes if eyes is not None else _prior_eyes(face)
    eye_dist = float(np.hypot(right.cx - left.cx, right.cy - left.cy))
    eyes_y = (left.cy + right.cy) / 2
    mouth_x = (left.cx + right.cx) / 2
    prior_lip_y = eyes_y + 1.02 * eye_dist
    prior_half_w = 0.45 * eye_dist
    measured = _lip_line(rgb, mouth_x, prior_lip_y, prior_half_w, eye_dist)
    if measured is not None:
        lip_y, curve, width, teeth = measured
        mouth_from = "pixels"
    else:
        lip_y, curve, width, teeth = prior_lip_y, 0.05 * eye_dist, 2 * prior_half_w, False
        mouth_from = "prior"
    h_img, w_img = rgb.shape[:2]
    return HaarRig(
        image_width=int(w_img),
        image_height=int(h_img),
        face=face,
        left_eye=left,
        right_eye=right,
        mouth_x=float(mouth_x),
        lip_y=float(lip_y),
        mouth_width=float(width),
        lip_curve_px=float(curve),
        chin_y=float(min(h_img - 1, lip_y + 0.62 * eye_dist)),
        teeth_visible=teeth,
        eyes_from=eyes_from,
        mouth_from=mouth_from,
    )


def haar_view(rig: MeshRig) -> HaarRig:
    """The version-1 geometry a version-2 rig implies (boxes and a lip line), for the old
    renderer."""
    eyes = []
    for e, (upper, _lower) in enumerate(rig.eye_lids):
        a, b = rig.points(upper[0]), rig.points(upper[-1])
        size = float(np.hypot(*(b - a)))
        cx, cy = rig.irises[e, 0]
        eyes.append(Box(float(cx) - size / 2, float(cy) - size / 2, size, size))
    corners = rig.mouth_corners
    # The version-1 width spanned the opening (the astronaut: Haar 40 px by pixels, 42 by
    # eye); the inner contour's corners measure the same (41.6 px), the outer ones 47.6.
    inner = rig.points((rig.inner_upper_lip[0], rig.inner_upper_lip[-1]))
    gap = rig.points([rig.inner_upper_lip[5], rig.inner_lower_lip[5]])
    lip_y = float(gap[:, 1].mean())
    return HaarRig(
        image_width=rig.image_width,
        image_height=rig.image_height,
        face=rig.face,
        left_eye=eyes[0],
        right_eye=eyes[1],
        mouth_x=float(corners[:, 0].mean()),
        lip_y=lip_y,
        mouth_width=float(np.hypot(*(inner[1] - inner[0]))),
        lip_curve_px=float(lip_y - corners[:, 1].mean()),
        chin_y=float(rig.points(CHIN)[1]),
        teeth_visible=rig.teeth_at_rest,
        eyes_from="mesh",
        mouth_from="mesh",
    )


AnyRig = MeshRig | HaarRig


def load_rig(text: str | dict[str, Any]) -> AnyRig:
    """A stored rig (rig.json text or the row's dict) of either version."""
    if isinstance(text, dict):
        text = json.dumps(text)
    version = json.loads(text).get("version")
    if version == RIG_VERSION:
        return MeshRig.from_json(text)
    if version == HAAR_RIG_VERSION:
        return HaarRig.from_json(text)
    raise ValueError(f"rig.json version {version!r} is not one this server reads")
