"""The one JPEG encoder of every output (the socket's `video: jpeg`, the viewer)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from agenthuman_local.transports.base import demote_thread

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """RGB uint8 HxWx3 → JPEG bytes (OpenCV; about 2 ms at 720p, GIL released).

    cv2 is imported here, on the encoding thread, not at module import: importing it
    costs ~0.25 s of server start-up, and only a session someone watches needs it.
    """
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encoder_pool() -> ThreadPoolExecutor:
    """The process's JPEG threads for the socket outputs: two, each `demote_thread`-ed, so
    encoding never competes on equal terms with rendering (and never uses the loop's default
    executor, which the store and the API share)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="socket-jpeg", initializer=demote_thread
            )
        return _pool


async def encode_jpeg_async(rgb: np.ndarray, quality: int = 80) -> bytes:
    """`encode_jpeg` on `encoder_pool()`; the loop never waits on it."""
    return await asyncio.get_running_loop().run_in_executor(
        encoder_pool(), encode_jpeg, rgb, quality
    )
