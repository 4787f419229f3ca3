"""The engine's start-up wiring (SPEC §1): the server answers while the engine loads, says so in
/healthz and in start/create, and reports a load that failed instead of dying."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from agenthuman_local import keys
from agenthuman_local.app import create_app
from agenthuman_local.config import Settings
from agenthuman_local.engine.engine import Engine
from tests.conftest import ApiClient, make_settings
from tests.test_errors import assert_error

C_BODY = {"room": {"platform": "local"}}


class GatedEngine(Engine):
    """An engine whose warm-up waits for the test to open the gate (no painting)."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def load(self) -> None:
        await self.gate.wait()
        self.ready = True


class BrokenEngine(Engine):
    async def load(self) -> None:
        raise RuntimeError("weights are missing")


async def start_client(
    aiohttp_client: Any, tmp_path: Any, factory: Callable[[Settings], Engine] | None, **kw: Any
) -> ApiClient:
    app = create_app(make_settings(tmp_path, **kw), environ={})
    if factory is not None:
        app[keys.engine_factory_key] = factory
    client = await aiohttp_client(app)
    return ApiClient(client, app[keys.first_key_key].key)


async def load_finished() -> None:
    """Wait for the app's engine:load task to end (ready, or the error recorded)."""
    for task in [t for t in asyncio.all_tasks() if t.get_name() == "engine:load"]:
        await asyncio.shield(task)


async def test_loading_then_ready(aiohttp_client: Any, tmp_path: Any) -> None:
    gate = asyncio.Event()
    api = await start_client(
        aiohttp_client, tmp_path, lambda s: GatedEngine(gate), engine__preload=True
    )
    health = await api.json("GET", "/healthz", key=None)
    assert health["engine"] == "loading"
    assert "engine_error" not in health
    session = await api.create_session()
    started = await api.start_session(session["session_id"])
    assert started["ws_uri"] == "try_again" and started["expiration"] is None
    assert (await api.json("GET", f"/v1/sessions/{session['session_id']}"))["session"][
        "status"
    ] == "created"
    await assert_error(await api.post("/v1/sessions", json=C_BODY), 503, "ENGINE_LOADING")

    gate.set()
    await load_finished()
    assert (await api.json("GET", "/healthz", key=None))["engine"] == "ready"
    started = await api.start_session(session["session_id"])
    assert started["ws_uri"].endswith(f"/v1/sessions/{session['session_id']}/ws")
    assert api.app[keys.engine_key].engine.ready


