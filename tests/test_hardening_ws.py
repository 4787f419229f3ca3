"""Hostile and careless socket clients (issue 12): a message of too many JSON values, too deep or
with non-finite numbers is an error event (a first message is closed 4002); a storm of messages
is read more slowly, nothing dropped and told once; and storms of repeated control messages
reach the session at most once a frame while every one is answered."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from agenthuman_local import protocol
from agenthuman_local.api.fairness import ControlCoalescer, MessageBudget
from tests.conftest import MakeClient
from tests.test_ws_helpers import FPS, Live, counting_pcm


async def _timeline(live: Live, sid: str) -> list[dict]:
    response = await live.api.get(f"/v1/sessions/{sid}/timeline")
    assert response.status == 200
    return [json.loads(line) for line in (await response.text()).splitlines()]


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


async def test_a_ws_message_of_many_values_is_an_error_event(make_client: MakeClient) -> None:
    live = await Live.make(make_client, http__max_json_items=100)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.ws.send_str(json.dumps({"type": "session.keep_alive", "x": [{}] * 200}))
    error = await conn.until("error")
    assert error["code"] == protocol.E_INVALID_JSON and "more than 100" in error["error"]
    await conn.barrier()  # the session lives on


async def test_deep_json_as_the_first_ws_message_closes_4002(make_client: MakeClient) -> None:
    live = await Live.make(make_client)
    conn = await live.raw("/v1/ws")
    await conn.ws.send_str("[" * 100_000 + "]" * 100_000)
    event = await conn.next_event()
    assert event["type"] == "error" and event["code"] == protocol.E_PROTOCOL
    assert await conn.closed() == protocol.CLOSE_PROTOCOL


async def test_deep_json_on_a_live_socket_is_an_error_event_and_the_session_lives(
    make_client: MakeClient,
) -> None:
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.ws.send_str("[" * 100_000 + "]" * 100_000)  # too many values, before depth
    error = await conn.until("error")
    assert error["code"] == protocol.E_INVALID_JSON and "more than 10000" in error["error"]
    await conn.ws.send_str("[" * 500 + "]" * 500)
    error = await conn.until("error")
    assert error["code"] == protocol.E_INVALID_JSON and "deeper than 32" in error["error"]
    await conn.speak(counting_pcm(160).tobytes())
    await conn.barrier()
    assert conn.of("agent.speak.confirmed")[-1]["audio_samples"] == 160


def test_the_coalescer_lets_one_repeat_a_frame_through_and_speech_resets_it() -> None:
    now = [0.0]
    coalescer = ControlCoalescer(0.04, lambda: now[0])
    interrupt, keep_alive = protocol.Interrupt(), protocol.KeepAlive()
    assert not coalescer.absorb(interrupt)
    assert coalescer.absorb(interrupt) and coalescer.absorb(interrupt)
    now[0] = 0.039
    assert coalescer.absorb(interrupt)  # repeats never extend the window
    now[0] = 0.04
    assert not coalescer.absorb(interrupt)  # a frame on: the session has it again
    assert not coalescer.absorb(keep_alive)  # another kind breaks the run
    assert coalescer.absorb(keep_alive)
    assert not coalescer.absorb(protocol.Speak(b"\0\0", 16000))
    assert not coalescer.absorb(keep_alive)  # speech between: counts again
    assert not coalescer.absorb(protocol.Listening(True))
    assert coalescer.absorb(protocol.Listening(True))
    assert not coalescer.absorb(protocol.Listening(False))  # a change is never absorbed


async def test_an_interrupt_storm_reaches_the_session_once_a_frame_and_is_all_answered(
    make_client: MakeClient,
) -> None:
    """60 interrupts and 60 keep-alives back to back, after speech: 60 confirmations and 60
    acks in order, the first confirmation accounting for the speech exactly, the rest with
    nothing to drop; the session itself (its timeline) had about one of each a frame."""
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    sent = counting_pcm(16000)
    await conn.speak(sent.tobytes())
    await conn.barrier()
    await live.tick(5)
    t0 = time.monotonic()
    for _ in range(60):
        await conn.ws.send_json({"type": "agent.interrupt"})
    for _ in range(60):
        await conn.ws.send_json({"type": "session.keep_alive"})
    while len(conn.of("session.keep_alive.ack")) < 61:  # the barrier's, then these 60
        await conn.next_event()
    frames = (time.monotonic() - t0) * FPS + 2  # frames the storm spanned (and one each side)

    confirmed = conn.of("agent.interrupt.confirmed")
    assert len(confirmed) == 60
    first, rest = confirmed[0], confirmed[1:]
    assert first["utterance_id"] is not None
    assert first["played_ms"] + first["dropped_ms"] == len(sent) // 16
    assert all((c["utterance_id"], c["played_ms"], c["dropped_ms"]) == (None, 0, 0) for c in rest)
    kinds = [e["type"] for e in conn.events]
    last_confirmed = len(kinds) - 1 - kinds[::-1].index("agent.interrupt.confirmed")
    assert kinds[last_confirmed + 1 :].count("session.keep_alive.ack") == 60  # in order

    lines = await _timeline(live, sid)
    seen = [x.get("type") for x in lines]
    assert 1 <= seen.count("agent.interrupt.confirmed") <= frames < 60
    assert 1 <= seen.count("session.keep_alive.ack") - 1 <= frames
    await conn.ws.close()


async def test_interrupts_between_speech_are_never_absorbed(make_client: MakeClient) -> None:
    """speak, interrupt, speak, interrupt …: each interrupt has speech of its own to drop."""
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    chunk = counting_pcm(1600).tobytes()  # 100 ms
    for _ in range(10):
        await conn.speak(chunk)
        await conn.ws.send_json({"type": "agent.interrupt"})
    while len(conn.of("agent.interrupt.confirmed")) < 10:
        await conn.next_event()
    confirmed = conn.of("agent.interrupt.confirmed")
    assert [c["played_ms"] + c["dropped_ms"] for c in confirmed] == [100] * 10
    lines = await _timeline(live, sid)
    assert [x.get("type") for x in lines].count("agent.interrupt.confirmed") == 10
    await conn.ws.close()


async def test_a_keep_alive_ping_pong_is_answered_every_time(make_client: MakeClient) -> None:
    """A client that waits for each ack before the next keep-alive is never left waiting,
    however fast it goes."""
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    for n in range(1, 21):
        await conn.ws.send_json({"type": "session.keep_alive"})
        await conn.until("session.keep_alive.ack")
        assert len(conn.of("session.keep_alive.ack")) == n
    assert conn.ws.close_code is None
    await conn.ws.close()


# -- item 2: a message storm on one socket ------------------------------------------------------


def test_message_budget_allows_its_rate_and_a_burst_then_spaces_messages() -> None:
    now = [0.0]
    budget = MessageBudget(10, lambda: now[0])
    assert [budget.take() for _ in range(20)] == [0.0] * 20  # the burst: twice the rate
    assert budget.take() == pytest.approx(0.1)
    assert budget.take() == pytest.approx(0.2)
    now[0] = 0.2  # the reader waited: two tokens back, two spent
    assert budget.take() == pytest.approx(0.1)
    assert budget.should_warn() and not budget.should_warn()
    now[0] = 1.3
    assert budget.should_warn()
    now[0] = 100.0  # idle: full again, never more than the burst
    assert [budget.take() for _ in range(20)] == [0.0] * 20
    assert budget.take() > 0


async def test_a_storm_is_read_more_slowly_nothing_dropped_and_told_once(
    make_client: MakeClient,
) -> None:
    live = await Live.make(make_client, ws__max_messages_per_s=50)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(60):
        await conn.speak(counting_pcm(160).tobytes())
    for _ in range(90):
        await conn.ws.send_json({"type": "session.keep_alive"})
    while len(conn.of("session.keep_alive.ack")) < 90:
        await conn.next_event()
    elapsed = loop.time() - started
    # 151 messages (init included) at 50/s after a burst of 100: at least 1 s of reading.
    assert elapsed >= 0.9
    confirmed = conn.of("agent.speak.confirmed")
    assert len(confirmed) == 60 and all(c["audio_samples"] == 160 for c in confirmed)
    limited = [e["code"] for e in conn.events if e["type"] == "error"]
    # Told when throttling starts, then at most once a second while it lasts (~1 s here: a
    # late timer may make it two), never once per message.
    assert set(limited) == {"RATE_LIMITED"}
    assert 1 <= len(limited) <= math.ceil(elapsed) + 1, (limited, elapsed)
    await conn.ws.send_json({"type": "agent.interrupt"})
    done = await conn.until("agent.interrupt.confirmed")
    assert done["played_ms"] + done["dropped_ms"] == 60 * 10  # every chunk was queued
