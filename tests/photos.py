"""The real photographs the photo-avatar tests use, their transforms, image encoding for upload
bodies, a photo renderer prepared from one as an upload would be, and a pose and a frame's
luminance as the photo tests write them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer, open_photo_renderer


def encode(rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    """RGB array → image file bytes (`ext` picks the format)."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    """matplotlib's sample portrait (600×512, closed mouth), a test dependency's data file."""
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rolled(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """The photo rolled by `degrees` about a point a little above its middle (the face)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h * 0.4), degrees, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


SIZE = FrameSize(960, 720)


def renderer(rgb: np.ndarray, path: Path, size: FrameSize = SIZE) -> PhotoRenderer:
    """Upload `rgb` into the avatar folder `path` and open its photo renderer."""
    save_avatar(prepare_face(encode(rgb)), path)
    r = open_photo_renderer(path, size)
    assert isinstance(r, PhotoRenderer)
    return r


def params(**values: float) -> torch.Tensor:
    """A one-frame pose [1, N_PARAMS]: `params(jaw=1.0, blink=0.5)`."""
    p = torch.zeros(1, N_PARAMS)
    for name, value in values.items():
        p[0, P[name.upper()]] = value
    return p


def luminance(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 → luminance 0…1."""
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
