"""create_app: the composition root, the one place that opens app-wide resources and names
concrete classes from every layer. Builds the aiohttp app from Settings and nothing global.

App-wide resources are cleanup contexts, all defined here, opened in this order and closed in
reverse (every AppKey is in `keys.py`):

1. `store_ctx`    open + migrate the database, write the shipped avatars, make the first key;
   `rerig_ctx`    re-rig older photo avatars in the background (`rerig.py`, SPEC §9);
2. `devices_ctx`  list the devices (CUDA probing runs on a thread after the server listens);
   `outputs_ctx`  the viewer hub and the metrics (with the viewer-token lookup);
   `daily_ctx`    Daily rooms per session (REST client, the manager's room hooks);
   `live_ctx`     the render workers, the shared renderers, the outputs every session gets
                  (`session_outputs`: recording, viewer, metrics, Daily) and the manager's
                  live-session factory, which hands each `LiveSession` those output factories;
3. `engine_ctx`   the one Engine, loaded in the background (`engine/slot.py`; flips
                  `app[keys.engine_status_key].ready`); then the `contexts` passed to
                  `create_app` (tests), which may set overrides or flip `ready` themselves;
4. `sessions_ctx` the SessionManager: ends sessions a dead process left started
   (`server_restart`) on the way in, and every live session (`server_shutdown`) on the way out,
   so sessions stop before the engine and the store close.

Shutdown starts earlier, in `end_live_sessions` (`on_shutdown`, which aiohttp runs before it
waits for open handlers): session sockets that never sent `session.init` close 1001, every live
session ends `server_shutdown` — its socket gets `ended` and 4009, its recording is finalised —
and every viewer socket closes, so the handlers return at once and the wait for them is short.
The cleanup contexts then find nothing live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path

from aiohttp import web

from agenthuman_local import ids, keys
from agenthuman_local.api.auth import RateLimiter, auth_middleware
from agenthuman_local.api.middleware import error_middleware
from agenthuman_local.api.routes import setup_routes
from agenthuman_local.api.server import handler_args
from agenthuman_local.api.ws import ShutdownSignal
from agenthuman_local.avatars import SHIPPED_AVATARS, default_aliases
from agenthuman_local.config import DevicesSettings, Settings
from agenthuman_local.devices import DevicePool, probe_devices
from agenthuman_local.engine.base import FrameDriver, Renderer
from agenthuman_local.engine.slot import EngineSlot, default_engine, load_engine
from agenthuman_local.engine.worker import RenderPool
from agenthuman_local.keyfiles import read_key_file, read_or_make_secret, write_key_file
from agenthuman_local.metrics import Metrics
from agenthuman_local.paths import (
    api_key_path,
    avatar_dir,
    db_path,
    make_private,
    stale_staging_dirs,
    timeline_path,
    viewer_secret_path,
)
from agenthuman_local.records import Session
from agenthuman_local.rerig import rerig_in_background
from agenthuman_local.sessions.live import (
    LiveSession,
    MediaSpec,
    OutputFactory,
    SharedRenderers,
    frame_size,
)
from agenthuman_local.sessions.manager import EngineStatus, SessionManager
from agenthuman_local.sessions.state import EndReason
from agenthuman_local.sessions.timeline import backfill_stats
from agenthuman_local.store import Store
from agenthuman_local.transports.daily_rest import DailyRestClient
from agenthuman_local.transports.daily_rooms import DailyRooms
from agenthuman_local.transports.local import metrics_output, recording_output, viewer_output
from agenthuman_local.transports.viewer import ViewerHub

log = logging.getLogger(__name__)

API_KEY_ENV = "AGENTHUMAN_API_KEY"
DEFAULT_ACCOUNT = "default"

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


async def ensure_first_key(store: Store, path: Path, env_key: str | None) -> keys.FirstKey:
    """First start (no key in the database): one account, one key, saved to `path` (SPEC §2)."""
    if not await store.has_api_keys():
        key = (env_key or "").strip() or ids.new_api_key()
        account_id = await store.ensure_account(DEFAULT_ACCOUNT)
        await store.add_api_key(account_id, key)
        await asyncio.to_thread(write_key_file, path, key)
        return keys.FirstKey(path=path, key=key, created=True)
    saved = await asyncio.to_thread(read_key_file, path)
    return keys.FirstKey(path=path, key=saved, created=False)


async def store_ctx(app: web.Application, *, env_key: str | None) -> AsyncIterator[None]:
    data_dir = app[keys.settings_key].data_dir
    tightened = await asyncio.to_thread(make_private, data_dir)
    if tightened:
        log.warning("data folder %s: made %d files and folders private", data_dir, tightened)
    # Nothing uploads yet: a staging folder now is a killed process's half-written upload.
    for stale in await asyncio.to_thread(stale_staging_dirs, data_dir):
        log.warning("removing %s, an upload a stopped process did not finish", stale)
        await asyncio.to_thread(shutil.rmtree, stale, True)
    app[keys.viewer_secret_key] = await asyncio.to_thread(
        read_or_make_secret, viewer_secret_path(data_dir)
    )
    store = await Store.open(db_path(data_dir))
    try:
        await store.sync_shipped_avatars(SHIPPED_AVATARS)
        app[keys.first_key_key] = await ensure_first_key(store, api_key_path(data_dir), env_key)
        app[keys.store_key] = store
        yield
    finally:
        await store.close()


async def rerig_ctx(app: web.Application) -> AsyncIterator[None]:
    """Checks the face models are installed (a missing one stops start-up with the command
    that installs it), then re-rigs older photo avatars once in the background (`rerig.py`)."""
    from agenthuman_local.engine.facemesh import check_models

    await asyncio.to_thread(check_models)
    task = asyncio.create_task(
        rerig_in_background(app[keys.store_key], app[keys.settings_key].data_dir),
        name="avatars:rerig",
    )
    app[keys.rerig_task_key] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _probe_in_background(pool: DevicePool, settings: DevicesSettings) -> None:
    devices = await asyncio.to_thread(
        probe_devices,
        use_cuda=True,
        cuda_sessions=settings.cuda_sessions,
        cpu_sessions=settings.cpu_sessions,
    )
    pool.set_devices(devices)
    log.info("devices: %s", ", ".join(f"{d.name} ({d.label}) x{d.capacity}" for d in devices))


async def devices_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key].devices
    if not settings.use_cuda:
        app[keys.devices_key] = DevicePool(
            probe_devices(
                use_cuda=False,
                cuda_sessions=settings.cuda_sessions,
                cpu_sessions=settings.cpu_sessions,
            )
        )
        yield
        return
    pool = DevicePool()
    app[keys.devices_key] = pool
    task = asyncio.create_task(_probe_in_background(pool, settings), name="devices:probe")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def outputs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The viewer hub the runners publish into, and the metrics `/metrics` serves."""
    pool = app[keys.devices_key]
    metrics = Metrics()

    def device_load() -> None:
        for device in pool.devices:
            metrics.set_device_load(
                device.name, sessions=len(device.sessions), capacity=device.capacity
            )

    async def sessions_by_status() -> None:
        store = app.get(keys.store_key)
        if store is not None:
            metrics.set_sessions_by_status(await store.count_sessions_by_status())

    metrics.add_refresher(device_load)
    metrics.add_async_refresher(sessions_by_status)
    app[keys.metrics_key] = metrics

    async def viewer_token(session_id: str) -> str | None:
        session = await app[keys.manager_key].lookup(session_id)
        return ids.viewer_token(app[keys.viewer_secret_key], session_id) if session else None

    app[keys.viewer_tokens_key] = viewer_token
    hub = ViewerHub()
    app[keys.viewer_hub_key] = hub
    try:
        yield
    finally:
        await hub.aclose()


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    manager = SessionManager(
        app[keys.settings_key],
        app[keys.store_key],
        app[keys.devices_key],
        app[keys.engine_status_key],
        live_factory=app.get(keys.live_factory_key),
        rooms=app.get(keys.rooms_key),
        clock=app.get(keys.clock_key),
    )
    restarted = await manager.recover()
    app[keys.manager_key] = manager
    data_dir = app[keys.settings_key].data_dir
    # Their runners died with the process: their stats come from their timelines (issue 12).
    backfill = asyncio.create_task(
        backfill_stats(
            {sid: timeline_path(data_dir, sid) for sid in restarted},
            app[keys.store_key].set_session_stats,
        ),
        name="sessions:restart-stats",
    )
    yield
    backfill.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await backfill
    await manager.aclose()


