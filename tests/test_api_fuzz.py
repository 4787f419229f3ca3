"""No request body, path or query makes the API answer 500, hang, or leave its error shape.

Every response also passes the OpenAPI check of `ApiClient`.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ApiClient

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
REQUEST_TIMEOUT_S = 10

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
plausible = json_values | st.sampled_from(
    [
        "avat_local_ada",
        "avat_local_ben",
        "avat_01KMZJ4WE5QCD9G3EK21QW8NJK",
        "4:3",
        "16:9",
        "daily",
        "local",
        "livekit",
        "proxy",
        "https://acme.daily.co/room",
        "data:image/png;base64,AAAA",
        "",
    ]
)
rooms = st.fixed_dictionaries(
    {}, optional={"platform": plausible, "url": plausible, "token": plausible}
)
bodies = json_values | st.fixed_dictionaries(
    {},
    optional={
        "avatar": plausible,
        "avatar_id": plausible,
        "aspect_ratio": plausible,
        "metadata": json_values,
        "room": rooms | plausible,
        "daily_room": rooms | plausible,
    },
)


async def send(api: ApiClient, method: str, path: str, **kwargs: Any) -> int:
    response = await asyncio.wait_for(api.request(method, path, **kwargs), REQUEST_TIMEOUT_S)
    assert response.status < 500 or (
        response.status == 503 and (await response.json())["error"]["code"] == "NO_CAPACITY"
    ), await response.text()
    return response.status


@FUZZ
@given(body=bodies)
async def test_create_bodies(api: ApiClient, body: Any) -> None:
    assert await send(api, "POST", "/v1/sessions", json=body) in {201, 400, 404, 503}


@FUZZ
@given(raw=st.binary(max_size=300))
async def test_create_raw_bytes(api: ApiClient, raw: bytes) -> None:
    status = await send(
        api, "POST", "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status in {201, 400}


@FUZZ
@given(
    session_id=st.text(min_size=1, max_size=40),
    action=st.sampled_from(["", "/start", "/end"]),
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE"]),
)
async def test_session_paths(api: ApiClient, session_id: str, action: str, method: str) -> None:
    path = f"/v1/sessions/{quote(session_id, safe='')}{action}"
    assert await send(api, method, path) in {200, 404, 405}


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["status", "limit", "cursor", "other"]), st.text(max_size=30), max_size=4
    )
)
async def test_list_queries(api: ApiClient, query: dict[str, str]) -> None:
    assert await send(api, "GET", "/v1/sessions?" + urlencode(query)) in {200, 400}
