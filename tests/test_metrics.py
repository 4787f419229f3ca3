"""Metrics: what the runner and manager report is what a Prometheus scrape reads back."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from agenthuman_local import keys
from agenthuman_local.api.metrics import metrics_handler
from agenthuman_local.metrics import Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the text format."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_frames_render_time_and_drops_are_counted() -> None:
    m = Metrics()
    for i in range(10):
        m.frame_published("s1", late=i % 4 == 0, render_ms=12.0)
    m.frame_published("s2", False, 45.0)
    m.frame_dropped("s1")
    m.frame_dropped("s2", 2)
    got = scrape(m)
    assert got[("agenthuman_frames_published_total", ())] == 11
    assert got[("agenthuman_frames_late_total", ())] == 3
    assert got[("agenthuman_frames_dropped_total", ())] == 3
    assert got[("agenthuman_render_ms_count", ())] == 11
    assert got[("agenthuman_render_ms_sum", ())] == 10 * 12.0 + 45.0
    assert got[("agenthuman_render_ms_bucket", (("le", "15.0"),))] == 10
    assert got[("agenthuman_render_ms_bucket", (("le", "+Inf"),))] == 11


def test_first_frame_latency_and_audio_bytes() -> None:
    m = Metrics()
    m.first_frame_latency(35.0)
    m.first_frame_latency(120.0)
    m.audio_bytes_received(3200)
    m.audio_bytes_received(640)
    got = scrape(m)
    assert got[("agenthuman_first_frame_latency_ms_count", ())] == 2
    assert got[("agenthuman_first_frame_latency_ms_bucket", (("le", "40.0"),))] == 1
    assert got[("agenthuman_audio_bytes_received_total", ())] == 3840


def test_sessions_by_status_and_device_load_are_absolute() -> None:
    m = Metrics()
    assert scrape(m)[("agenthuman_sessions", (("status", "started"),))] == 0
    m.set_sessions_by_status({"created": 2, "started": 1, "ended": 7})
    m.set_sessions_by_status({"started": 3})
    m.set_device_load("cpu", sessions=1, capacity=2)
    m.set_device_load("cuda:0", sessions=5, capacity=16)
    got = scrape(m)
    assert got[("agenthuman_sessions", (("status", "created"),))] == 0
    assert got[("agenthuman_sessions", (("status", "started"),))] == 3
    assert got[("agenthuman_device_sessions", (("device", "cuda:0"),))] == 5
    assert got[("agenthuman_device_capacity", (("device", "cpu"),))] == 2


def test_skipped_renders_count_what_each_worker_skipped_since_the_last_scrape() -> None:
    m = Metrics()
    m.set_renders_skipped("cpu", 3)
    m.set_renders_skipped("cpu", 3)  # a scrape with nothing new adds nothing
    m.set_renders_skipped("cpu", 5)
    m.set_renders_skipped("cuda:0", 1)
    got = scrape(m)
    assert got[("agenthuman_renders_skipped_total", (("device", "cpu"),))] == 5
    assert got[("agenthuman_renders_skipped_total", (("device", "cuda:0"),))] == 1


def test_refreshers_run_at_scrape_time_and_a_broken_one_is_skipped() -> None:
    m = Metrics()
    load = {"sessions": 0}
    m.add_refresher(lambda: m.set_device_load("cpu", sessions=load["sessions"], capacity=2))
    m.add_refresher(lambda: 1 / 0)
    load["sessions"] = 2
    assert scrape(m)[("agenthuman_device_sessions", (("device", "cpu"),))] == 2


def test_each_app_has_its_own_counters() -> None:
    a, b = Metrics(), Metrics()
    a.frame_published("s", False, 1.0)
    assert scrape(a)[("agenthuman_frames_published_total", ())] == 1
    assert scrape(b)[("agenthuman_frames_published_total", ())] == 0


async def test_the_handler_serves_the_text_format(aiohttp_client) -> None:
    app = web.Application()
    app[keys.metrics_key] = Metrics()
    app.router.add_get("/metrics", metrics_handler)
    client = await aiohttp_client(app)
    app[keys.metrics_key].audio_bytes_received(10)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "agenthuman_sessions",
        "agenthuman_frames_published",
        "agenthuman_frames_late",
        "agenthuman_frames_dropped",
        "agenthuman_render_ms",
        "agenthuman_first_frame_latency_ms",
        "agenthuman_audio_bytes_received",
        "agenthuman_device_sessions",
        "agenthuman_device_capacity",
    } <= families


async def test_async_refreshers_run_before_the_handler_renders(aiohttp_client) -> None:
    app = web.Application()
    m = app[keys.metrics_key] = Metrics()
    counts = {"created": 4}

    async def sessions() -> None:
        m.set_sessions_by_status(counts)

    async def broken() -> None:
        raise RuntimeError("no store")

    m.add_async_refresher(broken)
    m.add_async_refresher(sessions)
    app.router.add_get("/metrics", metrics_handler)
    client = await aiohttp_client(app)
    counts["created"] = 5
    text = await (await client.get("/metrics")).text()
    got = {
        s.labels["status"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "agenthuman_sessions"
        for s in f.samples
    }
    assert got == {"created": 5, "started": 0, "ended": 0}


async def test_metrics_count_sessions_by_status_from_the_store(api) -> None:
    async def by_status() -> dict[str, float]:
        text = await (await api.get("/metrics", key=None)).text()
        return {
            s.labels["status"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "agenthuman_sessions"
            for s in f.samples
        }

    first = (await api.create_session())["session_id"]
    await api.create_session()
    await api.start_session(first)
    assert await by_status() == {"created": 1, "started": 1, "ended": 0}
    await api.json("POST", f"/v1/sessions/{first}/end")
    assert await by_status() == {"created": 1, "started": 0, "ended": 1}