async def test_a_failed_load_is_reported_and_the_server_stays_up(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    api = await start_client(
        aiohttp_client, tmp_path, lambda s: BrokenEngine(), engine__preload=True
    )
    await load_finished()
    health = await api.json("GET", "/healthz", key=None)
    assert health["engine"] == "loading"
    assert "weights are missing" in health["engine_error"]
    session = await api.create_session()
    assert (await api.start_session(session["session_id"]))["ws_uri"] == "try_again"
    error = await assert_error(await api.post("/v1/sessions", json=C_BODY), 503, "ENGINE_LOADING")
    assert "failed to load" in error["message"] and "weights are missing" in error["message"]
    assert (await api.json("GET", "/v1/avatars"))["success"] is True


@pytest.mark.parametrize("preload", [True, False])
async def test_an_engine_that_cannot_be_built_is_reported_and_the_server_stays_up(
    aiohttp_client: Any, tmp_path: Any, preload: bool
) -> None:
    def cannot_build(settings: Settings) -> Engine:
        raise ImportError("no torch here")

    api = await start_client(aiohttp_client, tmp_path, cannot_build, engine__preload=preload)
    await load_finished()
    health = await api.json("GET", "/healthz", key=None)
    assert health["engine"] == "loading" and "no torch here" in health["engine_error"]
    session = await api.create_session()
    assert (await api.start_session(session["session_id"]))["ws_uri"] == "try_again"
    error = await assert_error(await api.post("/v1/sessions", json=C_BODY), 503, "ENGINE_LOADING")
    assert "no torch here" in error["message"]
    assert api.app[keys.engine_key].engine is None


async def test_the_server_answers_before_the_engine_is_built(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    """Building the engine (importing torch) happens after the server listens."""
    release = threading.Event()

    def slow_build(settings: Settings) -> Engine:
        release.wait(10)
        return CountingEngine()

    api = await start_client(aiohttp_client, tmp_path, slow_build, engine__preload=True)
    slot = api.app[keys.engine_key]
    assert slot.engine is None
    health = await api.json("GET", "/healthz", key=None)
    assert health["engine"] == "loading" and "engine_error" not in health
    session = await api.create_session()
    assert (await api.start_session(session["session_id"]))["ws_uri"] == "try_again"
    # A preview asked for meanwhile waits for the build instead of failing.
    preview = asyncio.ensure_future(api.get("/v1/avatars/avat_local_ada/preview", key=None))
    await asyncio.sleep(0.05)
    assert not preview.done()
    release.set()
    assert (await preview).status == 200
    await load_finished()
    assert isinstance(slot.engine, CountingEngine)
    assert (await api.json("GET", "/healthz", key=None))["engine"] == "ready"


def test_torch_and_opencv_run_one_thread_after_the_build() -> None:
    import cv2
    import torch

    from agenthuman_local.engine.slot import OPENCV_THREADS, TORCH_THREADS, _build

    before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    cv2.setNumThreads(-1)  # OpenCV's default: a thread per core
    try:
        seen: list[int] = []
        worker = threading.Thread(target=lambda: _build(lambda s: CountingEngine(), None))  # type: ignore[arg-type]
        worker.start()
        worker.join()
        # Set on the build thread, seen process-wide (here and on a fresh thread).
        probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        probe.start()
        probe.join()
        assert torch.get_num_threads() == TORCH_THREADS and seen == [TORCH_THREADS]
        assert cv2.getNumThreads() == OPENCV_THREADS
    finally:
        torch.set_num_threads(before)
        cv2.setNumThreads(cv_before)


async def test_the_real_engine_loads_in_the_background(aiohttp_client: Any, tmp_path: Any) -> None:
    api = await start_client(aiohttp_client, tmp_path, None, engine__preload=True)
    assert (await api.json("GET", "/healthz", key=None))["engine"] in ("loading", "ready")
    await load_finished()
    assert (await api.json("GET", "/healthz", key=None))["engine"] == "ready"
    engine = api.app[keys.engine_key].engine
    assert isinstance(engine, Engine) and engine.ready


class CountingEngine(Engine):
    def __init__(self) -> None:
        super().__init__()
        self.previews: list[str] = []

    def render_preview(self, avatar_id: str) -> bytes:
        self.previews.append(avatar_id)
        return super().render_preview(avatar_id)


async def test_preload_off_is_ready_at_once_and_previews_come_from_the_engine(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    api = await start_client(aiohttp_client, tmp_path, lambda s: CountingEngine())
    assert api.app[keys.engine_status_key].ready
    assert (await api.json("GET", "/healthz", key=None))["engine"] == "ready"
    engine = await api.app[keys.engine_key].get()
    assert isinstance(engine, CountingEngine) and not engine.ready  # no warm-up was run
    bodies = set()
    for path in ("preview", "image", "preview"):
        response = await api.get(f"/v1/avatars/avat_local_ada/{path}", key=None)
        assert response.status == 200
        bodies.add(await response.read())
    assert len(bodies) == 1
    assert engine.previews == ["avat_local_ada"]  # drawn once, then cached


async def test_shutdown_while_loading_leaves_no_task(aiohttp_client: Any, tmp_path: Any) -> None:
    gate = asyncio.Event()  # never opened: the load is still waiting at shutdown
    api = await start_client(
        aiohttp_client, tmp_path, lambda s: GatedEngine(gate), engine__preload=True
    )
    assert (await api.json("GET", "/healthz", key=None))["engine"] == "loading"
    await api.client.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "engine:load"]
