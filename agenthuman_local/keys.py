"""Every typed key of the app and of a request: the server's shared state, without globals.

Handlers reach app-wide objects as `request.app[keys.store_key]`; the per-request account as
`request[keys.account_key]`. Types are imported for checking only, so this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable
    from typing import Any

    from agenthuman_local.api.auth import RateLimiter
    from agenthuman_local.api.ws import ShutdownSignal
    from agenthuman_local.clock import Clock
    from agenthuman_local.config import Settings
    from agenthuman_local.devices import DevicePool
    from agenthuman_local.engine.slot import EngineFactory, EngineSlot
    from agenthuman_local.engine.worker import RenderPool
    from agenthuman_local.metrics import Metrics
    from agenthuman_local.rerig import RerigReport
    from agenthuman_local.sessions.live import (
        LiveSession,
        OutputFactory,
        RendererFactory,
        SharedRenderers,
    )
    from agenthuman_local.sessions.manager import (
        EngineStatus,
        LiveFactory,
        SessionManager,
    )
    from agenthuman_local.store import Store
    from agenthuman_local.transports.daily import DailyLib
    from agenthuman_local.transports.daily_rooms import DailyRooms
    from agenthuman_local.transports.viewer import ViewerHub


@dataclass(frozen=True)
class FirstKey:
    """What start-up learnt about the API key file, for the banner (SPEC §2)."""

    path: Path
    key: str | None  # None when the file was removed after first start
    created: bool  # made at this start


settings_key: web.AppKey[Settings] = web.AppKey("settings")
store_key: web.AppKey[Store] = web.AppKey("store")
devices_key: web.AppKey[DevicePool] = web.AppKey("devices")
engine_status_key: web.AppKey[EngineStatus] = web.AppKey("engine_status")
manager_key: web.AppKey[SessionManager[LiveSession]] = web.AppKey("manager")
rate_limiter_key: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
# Ids that resolve to the default avatar (the clients' defaults and AGENTHUMAN_AVATAR).
avatar_aliases_key: web.AppKey[frozenset[str]] = web.AppKey("avatar_aliases")
first_key_key: web.AppKey[FirstKey] = web.AppKey("first_key")
# What the manager makes of each session it starts (app.live_ctx sets it; a test's context,
# which runs before the session manager's, may replace it).
live_factory_key: web.AppKey[LiveFactory[LiveSession]] = web.AppKey("live_factory")
# Daily per session (app.daily_ctx): the manager's room hooks and the Daily output.
rooms_key: web.AppKey[DailyRooms] = web.AppKey("rooms")
# The one Engine of the process, filled in the background after the server listens (await
# `app[engine_key].get()`; see engine/slot.py and EngineStatus),
# and the shipped avatars' preview PNGs by id, rendered once.
engine_key: web.AppKey[EngineSlot] = web.AppKey("engine")
preview_cache_key: web.AppKey[dict[str, bytes]] = web.AppKey("preview_cache")

# The render workers of the process and the renderers the live sessions share (app.live_ctx).
render_pool_key: web.AppKey[RenderPool] = web.AppKey("render_pool")
renderers_key: web.AppKey[SharedRenderers] = web.AppKey("shared_renderers")
# The outputs every live session gets, in order (recorder, viewer, metrics, Daily), listed by
# app.live_ctx; read when a session starts, so a test's context may replace the tuple.
outputs_key: web.AppKey[tuple[OutputFactory, ...]] = web.AppKey("session_outputs")
# The viewer hub the runners publish into, and session id -> its viewer token (api/viewer.py).
viewer_hub_key: web.AppKey[ViewerHub] = web.AppKey("viewer_hub")
# Uploads (decode, detect, rig) running at once are bounded by `upload.max_concurrent`.
upload_slots_key: web.AppKey[asyncio.Semaphore] = web.AppKey("upload_slots")
# The data folder's viewer secret: viewer tokens are HMACs of session ids under it (ids.py).
viewer_secret_key: web.AppKey[bytes] = web.AppKey("viewer_secret")
viewer_tokens_key: web.AppKey[Callable[[str], Awaitable[str | None]]] = web.AppKey("viewer_tokens")
# What `/metrics` serves.
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics")

# Optional overrides, set before the app starts (tests set them from a cleanup context):
# the renderer of each session, read when a session starts, and the clock its pacer and the
# manager's session timers run on;
renderer_factory_key: web.AppKey[RendererFactory] = web.AppKey("renderer_factory")
clock_key: web.AppKey[Clock] = web.AppKey("session_clock")
# the engine to build (one whose load fails or waits), called on a worker thread;
engine_factory_key: web.AppKey[EngineFactory] = web.AppKey("engine_factory")
# another daily-python (tests/fakes_daily.py), and keyword arguments for each DailyTransport.
daily_lib_key: web.AppKey[DailyLib] = web.AppKey("daily_lib")
daily_transport_options_key: web.AppKey[dict[str, Any]] = web.AppKey("daily_transport_options")

# The start-up re-rig of older photo avatars (app.rerig_ctx), so that tests (and shutdown) can
# wait for it.
rerig_task_key: web.AppKey[asyncio.Task[RerigReport | None]] = web.AppKey("rerig_task")

# Set by on_shutdown; session sockets still waiting for session.init wait on it too (api/ws.py).
ws_shutdown_key: web.AppKey[ShutdownSignal] = web.AppKey("ws_shutdown_signal")

# The account of the request's API key, set by the auth middleware on /v1 routes that need one.
account_key: web.RequestKey[str] = web.RequestKey("account")
# X-RateLimit-* headers for this request's response, whether it succeeds or fails.
rate_headers_key: web.RequestKey[dict[str, str]] = web.RequestKey("rate_headers")
# True on a session socket's request while it waits for session.init: the connection cap may
# close it to make room like an idle connection (api/server.py).
waiting_for_init_key: web.RequestKey[bool] = web.RequestKey("waiting_for_init")
