"""One render thread per device, shared by every session on it (SPEC §6).

Sessions submit one frame job at a time (face parameters → image), each with the time it is due
on screen. The thread always takes the job due first, together with every other job due within
`batch_window_s` of it — in practice the same tick's frame of each session — so a burst of
frames rendered ahead never delays the frame due next. Jobs that share a renderer are
concatenated into one batch; other renderers run back to back.

A job may carry a deadline (`time.monotonic()` seconds: when its frame is shown). One that can no
longer be rendered by then — now plus the renderer's recent batch time is past it — is skipped
(its future cancelled) instead of rendered late: its session shows the previous image at that
tick either way, and the time goes to the next frame, which can still make its own. So a device
over capacity repeats a share of frames that grows with the load, instead of rendering every
frame a little too late. A job that carries its audio
window (plug-ins, SPEC §9) is rendered with `renderer.render_audio(audio, params)`, which feeds
the model in chunks of its manifest's `batch`. Each job's asyncio future is
resolved through `loop.call_soon_threadsafe`: the event loop never waits on torch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from agenthuman_local.engine.base import AudioRenderer, Renderer
from agenthuman_local.engine.base import WorkerClosed as WorkerClosed
from agenthuman_local.engine.base import WorkerFull as WorkerFull

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderResult:
    image: np.ndarray  # uint8 [H, W, 3]
    render_ms: float  # wall time of the batch this frame was rendered in
    batch_size: int


@dataclass
class _Job:
    renderer: Renderer
    params: np.ndarray
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    audio: np.ndarray | None = None  # float32 [S]: the audio window of an audio-driven renderer
    deadline: float | None = None  # time.monotonic() when the frame shows; None: never skipped
    cancelled: bool = field(default=False)


class RenderJob:
    """A submitted frame: await `future`; `cancel()` skips it if the thread has not started it."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.future = job.future

    def cancel(self) -> None:
        self._job.cancelled = True
        self.future.cancel()


