"""The real photograph the photo-avatar tests use, and image encoding for upload bodies."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data


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
