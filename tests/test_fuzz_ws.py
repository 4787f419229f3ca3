"""Fuzz the session socket (SPEC §8): random sequences of good and bad messages, one fresh session
per example, on a real socket and a virtual clock.

Every message that gets a reply gets exactly one, in the order sent (a bad one an `error`, then
the session lives on); utterances keep their promises (one speak_started at most, then exactly one
speak_ended); the session still answers at the end; no task outlives the test (conftest).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenthuman_local import protocol
from tests.test_ws_helpers import Live, counting_pcm

ERROR = protocol.ERROR
CONFIRMED = protocol.AGENT_SPEAK_CONFIRMED
ACK = protocol.SESSION_KEEP_ALIVE_ACK
REPLIES = (ERROR, CONFIRMED, ACK)
KNOWN_TYPES = {
    protocol.SESSION_INIT,
    protocol.AGENT_SPEAK,
    protocol.AGENT_SPEAK_END,
    protocol.AGENT_INTERRUPT,
    protocol.AGENT_START_LISTENING,
    protocol.AGENT_STOP_LISTENING,
    protocol.SESSION_KEEP_ALIVE,
}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


# Each op: (what to send, the reply it must get or None).
ops = st.one_of(
    st.text(max_size=30).filter(_not_json).map(lambda t: (("text", t), ERROR)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: (("text", json.dumps(v)), ERROR)
    ),
    st.tuples(
        st.text(max_size=12).filter(lambda t: t not in KNOWN_TYPES),
        st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    ).map(lambda tv: (("text", json.dumps({**tv[1], "type": tv[0]})), ERROR)),
    st.integers(1, 1600).map(lambda n: (("binary", counting_pcm(n).tobytes()), CONFIRMED)),
    st.binary(min_size=1, max_size=801)
    .filter(lambda b: len(b) % 2 == 1)
    .map(lambda b: (("binary", b), ERROR)),
    st.integers(1, 2400).map(lambda n: (("speak", n), CONFIRMED)),
    st.sampled_from(["!!", "AAA", "A", "%%%%"]).map(lambda a: (("speak_b64", a), ERROR)),
    st.sampled_from([0, 7999, 48001, "x"]).map(lambda r: (("speak_rate", r), ERROR)),
    st.just((("type", protocol.SESSION_INIT), ERROR)),
    st.just((("type", protocol.SESSION_KEEP_ALIVE), ACK)),
    st.sampled_from(
        [
            protocol.AGENT_SPEAK_END,
            protocol.AGENT_INTERRUPT,
            protocol.AGENT_START_LISTENING,
            protocol.AGENT_STOP_LISTENING,
        ]
    ).map(lambda t: (("type", t), None)),
    st.integers(1, 6).map(lambda n: (("tick", n), None)),
)


async def _send(live: Live, ws: Any, op: tuple[str, Any]) -> None:
    kind, value = op
    if kind == "text":
        await ws.send_str(value)
    elif kind == "binary":
        await ws.send_bytes(value)
    elif kind == "speak":
        audio = base64.b64encode(counting_pcm(value).tobytes()).decode()
        await ws.send_json({"type": protocol.AGENT_SPEAK, "audio": audio})
    elif kind == "speak_b64":
        await ws.send_json({"type": protocol.AGENT_SPEAK, "audio": value})
    elif kind == "speak_rate":
        audio = base64.b64encode(counting_pcm(160).tobytes()).decode()
        await ws.send_json({"type": protocol.AGENT_SPEAK, "audio": audio, "sample_rate": value})
    elif kind == "tick":
        await live.tick(value)
    else:
        await ws.send_json({"type": value})


def _check_utterances(events: list[dict[str, Any]]) -> None:
    confirmed = {e["utterance_id"] for e in events if e["type"] == CONFIRMED}
    per: dict[str, list[str]] = {}
    for e in events:
        if e["type"] in (protocol.AGENT_SPEAK_STARTED, protocol.AGENT_SPEAK_ENDED):
            per.setdefault(e["utterance_id"], []).append(e["type"])
    assert set(per) == confirmed
    for kinds in per.values():
        assert kinds in (
            [protocol.AGENT_SPEAK_STARTED, protocol.AGENT_SPEAK_ENDED],
            [protocol.AGENT_SPEAK_ENDED],
        ), kinds


def _sent(seq: list[tuple[tuple[str, Any], str | None]], what: str) -> int:
    wire = {"interrupt": protocol.AGENT_INTERRUPT, "keep_alive": protocol.SESSION_KEEP_ALIVE}[what]
    return sum(1 for op, _ in seq if op == ("type", wire))


async def _answers(conn: Any, kind: str, count: int) -> None:
    while sum(1 for e in conn.events if e["type"] == kind) < count:
        await conn.next_event()


async def test_random_message_sequences_get_their_replies_in_order(make_client) -> None:
    live = await Live.make(make_client, speech__silence_gap_ms=120)
    loop = asyncio.get_running_loop()

    async def run(seq: list[tuple[tuple[str, Any], str | None]]) -> None:
        sid, token = await live.started_session()
        try:
            conn = await live.connect(sid, token, video_width=128, video_height=128)
            await live.settle()
            for op, _ in seq:
                await _send(live, conn.ws, op)
            # Close every utterance, then a barrier: all replies are in once its ack arrives.
            # The sequence may hold interrupts and keep-alives of its own, so count the answers
            # rather than wait for the first one of each kind.
            await conn.ws.send_json({"type": protocol.AGENT_INTERRUPT})
            await conn.ws.send_json({"type": protocol.SESSION_KEEP_ALIVE})
            await _answers(conn, protocol.AGENT_INTERRUPT_CONFIRMED, _sent(seq, "interrupt") + 1)
            await _answers(conn, ACK, _sent(seq, "keep_alive") + 1)
            replies = [e["type"] for e in conn.events if e["type"] in REPLIES]
            expected = [reply for _, reply in seq if reply is not None] + [ACK]
            assert replies == expected, (seq, conn.events)
            _check_utterances(conn.events)
        finally:
            # A failed example must not keep its device seat, or the next one fails with
            # NO_CAPACITY and hides the first failure.
            await live.api.json("PUT", f"/v1/sessions/{sid}/end")
        assert await conn.closed() == protocol.CLOSE_ENDED

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(seq=st.lists(ops, min_size=1, max_size=10))
    def check(seq: list[tuple[tuple[str, Any], str | None]]) -> None:
        asyncio.run_coroutine_threadsafe(run(seq), loop).result(timeout=60)

    await asyncio.to_thread(check)