class RenderWorker:
    def __init__(
        self,
        device: str,
        *,
        max_pending: int = 256,
        max_batch: int = 16,
        batch_window_s: float = 0.010,
    ) -> None:
        self.device = device
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self.max_pending = max_pending
        self.batches = 0
        self.frames = 0
        self.skipped = 0  # jobs past hope at their turn (deadline), not rendered
        # Recent wall seconds of a batch, per renderer (id): how long a job taken now will take.
        self._batch_s: dict[int, float] = {}
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"render-worker:{device}", daemon=True
        )
        self._started = False
        self._closed = False
        self._stopping = False
        # Loop side: jobs not yet resolved, and drain() callers waiting for none.
        self._outstanding = 0
        self._drained: list[asyncio.Future[None]] = []

    def submit(
        self,
        renderer: Renderer,
        params: np.ndarray,
        due: float = 0.0,
        audio: np.ndarray | None = None,
        deadline: float | None = None,
    ) -> RenderJob:
        """Queue one frame (`params`: float32 [N_PARAMS]) due at `due` (any monotonic clock the
        caller's sessions share; earlier first); `audio` (float32 [S]) for a renderer with
        `render_audio`; `deadline` (time.monotonic()) for a frame not worth rendering after it.
        Raises WorkerFull / WorkerClosed."""
        if self._closed:
            raise WorkerClosed(f"render worker for {self.device} is closed")
        if not self._started:
            self._started = True
            self._thread.start()
        loop = asyncio.get_running_loop()
        job = _Job(
            renderer,
            np.asarray(params, dtype=np.float32),
            loop.create_future(),
            loop,
            None if audio is None else np.asarray(audio, dtype=np.float32),
            deadline,
        )
        with self._cond:
            if len(self._heap) >= self.max_pending:
                raise WorkerFull(f"render queue for {self.device} is full")
            heapq.heappush(self._heap, (due, next(self._seq), job))
            self._cond.notify()
        self._outstanding += 1
        return RenderJob(job)

    async def drain(self) -> None:
        """Until every job submitted so far has resolved (rendered, failed or skipped)."""
        if self._outstanding == 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained.append(fut)
        await fut

    def _done(self, job: _Job, value: Any = None, exc: BaseException | None = None) -> None:
        """On the loop: settle one job's future and the drain waiters."""
        if not job.future.done():
            if exc is not None:
                job.future.set_exception(exc)
            elif not job.cancelled:
                job.future.set_result(value)
        self._outstanding -= 1
        if self._outstanding == 0:
            waiters, self._drained = self._drained, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _skip(self, job: _Job) -> None:
        """On the loop: a job past its deadline is cancelled, not rendered."""
        job.cancelled = True
        job.future.cancel()
        self._done(job)

    def _hopeless(self, job: _Job, now: float) -> bool:
        """The job cannot be rendered by its deadline: its renderer's recent batch time, from
        now, ends past it."""
        if job.deadline is None:
            return False
        return now + self._batch_s.get(id(job.renderer), 0.0) > job.deadline

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        await asyncio.to_thread(self._thread.join)

    def _take(self) -> list[_Job] | None:
        """The job due first and those due within the window after it; None when stopping."""
        with self._cond:
            while not self._heap and not self._stopping:
                self._cond.wait()
            if self._stopping:
                rest = [job for _, _, job in self._heap]
                self._heap.clear()
                for job in rest:
                    job.loop.call_soon_threadsafe(self._done, job, None, WorkerClosed("closed"))
                return None
            now = time.monotonic()
            batch: list[_Job] = []
            first_due = self._heap[0][0]
            while (
                self._heap
                and len(batch) < self.max_batch
                and (not batch or self._heap[0][0] <= first_due + self.batch_window_s)
            ):
                due, _, job = heapq.heappop(self._heap)
                if not job.cancelled and self._hopeless(job, now):
                    self.skipped += 1
                    job.loop.call_soon_threadsafe(self._skip, job)
                    continue
                if not batch:
                    first_due = due
                batch.append(job)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._render(batch)

    def _render(self, batch: list[_Job]) -> None:
        groups: dict[tuple[int, bool], list[_Job]] = {}
        for job in batch:
            if job.cancelled:
                job.loop.call_soon_threadsafe(self._done, job)
                continue
            groups.setdefault((id(job.renderer), job.audio is None), []).append(job)
        for group in groups.values():
            t0 = time.perf_counter()
            try:
                # Imported here, on the worker thread: importing torch takes seconds and the
                # server must answer /healthz before that (SPEC §12).
                import torch

                params = torch.from_numpy(np.stack([j.params for j in group]))
                renderer = group[0].renderer
                with torch.inference_mode():
                    if group[0].audio is None:
                        out = renderer.render(params)
                    else:  # only an AudioRenderer's jobs carry audio (sessions.schedule)
                        windows = [j.audio for j in group if j.audio is not None]
                        audio = torch.from_numpy(np.stack(windows))
                        out = cast(AudioRenderer, renderer).render_audio(audio, params)
                images = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            except Exception as exc:  # a renderer failure ends only its sessions (SPEC §11)
                log.exception("renderer failed on %s", self.device)
                for j in group:
                    j.loop.call_soon_threadsafe(self._done, j, None, exc)
                continue
            render_s = time.perf_counter() - t0
            render_ms = render_s * 1000.0
            key = id(group[0].renderer)
            if len(self._batch_s) > 256:  # renderers come and go with their sessions
                self._batch_s.clear()
            self._batch_s[key] = 0.7 * self._batch_s.get(key, render_s) + 0.3 * render_s
            self.batches += 1
            self.frames += len(group)
            for i, j in enumerate(group):
                result = RenderResult(images[i], render_ms, len(group))
                j.loop.call_soon_threadsafe(self._done, j, result)


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

    @property
    def workers(self) -> list[RenderWorker]:
        return list(self._workers.values())

    async def aclose(self) -> None:
        self._closed = True
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            await worker.aclose()
