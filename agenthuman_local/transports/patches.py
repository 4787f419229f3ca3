"""The viewer's pictures as JPEG key frames and patches (issue 13: the viewer's JPEG was 18 % of
a session's CPU).

A talking head changes little from one frame to the next: on the procedural avatar the median
frame differs from the one before it in 2 % of its area, the 95th percentile in 13 %. So after a
key frame (a whole JPEG) each picture is sent as a patch: the rectangle that changed since the
last picture sent, aligned to the JPEG's 16-pixel blocks, as a JPEG of its own, drawn by the page
over what it shows. About a quarter of the CPU of a whole frame at 1280×720, with the diff.

A patch names the frame it applies to (`base`); a page that missed that frame (it dropped a
message, or opened late) skips patches until the next key frame. Key frames come when a page
asks (`key=True`: a new page, or one that dropped messages), at least every `key_every`
pictures, when the size changes, and when the change covers most of the frame anyway.

Payload of kind `KIND_VIDEO_JPEG_PATCH`: `base_frame_index u32, x u16, y u16` little-endian,
then the JPEG of the rectangle at (x, y); no JPEG (an empty rest) means nothing changed.
"""

from __future__ import annotations

import struct

import numpy as np

from agenthuman_local.protocol import KIND_VIDEO_JPEG, KIND_VIDEO_JPEG_PATCH
from agenthuman_local.transports.jpeg import encode_jpeg

PATCH_HEADER = struct.Struct("<IHH")
BLOCK = 16  # a JPEG 4:2:0 block: patches start and end on its grid, so their edges match
KEY_EVERY = 25  # pictures: a page that lost its way recovers within a second at 25 fps
MAX_PATCH_SHARE = 0.6  # a patch larger than this share of the frame is sent as a key frame

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


def changed_box(before: np.ndarray, after: np.ndarray) -> Box | None:
    """The smallest rectangle, on the 16-pixel grid, outside which `after` equals `before`
    (uint8 [H, W, 3], same shape); None when they are equal."""
    height, width = after.shape[:2]
    a, b = _words(before), _words(after)
    differs = a != b
    rows = np.flatnonzero(differs.any(axis=1))
    if not rows.size:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(differs[y0:y1].any(axis=0))
    word = a.dtype.itemsize  # bytes per compared word; 3 bytes per pixel
    x0 = int(cols[0]) * word // 3
    x1 = -(-(int(cols[-1]) + 1) * word // 3)
    return (
        x0 // BLOCK * BLOCK,
        y0 // BLOCK * BLOCK,
        min(width, -(-x1 // BLOCK) * BLOCK),
        min(height, -(-y1 // BLOCK) * BLOCK),
    )


def _words(rgb: np.ndarray) -> np.ndarray:
    """The image's rows as the widest unsigned words its row length allows (fast to compare)."""
    rows = np.ascontiguousarray(rgb).reshape(rgb.shape[0], -1)
    for dtype in (np.uint64, np.uint32, np.uint16):
        if rows.shape[1] % np.dtype(dtype).itemsize == 0:
            return rows.view(dtype)
    return rows


class PatchEncoder:
    """One session's pictures for its viewers. Not thread-safe: call it from one thread."""

    def __init__(
        self,
        quality: int = 80,
        *,
        key_every: int = KEY_EVERY,
        max_patch_share: float = MAX_PATCH_SHARE,
    ) -> None:
        self.quality = quality
        self.key_every = key_every
        self.max_patch_share = max_patch_share
        self.keys = 0
        self.patches = 0
        self._last: np.ndarray | None = None  # the last picture sent (frames are never written)
        self._last_index = -1
        self._since_key = 0

    def encode(self, frame_index: int, rgb: np.ndarray, *, key: bool = False) -> tuple[int, bytes]:
        """(kind, payload) for this picture: a whole JPEG, or a patch over the last one sent."""
        last, base = self._last, self._last_index
        self._last, self._last_index = rgb, frame_index
        if key or last is None or last.shape != rgb.shape or self._since_key + 1 >= self.key_every:
            return self._key(rgb)
        box = changed_box(last, rgb)
        if box is None:
            self._since_key += 1
            self.patches += 1
            return KIND_VIDEO_JPEG_PATCH, PATCH_HEADER.pack(base, 0, 0)
        x0, y0, x1, y1 = box
        if (x1 - x0) * (y1 - y0) > self.max_patch_share * rgb.shape[0] * rgb.shape[1]:
            return self._key(rgb)
        self._since_key += 1
        self.patches += 1
        jpeg = encode_jpeg(rgb[y0:y1, x0:x1], self.quality)
        return KIND_VIDEO_JPEG_PATCH, PATCH_HEADER.pack(base, x0, y0) + jpeg

    def _key(self, rgb: np.ndarray) -> tuple[int, bytes]:
        self._since_key = 0
        self.keys += 1
        return KIND_VIDEO_JPEG, encode_jpeg(rgb, self.quality)
