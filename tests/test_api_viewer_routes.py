"""The viewer page, its socket and scripts, and /metrics, as the app routes them (SPEC §2, §10):
the `viewer_url` a session shows opens its page and socket without an API key; anything else
looks like an unknown session."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agenthuman_local import keys
from tests.conftest import ApiClient
from tests.test_errors import assert_error


def page_path(session: dict[str, Any]) -> tuple[str, str]:
    """(the path of the session's viewer_url, its token)."""
    parts = urlsplit(session["viewer_url"])
    return parts.path, parse_qs(parts.query)["token"][0]


async def test_the_viewer_url_opens_the_page_without_a_key(api: ApiClient) -> None:
    session = await api.create_session()
    path, token = page_path(session)
    assert path == f"/v1/sessions/{session['session_id']}/viewer"
    response = await api.get(f"{path}?token={token}", key=None)
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "<canvas" in await response.text()
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_a_wrong_token_looks_like_an_unknown_session(api: ApiClient) -> None:
    session = await api.create_session()
    path, token = page_path(session)
    other = await api.create_session()
    _, other_token = page_path(other)
    for query in ("", "?token=", "?token=nope", f"?token={other_token}", f"?token={token}x"):
        response = await api.get(path + query, key=None)
        await assert_error(response, 404, "SESSION_NOT_FOUND")
    response = await api.get(f"/v1/sessions/sess_nope/viewer?token={token}", key=None)
    await assert_error(response, 404, "SESSION_NOT_FOUND")


async def test_the_viewer_socket_gets_what_the_hub_publishes(api: ApiClient) -> None:
    session = await api.create_session()
    path, token = page_path(session)
    sid = session["session_id"]
    async with api.client.ws_connect(f"{path}/ws?token={token}") as ws:
        api.app[keys.viewer_hub_key].publish_state(sid, "connecting")
        message = await ws.receive(timeout=30)
        assert message.type is aiohttp.WSMsgType.TEXT
        assert json.loads(message.data) == {"type": "state", "state": "connecting", "reason": None}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with api.client.ws_connect(f"{path}/ws?token=nope"):
            pass
    assert info.value.status == 404


async def test_viewer_scripts(api: ApiClient) -> None:
    for name in ("viewer.js", "viewer-worklet.js"):
        response = await api.get(f"/viewer/{name}", key=None)
        assert response.status == 200 and response.content_type == "text/javascript"
        assert await response.text()
    await assert_error(await api.get("/viewer/../app.py", key=None), 404, "NOT_FOUND")
    await assert_error(await api.get("/viewer/viewer.html", key=None), 404, "NOT_FOUND")


async def test_metrics_parse_and_show_the_devices(api: ApiClient) -> None:
    response = await api.get("/metrics", key=None)
    assert response.status == 200
    assert response.content_type == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert {"agenthuman_sessions", "agenthuman_frames_published", "agenthuman_render_ms"} <= set(
        families
    )
    capacity = {s.labels["device"]: s.value for s in families["agenthuman_device_capacity"].samples}
    assert capacity == {"cpu": 4.0}  # config/test.yaml: devices.cpu_sessions 4
    await api.start_session((await api.create_session())["session_id"])
    again = {
        f.name: f for f in text_string_to_metric_families(await (await api.get("/metrics")).text())
    }
    in_use = {s.labels["device"]: s.value for s in again["agenthuman_device_sessions"].samples}
    assert in_use == {"cpu": 1.0}
