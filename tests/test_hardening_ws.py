"""Hostile and careless socket clients (issue 12): non-finite numbers, and storms of repeated
control messages that reach the session at most once a frame while every one is answered."""

from __future__ import annotations

import json

from agenthuman_local import protocol
from tests.conftest import MakeClient
from tests.test_ws_helpers import Live


async def test_nan_and_infinity_in_a_socket_message_are_invalid_json(
    make_client: MakeClient,
) -> None:
    """As in REST bodies (400 INVALID_JSON): an error event, the message skipped, the session
    goes on; as a first message, 4002 like any other bad first message (SPEC §8)."""
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        await conn.ws.send_str('{"type": "agent.interrupt", "why": ' + number + "}")
        error = await conn.until("error")
        assert error["code"] == protocol.E_INVALID_JSON, number
    await conn.barrier()  # the session lives on
    assert not conn.of("agent.interrupt.confirmed")  # and none of them was acted on
    await conn.ws.close()

    sid, token = await live.started_session()
    raw = await live.raw(f"/v1/sessions/{sid}/ws")
    config = {"session_id": sid, "access_token": token}
    await raw.ws.send_str(
        json.dumps({"type": "session.init", "config": config})[:-1] + ', "x": NaN}'
    )
    assert (await raw.next_event())["code"] == protocol.E_PROTOCOL
    assert await raw.closed() == protocol.CLOSE_PROTOCOL
