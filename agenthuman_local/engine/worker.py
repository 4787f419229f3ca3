"""One render thread per device, shared by every session on it (SPEC §6).

Sessions submit one frame job at a time (face parameters → image); the thread takes whatever
is queued, concatenates the parameters of jobs that share a renderer into one batch, runs the
other renderers back to back, and resolves each job's asyncio future through
`loop.call_soon_threadsafe`. The event loop never waits on torch: it only awaits futures.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class WorkerFull(Exception):
    """The device's job queue is full; the caller shows its frame late instead of waiting."""


class WorkerClosed(Exception):
    pass


@dataclass(frozen=True)
class RenderResult:
    image: np.ndarray  # uint8 [H, W, 3]
    render_ms: float  # wall time of the batch this frame was rendered in
    batch_size: int


@dataclass
class _Job:
    renderer: Any  # None for a barrier
    params: np.ndarray | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    cancelled: bool = field(default=False)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


_STOP = object()


class RenderJob:
    """A submitted frame: await `future`; `cancel()` skips it if the thread has not started it."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.future = job.future

    def cancel(self) -> None:
        self._job.cancelled = True
        self.future.cancel()


class RenderWorker:
    def __init__(self, device: str, *, max_pending: int = 256, max_batch: int = 16) -> None:
        self.device = device
        self.max_batch = max_batch
        self.batches = 0
        self.frames = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(
            target=self._run, name=f"render-worker:{device}", daemon=True
        )
        self._started = False
        self._closed = False

    def submit(self, renderer: Any, params: np.ndarray) -> RenderJob:
        """Queue one frame (`params`: float32 [N_PARAMS]). Raises WorkerFull / WorkerClosed."""
        return self._put(renderer, np.asarray(params, dtype=np.float32))

    async def drain(self) -> None:
        """Until every job submitted before this call has resolved."""
        await self._put(None, None).future

    def _put(self, renderer: Any, params: np.ndarray | None) -> RenderJob:
        if self._closed:
            raise WorkerClosed(f"render worker for {self.device} is closed")
        if not self._started:
            self._started = True
            self._thread.start()
        loop = asyncio.get_running_loop()
        job = _Job(renderer, params, loop.create_future(), loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise WorkerFull(f"render queue for {self.device} is full") from None
        return RenderJob(job)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        # The queue may be full; a blocking put off the loop always gets the stop marker in.
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._render(batch)
            if stop:
                self._fail_rest()
                return

    def _fail_rest(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job.loop.call_soon_threadsafe(_fail, job.future, WorkerClosed("closed"))

    def _render(self, batch: list[_Job]) -> None:
        # Group by renderer in first-seen order; a barrier resolves after everything before it.
        groups: list[list[_Job]] = []
        index: dict[int, list[_Job]] = {}
        for job in batch:
            if job.cancelled:
                continue
            if job.renderer is None:
                groups.append([job])
                index.clear()  # nothing after a barrier may be rendered before it
                continue
            key = id(job.renderer)
            if key not in index:
                index[key] = []
                groups.append(index[key])
            index[key].append(job)
        for group in groups:
            if group[0].renderer is None:
                group[0].loop.call_soon_threadsafe(_resolve, group[0].future, None)
                continue
            t0 = time.perf_counter()
            try:
                # Imported here, on the worker thread: importing torch takes seconds and the
                # server must answer /healthz before that (SPEC §12).
                import torch

                params = torch.from_numpy(
                    np.stack([j.params for j in group if j.params is not None])
                )
                with torch.inference_mode():
                    out = group[0].renderer.render(params)
                images = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            except Exception as exc:  # a renderer failure ends only its sessions (SPEC §11)
                log.exception("renderer failed on %s", self.device)
                for j in group:
                    j.loop.call_soon_threadsafe(_fail, j.future, exc)
                continue
            render_ms = (time.perf_counter() - t0) * 1000.0
            self.batches += 1
            self.frames += len(group)
            for i, j in enumerate(group):
                j.loop.call_soon_threadsafe(
                    _resolve, j.future, RenderResult(images[i], render_ms, len(group))
                )


class RenderPool:
    """The render workers of a process, one per device, made on first use."""

    def __init__(self) -> None:
        self._workers: dict[str, RenderWorker] = {}
        self._closed = False

    def get(self, device: str) -> RenderWorker:
        if self._closed:
            raise WorkerClosed("render pool is closed")
        worker = self._workers.get(device)
        if worker is None:
            worker = self._workers[device] = RenderWorker(device)
        return worker

    async def aclose(self) -> None:
        self._closed = True
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            await worker.aclose()
