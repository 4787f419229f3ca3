"""DailyRestClient against a local aiohttp fake of Daily's /rooms and /meeting-tokens."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import pytest
from aiohttp import web

from agenthuman_local.transports.daily_rest import DailyRestClient, DailyRestError

KEY = "good-key"
rooms_key = web.AppKey("rooms", dict)
tokens_key = web.AppKey("tokens", dict)
fail_key = web.AppKey("fail", dict)


def fake_daily_app() -> web.Application:
    """Daily's documented shapes: JSON `{"error", "info"}` bodies on failure."""
    names = itertools.count(1)

    def error(status: int, code: str, info: str) -> web.Response:
        return web.json_response({"error": code, "info": info}, status=status)

    @web.middleware
    async def auth_and_faults(request: web.Request, handler):
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return error(401, "authentication-error", "Invalid API key")
        fault = request.app[fail_key].get(request.path)
        if fault == "slow":
            await asyncio.sleep(5)
        elif fault is not None:
            return web.Response(status=fault, text="<html>upstream sad</html>")
        return await handler(request)

    async def create_room(request: web.Request) -> web.Response:
        body = await request.json()
        props = body.get("properties", {})
        if "exp" in props and (not isinstance(props["exp"], int) or props["exp"] < time.time()):
            return error(400, "invalid-request-error", "exp must be a future unix time")
        name = body.get("name") or f"room-{next(names)}"
        if name in request.app[rooms_key]:
            return error(400, "invalid-request-error", f"a room named {name} already exists")
        request.app[rooms_key][name] = body
        return web.json_response(
            {"name": name, "url": f"https://fake.daily.co/{name}", "privacy": body["privacy"]}
        )

    async def create_token(request: web.Request) -> web.Response:
        props = (await request.json()).get("properties", {})
        if props.get("room_name") not in request.app[rooms_key]:
            return error(400, "invalid-request-error", "room_name does not exist")
        token = f"tok-{props['room_name']}-{props.get('user_name')}"
        request.app[tokens_key][token] = props
        return web.json_response({"token": token})

    async def delete_room(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if request.app[rooms_key].pop(name, None) is None:
            return error(404, "not-found", f"room {name} was not found")
        return web.json_response({"deleted": True, "name": name})

    app = web.Application(middlewares=[auth_and_faults])
    app[rooms_key] = {}
    app[tokens_key] = {}
    app[fail_key] = {}
    app.router.add_post("/v1/rooms", create_room)
    app.router.add_post("/v1/meeting-tokens", create_token)
    app.router.add_delete("/v1/rooms/{name}", delete_room)
    return app


@pytest.fixture
async def fake(aiohttp_server):
    return await aiohttp_server(fake_daily_app())


@pytest.fixture
async def client(fake):
    c = DailyRestClient(str(fake.make_url("/v1")), KEY, timeout_s=0.5)
    yield c
    await c.aclose()


async def test_create_room_token_and_delete(fake, client) -> None:
    room = await client.create_room_with_token(exp_s=3600, user_name="guest")
    assert room.url == f"https://fake.daily.co/{room.name}"
    stored = fake.app[rooms_key][room.name]
    assert stored["privacy"] == "private"
    assert stored["properties"]["eject_at_room_exp"] is True
    assert 3500 < stored["properties"]["exp"] - time.time() <= 3600
    token_props = fake.app[tokens_key][room.token]
    assert token_props["room_name"] == room.name and token_props["user_name"] == "guest"
    avatar_token = await client.create_meeting_token(room.name, user_name="AI Avatar (AH)")
    assert avatar_token != room.token
    assert await client.delete_room(room.name) is True
    assert fake.app[rooms_key] == {}
    # A second delete (ending twice) is not an error.
    assert await client.delete_room(room.name) is False


async def test_a_bad_key_is_a_401_with_dailys_message(fake) -> None:
    bad = DailyRestClient(str(fake.make_url("/v1")), "wrong")
    with pytest.raises(DailyRestError) as info:
        await bad.create_room()
    await bad.aclose()
    assert info.value.status == 401
    assert info.value.error == "authentication-error"
    assert "Invalid API key" in str(info.value)


async def test_a_bad_request_is_a_400_with_dailys_message(client) -> None:
    await client.create_room(name="taken")
    with pytest.raises(DailyRestError) as info:
        await client.create_room(name="taken")
    assert (info.value.status, info.value.error) == (400, "invalid-request-error")
    assert "already exists" in info.value.info
    with pytest.raises(DailyRestError, match="room_name does not exist"):
        await client.create_meeting_token("missing")


async def test_a_server_error_without_json_still_names_the_status(fake, client) -> None:
    fake.app[fail_key]["/v1/rooms"] = 503
    with pytest.raises(DailyRestError) as info:
        await client.create_room()
    assert info.value.status == 503
    assert "upstream sad" in info.value.info


async def test_a_failed_token_deletes_the_room_it_was_for(fake, client) -> None:
    fake.app[fail_key]["/v1/meeting-tokens"] = 500
    with pytest.raises(DailyRestError) as info:
        await client.create_room_with_token(exp_s=60)
    assert info.value.status == 500
    assert fake.app[rooms_key] == {}


async def test_unreachable_daily_has_no_status() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    c = DailyRestClient(f"http://127.0.0.1:{port}/v1", KEY)
    with pytest.raises(DailyRestError) as info:
        await c.create_room()
    await c.aclose()
    assert info.value.status is None
    assert info.value.error == "unreachable"


async def test_a_slow_daily_times_out(fake, client) -> None:
    fake.app[fail_key]["/v1/rooms"] = "slow"
    with pytest.raises(DailyRestError) as info:
        await client.create_room()
    assert (info.value.status, info.value.error) == (None, "timeout")