async def end_live_sessions(app: web.Application) -> None:
    """on_shutdown: close the session sockets that never sent session.init (1001), end every
    live session and close every viewer socket (module docstring)."""
    app[keys.ws_shutdown_key].set()
    manager = app.get(keys.manager_key)
    if manager is not None:
        await manager.aclose()
    hub = app.get(keys.viewer_hub_key)
    if hub is not None:
        await hub.aclose()


def session_outputs(app: web.Application) -> tuple[OutputFactory, ...]:
    """What every live session publishes to, in this order, beside its timeline and socket."""
    return (
        recording_output(app[keys.settings_key]),
        viewer_output(app[keys.viewer_hub_key]),
        metrics_output(app[keys.metrics_key]),
        app[keys.rooms_key].output,
    )


async def live_ctx(app: web.Application) -> AsyncIterator[None]:
    """The render workers, the sessions' outputs, the manager's live-session factory."""
    settings = app[keys.settings_key]
    pool = RenderPool()
    app[keys.render_pool_key] = pool
    app[keys.outputs_key] = session_outputs(app)
    metrics = app[keys.metrics_key]

    def renders_skipped() -> None:
        for worker in pool.workers:
            metrics.set_renders_skipped(worker.device, worker.skipped)

    metrics.add_refresher(renders_skipped)

    async def make_renderer(spec: MediaSpec) -> Renderer:
        override = app.get(keys.renderer_factory_key)
        if override is not None:
            return await override(spec)
        avatar = await app[keys.store_key].get_avatar(spec.avatar_id)
        engine = await app[keys.engine_key].get()
        return await asyncio.to_thread(
            engine.make_renderer,
            spec.avatar_id,
            frame_size(spec),
            spec.device,
            avatar.kind if avatar is not None else "procedural",
            avatar_dir(settings.data_dir, spec.avatar_id),
        )

    async def make_driver(spec: MediaSpec) -> FrameDriver:
        return (await app[keys.engine_key].get()).make_driver(spec.fps)

    renderers = SharedRenderers(make_renderer)
    app[keys.renderers_key] = renderers

    async def live_factory(session: Session) -> LiveSession:
        manager = app[keys.manager_key]
        store = app[keys.store_key]
        outputs = app[keys.outputs_key]  # read here: a test's context may have replaced them
        return LiveSession(
            session,
            settings=settings,
            pool=pool,
            renderers=renderers,
            make_driver=make_driver,
            end_soon=lambda sid, reason: manager.end_soon(sid, EndReason(reason)),
            save_stats=store.set_session_stats,
            clock=app.get(keys.clock_key),
            outputs=outputs,
            relet=app[keys.devices_key].relet,
            save_video=lambda sid, w, h, fps: store.set_session_video(
                sid, width=w, height=h, fps=fps
            ),
        )

    app[keys.live_factory_key] = live_factory
    yield
    await pool.aclose()


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one Engine, built in the background (`engine/slot.py`); flips `EngineStatus.ready`."""
    settings = app[keys.settings_key]
    status = app[keys.engine_status_key]
    slot = EngineSlot()
    app[keys.engine_key] = slot
    app[keys.preview_cache_key] = {}
    status.error = None
    status.ready = not settings.engine.preload
    factory = app.get(keys.engine_factory_key, default_engine)
    task = asyncio.create_task(
        load_engine(slot, status, factory, settings, app.get(keys.store_key)),
        name="engine:load",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def daily_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's DailyRooms: the REST client (with `daily.api_key`), the manager's room hooks
    and the Daily output (`session_outputs`). Closes after every session has ended."""
    settings = app[keys.settings_key]
    daily = settings.daily
    rest = DailyRestClient(daily.api_url, daily.api_key) if daily.api_key else None
    rooms = DailyRooms(
        settings,
        app[keys.store_key],
        lambda sid, reason: app[keys.manager_key].end_soon(sid, reason),
        rest=rest,
        lib=app.get(keys.daily_lib_key),
        transport_options=app.get(keys.daily_transport_options_key),
    )
    app[keys.rooms_key] = rooms
    try:
        yield
    finally:
        await rooms.aclose()


