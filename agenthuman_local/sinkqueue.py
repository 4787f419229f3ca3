"""The one bounded, drop-oldest frame queue behind every output that does I/O.

Imports nothing from the package, so both `sessions.sinks` and `transports.sinks` use it.
`publish` never waits: when the queue is full the oldest frame is dropped and counted in
`dropped`; one named task drains the queue through the subclass's `async _write(frame)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class Indexed(Protocol):
    @property
    def frame_index(self) -> int: ...


F = TypeVar("F", bound=Indexed)


class QueuedSink(Generic[F]):
    """Base for outputs that do I/O: a bounded queue drained by one task named `sink:{name}`.

    Subclasses implement `async _write(frame)`; a write that raises is logged and skipped.
    `aclose` is idempotent: it drops what is queued and ends the task.
    """

    def __init__(self, name: str, max_frames: int = 8) -> None:
        self.name = name
        self.dropped = 0
        self._queue: deque[F] = deque()
        self._max_frames = max_frames
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, frame: F) -> None:
        if self._closed:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"sink:{self.name}")
        if len(self._queue) >= self._max_frames:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(frame)
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                frame = self._queue.popleft()
                try:
                    await self._write(frame)
                except Exception:  # one bad write must not end the output's task
                    log.exception("sink %s failed to write frame %d", self.name, frame.frame_index)

    async def _write(self, frame: F) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
