"""The photo avatar's rig: where the face, lips, eyes and jaw are in one photograph.

Found once per avatar at upload and stored as JSON beside the image (rig.json) and in the
avatar's row, so rendering never runs a detector. Coordinates are pixels of the stored image
(`image.jpg`), floats, origin top-left.

This is rig version 2, `MeshRig` (SPEC §9): MediaPipe's 468-point face mesh (`engine.facemesh`),
a triangulation over it and the rig's crop border, lip / eye / jaw contours as mesh index tuples,
and whether teeth show and the lips are apart at rest. Pixel i spans [i, i + 1) (MediaPipe's
convention). Version 1 (Haar cascades, until 2026-12) lives in `engine.rig_haar`, which also
loads a stored rig of either version.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from agenthuman_local.engine.facemesh import FaceMesh

RIG_VERSION = 2  # MeshRig


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    def scaled(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        return Box(self.x * scale + dx, self.y * scale + dy, self.w * scale, self.h * scale)


# MediaPipe canonical face mesh indices (image-left to image-right in an upright photo).
OUTER_UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
INNER_UPPER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# Per eye (image-left eye, then image-right eye): upper lid, lower lid, corner to corner.
EYE_LIDS = (
    (
        (33, 246, 161, 160, 159, 158, 157, 173, 133),
        (33, 7, 163, 144, 145, 153, 154, 155, 133),
    ),
    (
        (362, 398, 384, 385, 386, 387, 388, 466, 263),
        (362, 382, 381, 380, 374, 373, 390, 249, 263),
    ),
)
JAW_LINE: tuple[int, ...] = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152) + (
    377,
    400,
    378,
    379,
    365,
    397,
    288,
    361,
    323,
    454,
)
FACE_OVAL: tuple[int, ...] = (
    (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378)
    + (400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21)
    + (54, 103, 67, 109)
)
CHEEKS = (234, 454)  # face width: cheek to cheek
FOREHEAD, CHIN = 10, 152  # face height
NOSE_TIP, UNDER_NOSE = 4, 164
MOUTH_CORNERS = (61, 291)
UPPER_LIP_CENTRE, LOWER_LIP_CENTRE = 0, 17  # outer
INNER_GAP_PAIRS = ((82, 87), (13, 14), (312, 317))
LIPS_APART_FACE_H = 0.02  # inner gap at rest (of face height) above which the lips are apart
TEETH_SHARE = 0.3  # share of the inner-mouth polygon that must look like teeth
# A photo without colour (skin saturation under GREY_SKIN_SAT) shows teeth when the brighter
# fifth of the inner mouth is this much brighter than the skin: lips are no brighter than it.
GREY_SKIN_SAT, GREY_TEETH_BRIGHTER = 0.05, 1.15
# The rig's crop around the face oval, in face widths / heights beyond its box.
_CROP_SIDE_FW, _CROP_TOP_FH, _CROP_BOTTOM_FH = 0.3, 0.25, 0.45
_BORDER_STEPS = 8  # border points per crop side


@dataclass(frozen=True, eq=False)
class MeshRig:
    """A photo's face from MediaPipe's face mesh (rig version 2).

    `landmarks` (468, 3) float32 image pixels (z: depth in the same scale). `border` (B, 2)
    points on the edge of `crop`, the region a renderer may warp; `vertices` = the landmarks'
    x, y followed by `border`, and `triangles` (T, 3) index `vertices` (a Delaunay
    triangulation). The contours are mesh index tuples ordered corner to corner, image left to
    right; `eye_lids[e] = (upper, lower)` for e = 0 the eye on the image's left. `irises` (2, 5, 2)
    are the iris model's points (centre first), same eye order.
    """

    image_width: int
    image_height: int
    landmarks: np.ndarray
    irises: np.ndarray
    crop: Box
    border: np.ndarray
    triangles: np.ndarray
    outer_upper_lip: tuple[int, ...]
    outer_lower_lip: tuple[int, ...]
    inner_upper_lip: tuple[int, ...]
    inner_lower_lip: tuple[int, ...]
    eye_lids: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    jaw_line: tuple[int, ...]
    teeth_at_rest: bool
    lips_apart_at_rest: bool
    score: float = 1.0
    version: int = RIG_VERSION

    def points(self, indices: tuple[int, ...] | list[int] | int) -> np.ndarray:
        """Landmark x, y (N, 2) (or (2,) for one index) in image pixels."""
        return (
            self.landmarks[indices, :2]
            if isinstance(indices, int)
            else self.landmarks[list(indices), :2]
        )

    @property
    def vertices(self) -> np.ndarray:
        return np.concatenate([self.landmarks[:, :2], self.border]).astype(np.float32)

    @property
    def face_width(self) -> float:
        a, b = self.points(list(CHEEKS))
        return float(np.hypot(*(b - a)))

    @property
    def face_height(self) -> float:
        return float(np.hypot(*(self.points(CHIN) - self.points(FOREHEAD))))

    @property
    def face(self) -> Box:
        """The face oval's bounding box."""
        pts = self.points(FACE_OVAL)
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        return Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    @property
    def mouth_corners(self) -> np.ndarray:
        """(2, 2) the outer lip contour's corner points (61/291), image-left first."""
        return self.points((self.outer_upper_lip[0], self.outer_upper_lip[-1]))

    @property
    def lip_corners(self) -> np.ndarray:
        """(2, 2) where the lips meet, image-left first: midway between the outer and the inner
        contour's corner points. MediaPipe puts the outer corner (61/291) on the skin just past
        the corner on a smile and the inner one (78/308) inside it on a closed mouth; points
        marked by hand on the astronaut (smiling) and Grace Hopper (closed) lie between them
        (tests/test_rig_photos.py)."""
        outer = self.points((self.outer_upper_lip[0], self.outer_upper_lip[-1]))
        inner = self.points((self.inner_upper_lip[0], self.inner_upper_lip[-1]))
        return (outer + inner) / 2

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.irises[1, 0] - self.irises[0, 0])))

    def scaled(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> MeshRig:
        """The same rig after the image is scaled by `scale` and shifted by (dx, dy) pixels."""
        shift = np.array([dx, dy], np.float32)
        landmarks = self.landmarks * np.float32(scale)
        landmarks[:, :2] += shift
        return dataclasses.replace(
            self,
            image_width=round(self.image_width * scale),
            image_height=round(self.image_height * scale),
            landmarks=landmarks.astype(np.float32),
            irises=(self.irises * scale + shift).astype(np.float32),
            crop=self.crop.scaled(scale, dx, dy),
            border=(self.border * scale + shift).astype(np.float32),
        )

    def to_json(self) -> str:
        raw = {
            "version": self.version,
            "image_width": self.image_width,
            "image_height": self.image_height,
            "score": round(self.score, 4),
            "teeth_at_rest": self.teeth_at_rest,
            "lips_apart_at_rest": self.lips_apart_at_rest,
            "crop": asdict(self.crop),
            "outer_upper_lip": self.outer_upper_lip,
            "outer_lower_lip": self.outer_lower_lip,
            "inner_upper_lip": self.inner_upper_lip,
            "inner_lower_lip": self.inner_lower_lip,
            "eye_lids": self.eye_lids,
            "jaw_line": self.jaw_line,
            "landmarks": np.round(self.landmarks.astype(np.float64), 3).tolist(),
            "irises": np.round(self.irises.astype(np.float64), 3).tolist(),
            "border": np.round(self.border.astype(np.float64), 3).tolist(),
            "triangles": self.triangles.tolist(),
        }
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MeshRig:
        raw = json.loads(text)
        if raw.get("version") != RIG_VERSION:
            raise ValueError(f"rig.json version {raw.get('version')!r}, expected {RIG_VERSION}")
        landmarks = np.asarray(raw["landmarks"], np.float32)
        triangles = np.asarray(raw["triangles"], np.int32)
        border = np.asarray(raw["border"], np.float32).reshape(-1, 2)
        if landmarks.shape != (468, 3) or triangles.ndim != 2 or triangles.shape[1] != 3:
            raise ValueError("rig.json: landmarks must be 468×3 and triangles N×3")
        if triangles.size and (triangles.min() < 0 or triangles.max() >= 468 + len(border)):
            raise ValueError("rig.json: a triangle names a vertex that does not exist")
        return cls(
            image_width=int(raw["image_width"]),
            image_height=int(raw["image_height"]),
            landmarks=landmarks,
            irises=np.asarray(raw["irises"], np.float32).reshape(2, 5, 2),
            crop=Box(**raw["crop"]),
            border=border,
            triangles=triangles,
            outer_upper_lip=tuple(raw["outer_upper_lip"]),
            outer_lower_lip=tuple(raw["outer_lower_lip"]),
            inner_upper_lip=tuple(raw["inner_upper_lip"]),
            inner_lower_lip=tuple(raw["inner_lower_lip"]),
            eye_lids=tuple((tuple(u), tuple(lo)) for u, lo in raw["eye_lids"]),
            jaw_line=tuple(raw["jaw_line"]),
            teeth_at_rest=bool(raw["teeth_at_rest"]),
            lips_apart_at_rest=bool(raw["lips_apart_at_rest"]),
            score=float(raw.get("score", 1.0)),
        )


def _left_to_right(landmarks: np.ndarray, contour: tuple[int, ...]) -> tuple[int, ...]:
    return contour if landmarks[contour[0], 0] <= landmarks[contour[-1], 0] else contour[::-1]


def _crop_box(landmarks: np.ndarray, width: int, height: int) -> Box:
    oval = landmarks[list(FACE_OVAL), :2]
    (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
    fw, fh = x1 - x0, y1 - y0
    left = max(0.0, float(x0 - _CROP_SIDE_FW * fw))
    top = max(0.0, float(y0 - _CROP_TOP_FH * fh))
    right = min(float(width), float(x1 + _CROP_SIDE_FW * fw))
    bottom = min(float(height), float(y1 + _CROP_BOTTOM_FH * fh))
    return Box(left, top, right - left, bottom - top)


def _border_points(crop: Box) -> np.ndarray:
    t = np.linspace(0.0, 1.0, _BORDER_STEPS + 1)[:-1]
    x0, y0, x1, y1 = crop.x, crop.y, crop.x + crop.w, crop.y + crop.h
    sides = [
        np.stack([x0 + t * crop.w, np.full_like(t, y0)], 1),
        np.stack([np.full_like(t, x1), y0 + t * crop.h], 1),
        np.stack([x1 - t * crop.w, np.full_like(t, y1)], 1),
        np.stack([np.full_like(t, x0), y1 - t * crop.h], 1),
    ]
    return np.concatenate(sides).astype(np.float32)


def _triangulate(vertices: np.ndarray) -> np.ndarray:
    from scipy.spatial import Delaunay

    tri = Delaunay(vertices.astype(np.float64))
    return np.asarray(tri.simplices, np.int32)


def _mouth_at_rest(
    rgb: np.ndarray, landmarks: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]
) -> tuple[bool, bool]:
    """(lips apart, teeth showing) at rest, from the inner-lip gap and the pixels inside it."""
    face_h = float(np.hypot(*(landmarks[CHIN, :2] - landmarks[FOREHEAD, :2])))
    gaps = [landmarks[b, 1] - landmarks[a, 1] for a, b in INNER_GAP_PAIRS]
    apart = bool(np.mean(gaps) > LIPS_APART_FACE_H * face_h)
    if not apart:
        return False, False
    polygon = np.concatenate([landmarks[list(upper), :2], landmarks[list(lower[::-1]), :2]])
    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon - 0.5).astype(np.int32)], 1)
    inside = mask.astype(bool)
    # Skin reference: a small patch between nose and upper lip.
    r = max(2, int(0.03 * face_h))
    sx, sy = (int(v) for v in landmarks[UNDER_NOSE, :2])
    skin = rgb[max(0, sy - r) : sy + r, max(0, sx - r) : sx + r]
    if inside.sum() < 4 or skin.size == 0:
        return apart, False
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32) / 255.0
    skin_hsv = cv2.cvtColor(skin, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32) / 255.0
    skin_s, skin_v = np.median(skin_hsv[:, 1]), np.median(skin_hsv[:, 2])
    sat, val = hsv[..., 1][inside], hsv[..., 2][inside]
    if skin_s < GREY_SKIN_SAT:
        # No colour to tell teeth from lips by (a black-and-white photo): only by light.
        return apart, bool(np.percentile(val, 80) > GREY_TEETH_BRIGHTER * skin_v)
    # Teeth: clearly less saturated than the skin and not in deep shadow.
    teeth = (sat < 0.65 * skin_s + 0.02) & (val > 0.55 * skin_v)
    return apart, bool(teeth.mean() > TEETH_SHARE)