def create_app(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    contexts: Iterable[CleanupContext] = (),
) -> web.Application:
    """The app for `settings`. `environ` supplies the reserved AGENTHUMAN_API_KEY and
    AGENTHUMAN_AVATAR (default: the process environment); `contexts` run after the engine's and
    before the session manager's (see the module docstring)."""
    environ = os.environ if environ is None else environ
    app = web.Application(
        client_max_size=int(settings.max_request_mb * 1024 * 1024),
        middlewares=[error_middleware, auth_middleware],
        handler_args=handler_args(settings.http.idle_timeout_s),
    )
    app[keys.settings_key] = settings
    app[keys.engine_status_key] = EngineStatus(ready=True)
    app[keys.rate_limiter_key] = RateLimiter(settings.rate_limit_per_minute)
    app[keys.upload_slots_key] = asyncio.Semaphore(settings.upload.max_concurrent)
    app[keys.ws_shutdown_key] = ShutdownSignal()
    app[keys.avatar_aliases_key] = default_aliases(environ)
    app.cleanup_ctx.append(functools.partial(store_ctx, env_key=environ.get(API_KEY_ENV)))
    app.cleanup_ctx.append(rerig_ctx)  # older photo rigs, in the background (SPEC §9)
    app.cleanup_ctx.append(devices_ctx)
    app.cleanup_ctx.append(outputs_ctx)
    app.cleanup_ctx.append(daily_ctx)
    app.cleanup_ctx.append(live_ctx)
    app.cleanup_ctx.append(engine_ctx)
    app.cleanup_ctx.extend(contexts)
    app.cleanup_ctx.append(sessions_ctx)
    app.on_shutdown.append(end_live_sessions)
    setup_routes(app)
    return app
