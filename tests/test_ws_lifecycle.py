"""Session lifecycle over the socket (SPEC §8): resume, grace, replace, REST end, expiration,
idle timeout, oversized messages, shutdown, the timeline route — and the utterance promises over
random sequences on a real socket."""

import asyncio
import json
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenthuman_local import keys
from agenthuman_local.sessions.timeline import FRAME_KEYS
from tests.test_ws_helpers import Live, counting_pcm


async def session_body(live, sid):
    return (await live.api.json("GET", f"/v1/sessions/{sid}"))["session"]


async def test_resume_inside_the_grace_gets_missed_events_in_order(make_client):
    live = await Live.make(make_client, ws__reconnect_grace_s=5)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    # Close to the next tick, so the first speaking frame is the one after it (not published
    # at once, before the socket closes).
    live.clock.advance(0.8 / 25)
    await conn.speak(counting_pcm(4000).tobytes())
    await conn.ws.send_json({"type": "agent.speak_end"})
    await conn.barrier()
    await conn.ws.close()
    await live.tick(20)  # the utterance plays out while nobody listens
    again = await live.connect(sid, token, video_width=256, video_height=256)
    assert again.established["resumed"] is True
    assert again.established["video"]["width"] == 128  # the media of the first init carries on
    started = await again.until("agent.speak_started")
    ended = await again.until("agent.speak_ended")
    assert started["utterance_id"] == ended["utterance_id"]
    assert ended["played_ms"] == 250
    frames = [e for e in conn.events if e["type"] == "agent.speak_started"]
    assert frames == []  # nothing was lost to the closed socket, nothing sent twice
    assert (await session_body(live, sid))["status"] == "started"


async def test_outside_the_grace_the_session_ends_websocket_closed(make_client):
    live = await Live.make(make_client, ws__reconnect_grace_s=0.5)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    await conn.ws.close()
    await live.tick(10)
    assert (await session_body(live, sid))["status"] == "started"
    for _ in range(10):
        live.clock.advance(0.1)
        await asyncio.sleep(0.01)
    for _ in range(200):
        body = await session_body(live, sid)
        if body["status"] == "ended":
            break
        await asyncio.sleep(0.02)
    assert (body["status"], body["end_reason"]) == ("ended", "websocket_closed")
    late = await live.raw(f"/v1/sessions/{sid}/ws")
    await late.ws.send_json(
        {"type": "session.init", "config": {"session_id": sid, "access_token": token}}
    )
    assert (await late.next_event())["code"] == "SESSION_ENDED"
    assert await late.closed() == 4009


async def test_a_second_socket_replaces_the_first(make_client):
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    first = await live.connect(sid, token, video_width=128, video_height=128)
    second = await live.connect(sid, token, era="C", path="/v1/ws")
    assert second.established["resumed"] is True
    assert await first.closed() == 4000
    assert first.ws.close_code == 4000  # a clean close handshake, not a dropped connection
    await second.barrier()


async def test_rest_end_tells_the_socket_and_stores_stats(make_client):
    live = await Live.make(make_client)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    await conn.speak(counting_pcm(8000).tobytes())
    await conn.barrier()
    await live.tick(10)
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    state = await conn.until("session.state")
    assert state == {"type": "session.state", "state": "ended", "reason": "client_request"}
    assert await conn.closed() == 4009
    assert conn.ws.close_code == 4009
    # The utterance cut by the end still got its one speak_ended.
    assert [e["interrupted"] for e in conn.of("agent.speak_ended")] == [True]
    stats = (await session_body(live, sid))["stats"]
    assert stats["frames_published"] >= 10
    assert stats["audio_ms_received"] == 500
    assert 0 < stats["audio_ms_played"] < 500
    assert stats["first_frame_latency_ms"] is not None


async def test_expiration_ends_the_session(make_client):
    live = await Live.make(make_client, session__max_duration_s=0.5)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    live.clock.advance(0.5)  # the manager's expiry timer runs on the session clock
    state = await conn.until("session.state")
    assert state["reason"] == "expired"
    assert await conn.closed() == 4009
    assert (await session_body(live, sid))["end_reason"] == "expired"


async def test_idle_timeout_ends_the_session(make_client):
    live = await Live.make(make_client, session__idle_timeout_s=0.5)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    await live.tick(10)
    await conn.barrier()  # a keep-alive resets the idle timer
    await live.tick(10)
    assert (await session_body(live, sid))["status"] == "started"
    for _ in range(10):
        live.clock.advance(0.1)
        await asyncio.sleep(0.01)
    state = await conn.until("session.state")
    assert state["reason"] == "idle_timeout"
    assert await conn.closed() == 4009


async def test_oversized_message_closes_1009_then_the_grace_applies(make_client):
    live = await Live.make(make_client, ws__max_message_mb=0.01)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.ws.send_bytes(bytes(20_000))
    assert await conn.closed() == 1009
    again = await live.connect(sid, token)
    assert again.established["resumed"] is True
    await again.ws.send_bytes(counting_pcm(100).tobytes())
    await again.barrier()
    assert again.of("agent.speak.confirmed")[0]["audio_samples"] == 100


