"""The engine's cleanup context: one `Engine` per app at `app[keys.engine_key]`, warmed up in
the background (SPEC §1).

The Engine is built at start-up (importing the engine, and so torch, on a worker thread: the
loop stays free); an engine that cannot even be built stops start-up with its error. Its
warm-up then runs in a named task while the server already answers: until it is done
`EngineStatus.ready` is False, so start answers `try_again` and era [C] create
`503 ENGINE_LOADING`. A warm-up that fails leaves `ready` False for good and records why in
`EngineStatus.error` (shown by `/healthz`): the server stays up and says what is wrong.
`engine.preload: false` skips the warm-up (tests): ready at once, renderers paint on first use.

This module imports torch only inside that worker thread, so the API layer may import it.
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


def _default_engine(settings: Settings) -> Engine:
    from agenthuman_local.engine.engine import Engine

    return Engine.from_settings(settings)


def loading_error(status: EngineStatus) -> EngineLoading:
    """503 ENGINE_LOADING, saying why when the engine failed to load."""
    if status.error is None:
        return EngineLoading()
    return EngineLoading(
        f"The avatar engine failed to load ({status.error})",
        suggestion="See the server log; restart the server once the cause is fixed.",
    )


async def _load(engine: Engine, status: EngineStatus) -> None:
    try:
        await engine.load()
    except Exception as exc:  # the server stays up and reports it; see the module docstring
        log.exception("the avatar engine failed to load")
        status.error = f"{type(exc).__name__}: {exc}"
        return
    status.ready = True
    log.info("avatar engine ready")


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    status = app[keys.engine_status_key]
    factory = app.get(engine_factory_key, _default_engine)
    engine = await asyncio.to_thread(factory, settings)
    app[keys.engine_key] = engine
    app[keys.preview_cache_key] = {}
    status.error = None
    if not settings.engine.preload:
        status.ready = True
        yield
        return
    status.ready = False
    task = asyncio.create_task(_load(engine, status), name="engine:load")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