def build_rig(rgb: np.ndarray, mesh: FaceMesh) -> MeshRig:
    """The version-2 rig of one face mesh found in the RGB uint8 image `rgb`."""
    h, w = rgb.shape[:2]
    landmarks = np.asarray(mesh.landmarks, np.float32)
    crop = _crop_box(landmarks, w, h)
    border = _border_points(crop)
    triangles = _triangulate(np.concatenate([landmarks[:, :2], border]))
    inner_upper = _left_to_right(landmarks, INNER_UPPER_LIP)
    inner_lower = _left_to_right(landmarks, INNER_LOWER_LIP)
    lids = [(_left_to_right(landmarks, up), _left_to_right(landmarks, lo)) for up, lo in EYE_LIDS]
    irises = np.asarray(mesh.irises, np.float32)
    if landmarks[EYE_LIDS[0][0][0], 0] > landmarks[EYE_LIDS[1][0][0], 0]:
        lids.reverse()  # mesh's eye 0 is on the image's right: keep image-left first
    apart, teeth = _mouth_at_rest(rgb, landmarks, inner_upper, inner_lower)
    return MeshRig(
        image_width=int(w),
        image_height=int(h),
        landmarks=landmarks,
        irises=irises,
        crop=crop,
        border=border,
        triangles=triangles,
        eye_lids=tuple(lids),
        teeth_at_rest=teeth,
        lips_apart_at_rest=apart,
        score=float(mesh.score),
        outer_upper_lip=_left_to_right(landmarks, OUTER_UPPER_LIP),
        outer_lower_lip=_left_to_right(landmarks, OUTER_LOWER_LIP),
        inner_upper_lip=inner_upper,
        inner_lower_lip=inner_lower,
        jaw_line=_left_to_right(landmarks, JAW_LINE),
    )
