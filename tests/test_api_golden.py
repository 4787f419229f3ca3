"""Our responses carry every key of the hosted API's examples, with the same JSON types.

The examples are `tests/fixtures/hosted_*.json` (from research/agenthuman-api.md §1). We may add
keys; we may not drop or retype one, except where SPEC says the local server differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ApiClient, MakeClient

FIXTURES = Path(__file__).parent / "fixtures"
# SPEC §3: minutes are not metered locally, so the hosted integer is null here.
BY_DESIGN = {"$.usage.minutes.total_remaining"}


def json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def assert_same_shape(hosted: Any, ours: Any, path: str = "$") -> None:
    if path in BY_DESIGN:
        return
    if path.endswith(".metadata"):  # the caller's own object: only its type is ours to match
        assert isinstance(ours, dict), f"{path}: expected an object, got {ours!r}"
    elif isinstance(hosted, dict):
        assert isinstance(ours, dict), f"{path}: expected an object, got {ours!r}"
        for key, value in hosted.items():
            assert key in ours, f"{path}.{key} is missing"
            assert_same_shape(value, ours[key], f"{path}.{key}")
    elif isinstance(hosted, list):
        assert isinstance(ours, list), f"{path}: expected an array, got {ours!r}"
        assert ours, f"{path}: expected at least one item to compare"
        assert_same_shape(hosted[0], ours[0], f"{path}[0]")
    else:
        assert json_type(ours) == json_type(hosted), f"{path}: {ours!r} is not like {hosted!r}"


def hosted(name: str) -> Any:
    return json.loads((FIXTURES / f"hosted_{name}.json").read_text(encoding="utf-8"))


def test_the_comparison_can_fail() -> None:
    assert_same_shape({"a": {"b": 1}}, {"a": {"b": 2, "c": None}})
    with pytest.raises(AssertionError, match=r"\$\.a\.b is missing"):
        assert_same_shape({"a": {"b": 1}}, {"a": {}})
    with pytest.raises(AssertionError, match=r"\$\.a"):
        assert_same_shape({"a": "x"}, {"a": None})


@pytest.fixture
async def limited(make_client: MakeClient) -> ApiClient:
    """An app whose sessions expire, so `expiration` is a time as in the hosted examples."""
    return await make_client(session__max_duration_s=4 * 3600)


async def test_create_era_b(api: ApiClient) -> None:
    ours = await api.json("POST", "/v1/sessions", 201, json={"metadata": {"user_name": "J"}})
    assert_same_shape(hosted("create_b"), ours)


async def test_create_era_c(limited: ApiClient) -> None:
    body = {"avatar": "avat_01KMZHXFPBVCXA5ATK85HCP8G1", "room": {"platform": "local"}}
    ours = await limited.json("POST", "/v1/sessions", 201, json=body)
    assert_same_shape(hosted("create_c"), ours)
    # Pipecat's AgentHumanSession requires these (research §4.2).
    session = ours["session"]
    assert all(isinstance(session[k], str) for k in ("session_id", "session_token", "status"))


async def test_start_era_b(limited: ApiClient) -> None:
    sid = (await limited.create_session())["session_id"]
    assert_same_shape(hosted("start_b"), await limited.json("PUT", f"/v1/sessions/{sid}/start"))


async def test_get_era_b(limited: ApiClient) -> None:
    room = {"url": "https://acme.daily.co/room", "token": "tok"}
    sid = (await limited.create_session({"daily_room": room}))["session_id"]
    await limited.start_session(sid)
    await limited.json("PUT", f"/v1/sessions/{sid}/end")
    assert_same_shape(hosted("get_b"), await limited.json("GET", f"/v1/sessions/{sid}"))


async def test_end_both_eras(limited: ApiClient) -> None:
    sid = (await limited.create_session())["session_id"]
    await limited.start_session(sid)
    assert_same_shape(hosted("end_b"), await limited.json("PUT", f"/v1/sessions/{sid}/end"))
    assert_same_shape(hosted("end_c"), await limited.json("POST", f"/v1/sessions/{sid}/end"))


async def test_list_era_c(limited: ApiClient) -> None:
    await limited.create_session({"room": {"platform": "local"}})
    ours = await limited.json("GET", "/v1/sessions?status=started")
    assert_same_shape(hosted("list_c"), ours)


async def test_not_found(api: ApiClient) -> None:
    ours = await api.json("GET", "/v1/sessions/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV", 404)
    assert_same_shape(hosted("error_404"), ours)
    assert ours["error"]["message"] == "Session not found"
