"""The process's one `Engine`, built and warmed up in the background so the server listens at
once (SPEC §1: `/healthz` within a second of `python run.py`); `app.engine_ctx` opens it.

An `EngineSlot` (`app[keys.engine_key]`) is filled by `load_engine` once the Engine is built:
building imports torch (about 2 s), which runs on a worker thread after aiohttp listens, and sets
the process-wide torch and OpenCV thread counts. Code that needs the engine awaits `slot.get()`
(sessions, which cannot start before `ready` anyway); blocking code on a worker thread may call
`slot.wait()`. Once built, the verified plug-ins' avatars are written to the store.

`EngineStatus.ready` stays False until the engine is built and warmed, so start answers
`try_again` and era [C] create `503 ENGINE_LOADING`. A build or warm-up that fails leaves
`ready` False for good and records why in `EngineStatus.error` (shown by `/healthz`): the server
stays up and says what is wrong. `engine.preload: false` skips the warm-up (tests): ready at
once, and the few callers that come before the build wait for it.

torch is imported only on that worker thread, and nothing here imports aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from agenthuman_local.avatars import is_plugin_avatar, plugin_avatar

if TYPE_CHECKING:
    from agenthuman_local.config import Settings
    from agenthuman_local.engine.engine import Engine
    from agenthuman_local.sessions.manager import EngineStatus
    from agenthuman_local.store import Store

log = logging.getLogger(__name__)

EngineFactory = Callable[["Settings"], "Engine"]
# Set before the app starts to build another engine (tests: one whose load fails or waits).
# Called on a worker thread.
# Renders many small tensor ops per frame: more intra-op threads only add hand-off cost and
# fight the other sessions' render threads for the cores (1.4 ms → 40 ms a frame measured with
# 2 threads under load). torch's setting is process-wide, so once is enough.
TORCH_THREADS = 1
# OpenCV (viewer JPEG, recording colour conversion, photo warps) is called from one thread per
# encoder or renderer, already one per core's worth of work: its own pool only spun in
# sched_yield between calls (0.4 ms of CPU per viewer frame at 1280x720, issue 13).
OPENCV_THREADS = 1
# How long a preview request waits for the engine to be built before it fails.
PREVIEW_WAIT_S = 60.0


class EngineUnavailable(RuntimeError):
    """The engine could not be built; `EngineStatus.error` says why."""


class EngineSlot:
    """Where the process's Engine appears once built. Loop-side `get()`, thread-side `wait()`."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def engine(self) -> Engine | None:
        """The engine, or None while it is being built (or if building failed)."""
        return self._engine

    def fill(self, engine: Engine | None, error: BaseException | None = None) -> None:
        """Called on the loop by the build task; later calls change nothing."""
        if self._done.is_set():
            return
        self._engine, self._error = engine, error
        self._done.set()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _result(self) -> Engine:
        if self._engine is None:
            raise EngineUnavailable(f"the avatar engine could not be built: {self._error}")
        return self._engine

    async def get(self) -> Engine:
        if not self._done.is_set():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self._result()

    def wait(self, timeout_s: float | None = None) -> Engine:
        """Blocking: only on a worker thread."""
        if not self._done.wait(timeout_s):
            raise EngineUnavailable("the avatar engine is still being built")
        return self._result()

    def render_preview(self, avatar_id: str) -> bytes:
        """The engine's preview PNG once it exists. Blocking: only on a worker thread."""
        return self.wait(PREVIEW_WAIT_S).render_preview(avatar_id)


def default_engine(settings: Settings) -> Engine:
    from agenthuman_local.engine.engine import Engine

    return Engine.from_settings(settings)


def _build(factory: EngineFactory, settings: Settings) -> Engine:
    engine = factory(settings)
    # The torch the engine renders with (imported by it here, on this worker thread).
    from agenthuman_local.engine import engine as engine_module

    engine_module.torch.set_num_threads(TORCH_THREADS)
    from agenthuman_local.engine.cache import BUDGET

    if settings is not None:
        BUDGET.set_limit_mb(settings.engine.cache_mb)  # one budget for every renderer's caches
    import cv2  # process-wide too; this thread is off the loop, so the import costs nothing

    cv2.setNumThreads(OPENCV_THREADS)
    return engine


async def _sync_plugin_avatars(store: Store, engine: Engine) -> None:
    """One public avatar per verified plug-in; those of plug-ins gone or broken are removed."""
    plugins = getattr(engine, "plugins", {})
    if plugins:
        await store.sync_shipped_avatars(
            plugin_avatar(avatar_id, name) for avatar_id, (_, name) in plugins.items()
        )
    public, _ = await store.list_avatars("")
    # Only rows that must go are written: with no plug-ins start-up writes nothing here.
    for avatar in public:
        if is_plugin_avatar(avatar) and avatar.avatar_id not in plugins:
            await store.delete_avatar(avatar.avatar_id)


async def load_engine(
    slot: EngineSlot,
    status: EngineStatus,
    factory: EngineFactory,
    settings: Settings,
    store: Store | None = None,
) -> None:
    try:
        engine = await asyncio.to_thread(_build, factory, settings)
    except asyncio.CancelledError as exc:  # shut down while building: no one waits forever
        slot.fill(None, exc)
        raise
    except Exception as exc:  # the server stays up and reports it; see the module docstring
        log.exception("the avatar engine could not be built")
        status.ready = False
        status.error = f"{type(exc).__name__}: {exc}"
        slot.fill(None, exc)
        return
    if store is not None:
        try:
            await _sync_plugin_avatars(store, engine)
        except Exception:  # the built-in avatars still work; the log says why plug-ins do not
            log.exception("could not register the plug-in avatars")
    slot.fill(engine)
    if not settings.engine.preload:
        return
    try:
        await engine.load()
    except Exception as exc:
        log.exception("the avatar engine failed to load")
        status.error = f"{type(exc).__name__}: {exc}"
        return
    status.ready = True
    log.info("avatar engine ready")