async def test_server_shutdown_ends_live_sessions(make_client, tmp_path):
    live = await Live.make(make_client, virtual=False)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.barrier()
    await live.api.client.close()
    db = sqlite3.connect(tmp_path / "data" / "agenthuman.db")
    row = db.execute(
        "SELECT ended_at, end_reason FROM sessions WHERE session_id = ?", (sid,)
    ).fetchone()
    db.close()
    assert row[0] is not None and row[1] == "server_shutdown"


async def test_timeline_route(make_client):
    live = await Live.make(make_client)
    assert (await live.api.get("/v1/sessions/sess_nope/timeline")).status == 404
    assert (await live.api.get("/v1/sessions/x/timeline", key=None)).status == 401
    sid, token = await live.started_session()
    assert (await live.api.get(f"/v1/sessions/{sid}/timeline")).status == 404  # no init yet
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    await conn.speak(counting_pcm(1000).tobytes())
    await conn.barrier()
    await live.tick(5)
    response = await live.api.get(f"/v1/sessions/{sid}/timeline")
    assert response.content_type == "application/x-ndjson"
    lines = [json.loads(x) for x in (await response.text()).splitlines()]
    frames = [x for x in lines if x["t"] == "frame"]
    assert frames and all(tuple(x) == FRAME_KEYS for x in frames)
    assert [x["frame_index"] for x in frames] == list(range(len(frames)))
    events = [x for x in lines if x["t"] == "event"]
    assert {"t", "pts_ms", "type"} <= set(events[0])
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    after = await live.api.get(f"/v1/sessions/{sid}/timeline")
    assert (await after.text()).count('"t":"frame"') >= len(frames)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("speak"), st.integers(1, 2400)),
        st.tuples(st.just("speak_end")),
        st.tuples(st.just("interrupt")),
        st.tuples(st.just("tick"), st.integers(1, 8)),
    ),
    min_size=1,
    max_size=12,
)


async def test_started_and_ended_exactly_once_over_random_sequences(make_client):
    live = await Live.make(make_client, speech__silence_gap_ms=120)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    loop = asyncio.get_running_loop()
    failures = []

    async def run(seq):
        start = len(conn.events)
        sent: dict[str, int] = {}
        for op in seq:
            if op[0] == "speak":
                await conn.speak(counting_pcm(op[1]).tobytes())
                reply = await conn.until("agent.speak.confirmed")
                sent[reply["utterance_id"]] = sent.get(reply["utterance_id"], 0) + op[1]
            elif op[0] == "tick":
                await live.tick(op[1])
            else:
                await conn.ws.send_json({"type": f"agent.{op[0]}"})
        # Leave nothing live: every utterance of the example must be closed by its end.
        await conn.ws.send_json({"type": "agent.interrupt"})
        await conn.until("agent.interrupt.confirmed")
        events = conn.events[start:]
        per: dict[str, list[str]] = {}
        for e in events:
            if e["type"] in ("agent.speak_started", "agent.speak_ended"):
                per.setdefault(e["utterance_id"], []).append(e["type"])
        assert set(per) == set(sent)
        for kinds in per.values():
            assert kinds in (
                ["agent.speak_started", "agent.speak_ended"],
                ["agent.speak_ended"],
            ), kinds
        playing = None
        cut = None  # the playing utterance an interrupt ended
        for e in events:
            if e["type"] == "agent.speak_started":
                assert playing is None
                playing = e["utterance_id"]
            elif e["type"] == "agent.speak_ended" and e["utterance_id"] == playing:
                if e["interrupted"]:
                    cut = e
                playing = None
            elif e["type"] == "agent.interrupt.confirmed":
                assert playing is None
                if cut is None:
                    assert (e["utterance_id"], e["played_ms"]) == (None, 0)
                else:
                    assert e["utterance_id"] == cut["utterance_id"]
                    assert e["played_ms"] == cut["played_ms"]
                cut = None

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(seq=ops)
    def check(seq):
        fut = asyncio.run_coroutine_threadsafe(run(seq), loop)
        try:
            fut.result(timeout=60)
        except AssertionError as exc:
            failures.append((seq, exc))
            raise

    await asyncio.to_thread(check)
    assert not failures


async def test_a_renderer_that_cannot_load_ends_the_session_with_error(make_client):

    async def broken(app):
        async def make(spec):
            raise FileNotFoundError("avatar files are gone")

        app[keys.renderer_factory_key] = make
        yield

    live = await Live.make(make_client, contexts=[broken])
    sid, token = await live.started_session()
    conn = await live.raw(f"/v1/sessions/{sid}/ws")
    await conn.ws.send_json(
        {"type": "session.init", "config": {"session_id": sid, "access_token": token}}
    )
    assert (await conn.next_event())["code"] == "MEDIA_FAILED"
    assert await conn.closed() == 1011
    for _ in range(100):
        body = await session_body(live, sid)
        if body["status"] == "ended":
            break
        await asyncio.sleep(0.02)
    assert body["end_reason"] == "error"
