"""The engine's cleanup context: one `Engine` per app, built and loaded in the background.

The server listens at once (SPEC §1): importing the engine (torch) happens on a worker thread
and its warm-up after that, so until both are done `EngineStatus.ready` is False — start answers
`try_again` and era [C] create `503 ENGINE_LOADING`. A failure leaves `ready` False for good and
records why in `EngineStatus.error` (shown by `/healthz`): the server stays up and says what is
wrong instead of dying. `engine.preload: false` skips the warm-up (tests): ready at once,
renderers then paint on first use.

Handlers reach the engine with `await running_engine(app)`; this module imports torch only
inside that worker thread, so the API layer may import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.errors import EngineLoading

if TYPE_CHECKING:
    from agenthuman_local.config import Settings
    from agenthuman_local.engine.engine import Engine
    from agenthuman_local.sessions.manager import EngineStatus

log = logging.getLogger(__name__)

EngineFactory = Callable[["Settings"], "Engine"]
# Set before the app starts to build another engine (tests: one whose load fails or waits).
# Called on a worker thread.
engine_factory_key: web.AppKey[EngineFactory] = web.AppKey("engine_factory")
# Resolves to the app's one Engine once it is built.
engine_future_key: web.AppKey[asyncio.Future[Engine]] = web.AppKey("engine_future")


def _default_engine(settings: Settings) -> Engine:
    from agenthuman_local.engine.engine import Engine

    return Engine.from_settings(settings)


async def running_engine(app: web.Application) -> Engine:
    """The app's engine, waiting while it is built; ENGINE_LOADING if that failed."""
    future = app[engine_future_key]
    if future.done() and future.exception() is not None:
        raise loading_error(app[keys.engine_status_key])
    # Shielded: a cancelled request must not cancel the future every other request shares.
    return await asyncio.shield(future)


def loading_error(status: EngineStatus) -> EngineLoading:
    """503 ENGINE_LOADING, saying why when the engine failed to load."""
    if status.error is None:
        return EngineLoading()
    return EngineLoading(
        f"The avatar engine failed to load ({status.error})",
        suggestion="See the server log; restart the server once the cause is fixed.",
    )


async def _build_and_load(
    factory: EngineFactory,
    settings: Settings,
    status: EngineStatus,
    future: asyncio.Future[Engine],
) -> None:
    try:
        engine = await asyncio.to_thread(factory, settings)
        future.set_result(engine)
        if settings.engine.preload:
            await engine.load()
    except Exception as exc:  # the server stays up and reports it; see the module docstring
        log.exception("the avatar engine failed to load")
        status.error = f"{type(exc).__name__}: {exc}"
        status.ready = False
        if not future.done():
            future.set_exception(exc)
            future.exception()  # retrieved: running_engine reports it, asyncio need not
        return
    status.ready = True
    log.info("avatar engine ready")


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    status = app[keys.engine_status_key]
    future: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
    app[engine_future_key] = future
    app[keys.preview_cache_key] = {}
    status.error = None
    status.ready = not settings.engine.preload
    task = asyncio.create_task(
        _build_and_load(app.get(engine_factory_key, _default_engine), settings, status, future),
        name="engine:load",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        future.cancel()
