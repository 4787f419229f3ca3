"""Rotated square regions of interest for the face models (`engine.facemesh`): the square
around a face or an eye, resampled to a model's input size, and the model's points projected
back into the photo.

Coordinates are image pixels with pixel i spanning [i, i + 1); a model's tensor coordinates
span [0, n) the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: centre, side, angle of its x axis (radians)."""

    cx: float
    cy: float
    side: float
    angle: float

    def to_image(self, n: int) -> np.ndarray:
        """The 2×3 affine taking tensor coordinates (n×n, pixel edges) to image coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.side / n
        ex, ey = np.array([c, s]), np.array([-s, c])
        origin = np.array([self.cx, self.cy]) - self.side / 2 * (ex + ey)
        return np.array([[k * c, -k * s, origin[0]], [k * s, k * c, origin[1]]])

    def crop(self, rgb: np.ndarray, n: int) -> np.ndarray:
        """The square resampled to n×n (bilinear; pre-shrunk when much larger than n)."""
        affine = self.to_image(n)
        image = rgb
        shrink = self.side / (n * 1.5)
        if shrink > 1.0:  # avoid aliasing: area-average first, so bilinear sees ≤ 1.5 px/px
            h, w = rgb.shape[:2]
            size = (max(1, round(w / shrink)), max(1, round(h / shrink)))
            image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            affine = affine * np.array([[size[0] / w], [size[1] / h]])
        # Edge coordinates → OpenCV's pixel-centre indices on both sides.
        m = affine.copy()
        m[:, 2] += affine[:, :2] @ np.array([0.5, 0.5]) - 0.5
        return cv2.warpAffine(
            image,
            m,
            (n, n),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )

    def project(self, pts: np.ndarray, n: int) -> np.ndarray:
        """(N, 2 or 3) tensor points → image pixels (z scaled like x)."""
        affine = self.to_image(n)
        out = pts.astype(np.float64).copy()
        out[:, :2] = pts[:, :2] @ affine[:, :2].T + affine[:, 2]
        if pts.shape[1] > 2:
            out[:, 2] = pts[:, 2] * self.side / n
        return out


def roi_from_points(a: np.ndarray, b: np.ndarray, pts: np.ndarray, scale: float) -> Roi:
    """A square rotated so that a→b is its x axis, around the bounding box of `pts` in that
    rotated frame, its side the box's long side × `scale`."""
    angle = math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # image → rotated frame
    local = pts[:, :2] @ rot.T
    lo, hi = local.min(0), local.max(0)
    centre = ((lo + hi) / 2) @ rot  # back to the image
    side = float((hi - lo).max()) * scale
    return Roi(float(centre[0]), float(centre[1]), side, angle)
