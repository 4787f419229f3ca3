"""The viewer's pictures as key frames and patches (transports.patches): what a page composes
from them is the session's frames, and a page that lost its way gets a key frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agenthuman_local.protocol import KIND_VIDEO_JPEG, KIND_VIDEO_JPEG_PATCH, unpack_media
from agenthuman_local.transports.patches import PATCH_HEADER, PatchEncoder, changed_box
from agenthuman_local.transports.viewer import ViewerHub

H, W, SR = 96, 160, 16_000


def scene(n: int, width: int = W) -> np.ndarray:
    """A still background with a small square that moves a few pixels a frame."""
    y, x = np.mgrid[0:H, 0:width]
    rgb = np.stack([x % 256, (y * 2) % 256, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    top, left = 20 + n % 7, 30 + 3 * n
    rgb[top : top + 12, left : left + 12] = (250, 30, 30)
    return rgb


def decode(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)


class Page:
    """What viewer.js does with the pictures: key frames replace the canvas, a patch is drawn
    over it only when it names the picture the canvas holds."""

    def __init__(self) -> None:
        self.canvas: np.ndarray | None = None
        self.composed = -1
        self.skipped = 0

    def apply(self, frame_index: int, kind: int, payload: bytes) -> None:
        if kind == KIND_VIDEO_JPEG:
            self.canvas, self.composed = decode(payload), frame_index
            return
        assert kind == KIND_VIDEO_JPEG_PATCH
        base, x, y = PATCH_HEADER.unpack_from(payload)
        if base != self.composed or self.canvas is None:
            self.skipped += 1
            return
        jpeg = payload[PATCH_HEADER.size :]
        if jpeg:
            part = decode(jpeg)
            self.canvas[y : y + part.shape[0], x : x + part.shape[1]] = part
        self.composed = frame_index


@pytest.mark.parametrize("width", [W, 162, 166])  # rows of 8·k, 4·k+2·… and odd-word bytes
def test_the_changed_box_holds_every_change_on_the_block_grid(width: int) -> None:
    a = scene(0, width)
    assert changed_box(a, a.copy()) is None
    b = a.copy()
    b[37, width - 1] = (0, 0, 0)  # the last pixel of a row
    b[50, 17] = (1, 2, 3)
    x0, y0, x1, y1 = changed_box(a, b)
    assert (x0, y0) == (16, 32) and (x1, y1) == (width, 64)
    outside = np.ones((H, width), bool)
    outside[y0:y1, x0:x1] = False
    assert (a[outside] == b[outside]).all()
    assert all(v % 16 == 0 for v in (x0, y0)) and (x1 % 16 == 0 or x1 == width)


def test_a_page_composes_the_frames_from_a_key_and_patches() -> None:
    enc = PatchEncoder(quality=90)
    page = Page()
    sizes = []
    for n in range(20):
        frame = scene(n)
        kind, payload = enc.encode(n, frame)
        assert kind == (KIND_VIDEO_JPEG if n == 0 else KIND_VIDEO_JPEG_PATCH)
        sizes.append(len(payload))
        page.apply(n, kind, payload)
        assert page.composed == n
        assert np.abs(page.canvas.astype(int) - frame).mean() < 3, n
    # Only the moving square is sent after the key frame.
    assert max(sizes[1:]) < sizes[0] / 2
    assert (enc.keys, enc.patches) == (1, 19)


def test_an_unchanged_picture_is_an_empty_patch() -> None:
    enc = PatchEncoder()
    frame = scene(0)
    enc.encode(0, frame)
    kind, payload = enc.encode(1, frame.copy())
    assert kind == KIND_VIDEO_JPEG_PATCH and payload == PATCH_HEADER.pack(0, 0, 0)


def test_key_frames_come_on_request_periodically_and_for_big_changes() -> None:
    enc = PatchEncoder(key_every=5)
    kinds = [enc.encode(n, scene(n))[0] for n in range(11)]
    assert kinds == [KIND_VIDEO_JPEG] + [KIND_VIDEO_JPEG_PATCH] * 4 + [KIND_VIDEO_JPEG] + [
        KIND_VIDEO_JPEG_PATCH
    ] * 4 + [KIND_VIDEO_JPEG]
    enc = PatchEncoder()
    enc.encode(0, scene(0))
    assert enc.encode(1, scene(1), key=True)[0] == KIND_VIDEO_JPEG
    assert enc.encode(2, 255 - scene(2))[0] == KIND_VIDEO_JPEG  # everything changed
    assert enc.encode(3, scene(3)[: H // 2])[0] == KIND_VIDEO_JPEG  # the size changed


async def test_a_viewer_that_joins_or_drops_a_picture_gets_a_key_frame() -> None:
    hub = ViewerHub(max_messages=4)
    first = hub.connect("s")
    pages = {id(first): Page()}

    async def publish(n: int) -> None:
        await hub.publish_frame("s", n, n * 40, scene(n), b"", sample_rate_hz=SR)

    def read(viewer) -> list[int]:
        kinds = []
        while viewer.pending:
            message = viewer._queue.popleft()
            if isinstance(message, bytes):
                kind, _, index, payload = unpack_media(message)
                pages.setdefault(id(viewer), Page()).apply(index, kind, payload)
                kinds.append(kind)
        return kinds

    await publish(0)
    await publish(1)
    assert read(first) == [KIND_VIDEO_JPEG, KIND_VIDEO_JPEG_PATCH]
    second = hub.connect("s")
    await publish(2)
    # Both pages get the key frame the new one needs (one encode serves every page).
    assert read(first) == [KIND_VIDEO_JPEG] and read(second) == [KIND_VIDEO_JPEG]
    for n in range(3, 10):  # the second page does not read: its queue drops pictures
        await publish(n)
        # A page that does not keep up never makes the others' pictures key frames.
        assert read(first) == [KIND_VIDEO_JPEG_PATCH]
    assert second.dropped > 0 and second.needs_key
    stale = read(second)  # it reads again: what is left cannot be drawn on what it has
    assert stale and pages[id(second)].skipped == len(stale)
    await publish(10)
    assert read(second) == [KIND_VIDEO_JPEG] and read(first) == [KIND_VIDEO_JPEG]
    for page in pages.values():
        assert page.composed == 10
        assert np.abs(page.canvas.astype(int) - scene(10)).mean() < 3
    assert hub.key_frames == 3
    await hub.aclose()
