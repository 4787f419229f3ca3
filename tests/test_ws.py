"""The session WebSocket over a real socket against the real app (SPEC §8): init in both eras,
every rejection code, speech accounting, bad input, interrupts and the output stream."""

import json

import cv2
import numpy as np
import pytest

from agenthuman_local import keys, protocol
from agenthuman_local.engine.base import frame_sample_range
from tests.fakes import MemorySink, jaw_level
from tests.test_ws_helpers import FPS, Live, counting_pcm


@pytest.fixture
async def live(make_client):
    return await Live.make(make_client)


async def test_init_era_b_at_ws_uri(live):
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    assert conn.established == {
        "type": "connection.established",
        "session_id": sid,
        "resumed": False,
        "video": {"width": 128, "height": 128, "fps": FPS},
    }
    await conn.barrier()


async def test_a_client_offering_deflate_gets_no_extension(live):
    sid, _ = await live.started_session()  # compress=15 offers permessage-deflate like a browser
    ws = await live.api.client.ws_connect(f"/v1/sessions/{sid}/ws", compress=15)
    assert ws.compress == 0
    assert "Sec-WebSocket-Extensions" not in ws._response.headers
    await ws.close()


async def test_init_era_c_at_the_fixed_url(live):
    created = await live.api.json("POST", "/v1/sessions", 201, json={"room": {"platform": "local"}})
    session = created["session"]
    conn = await live.connect(
        session["session_id"], session["session_token"], era="C", path="/v1/ws", fps=30
    )
    assert conn.established["session_id"] == session["session_id"]
    assert conn.established["video"] == {"width": 960, "height": 720, "fps": 30}


async def _rejected(conn):
    event = await conn.next_event()
    return event, await conn.closed()


@pytest.mark.parametrize(
    "first",
    [
        "not json",
        json.dumps({"type": "agent.speak", "audio": ""}),
        json.dumps({"type": "session.init", "config": {"session_id": "x"}}),
        json.dumps(
            {
                "type": "session.init",
                "config": {"session_id": "x", "access_token": "t", "video_width": 131},
            }
        ),
    ],
)
async def test_bad_first_message_closes_4002(live, first):
    conn = await live.raw("/v1/ws")
    await conn.ws.send_str(first)
    event, code = await _rejected(conn)
    assert code == protocol.CLOSE_PROTOCOL
    assert event["type"] == "error" and event["error"]


async def test_first_message_wording_is_the_hosted_one(live):
    conn = await live.raw("/v1/ws")
    await conn.ws.send_bytes(b"\x00\x00")
    event, code = await _rejected(conn)
    assert (event["error"], code) == ("First message must be session.init", 4002)


async def test_rejections_in_spec_order(live):
    sid, token = await live.started_session()
    created = await live.api.create_session()
    ended = await live.api.create_session()
    await live.api.put(f"/v1/sessions/{ended['session_id']}/end")

    async def code_for(session_id, tok, path=None):
        conn = await live.raw(path or "/v1/ws")
        init = {"type": "session.init", "session_id": session_id, "session_token": tok}
        await conn.ws.send_json(init)
        event, code = await _rejected(conn)
        return code, event["code"]

    assert await code_for("sess_nope", token) == (4004, "SESSION_NOT_FOUND")
    assert await code_for(sid, token, f"/v1/sessions/{created['session_id']}/ws") == (
        4004,
        "SESSION_NOT_FOUND",
    )
    # A wrong token learns nothing about the state: 4001 for a created or ended session too.
    assert await code_for(created["session_id"], "wrong") == (4001, "UNAUTHORIZED")
    assert await code_for(ended["session_id"], "wrong") == (4001, "UNAUTHORIZED")
    assert await code_for(created["session_id"], created["session_token"]) == (
        4003,
        "SESSION_NOT_STARTED",
    )
    assert await code_for(ended["session_id"], ended["access_token"]) == (4009, "SESSION_ENDED")


async def test_either_token_name_in_either_era(live):
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, era="C", session_token=token)
    assert conn.established["type"] == "connection.established"
    raw = await live.raw(f"/v1/sessions/{sid}/ws")
    await raw.ws.send_json(
        {"type": "session.init", "config": {"session_id": sid, "session_token": token}}
    )
    assert (await raw.next_event())["resumed"] is True


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
async def test_speak_confirmed_counts_at_16k(live, rate):
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await live.settle()
    live.clock.advance(0.8 / FPS)  # close to the next tick: no speech plays before it
    sizes = [4800, 1, 333, 2400, 7]
    for n in sizes:
        await conn.speak(counting_pcm(n).tobytes(), rate)
    await conn.barrier()
    confirmed = conn.of("agent.speak.confirmed")
    assert len(confirmed) == len(sizes)
    assert sum(c["audio_samples"] for c in confirmed) == sum(sizes) * 16000 // rate
    assert len({c["utterance_id"] for c in confirmed}) == 1
    assert confirmed[-1]["buffered_ms"] == sum(c["audio_samples"] for c in confirmed) // 16


async def test_binary_frames_use_the_session_sample_rate(live):
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128, sample_rate=24000)
    await conn.ws.send_bytes(counting_pcm(2400).tobytes())
    await conn.barrier()
    assert conn.of("agent.speak.confirmed")[0]["audio_samples"] == 1600


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "INVALID_JSON"),
        (json.dumps({"type": "agent.fly"}), "UNKNOWN_TYPE"),
        (json.dumps({"type": "agent.speak", "audio": "%%%"}), "INVALID_AUDIO"),
        (json.dumps({"type": "agent.speak", "audio": "AAEC"}), "ODD_BYTE_COUNT"),
        (
            json.dumps({"type": "agent.speak", "audio": "AAA=", "sample_rate": 4000}),
            "INVALID_SAMPLE_RATE",
        ),
        (b"\x00\x01\x02", "ODD_BYTE_COUNT"),
    ],
)
async def test_bad_input_is_answered_and_skipped(live, message, code):
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    if isinstance(message, bytes):
        await conn.ws.send_bytes(message)
    else:
        await conn.ws.send_str(message)
    error = await conn.until("error")
    assert error["code"] == code and error["error"]
    await conn.speak(counting_pcm(160).tobytes())
    await conn.barrier()  # the session lives on
    assert conn.of("agent.speak.confirmed")[0]["audio_samples"] == 160


async def test_buffer_full_over_the_socket(make_client):
    live = await Live.make(make_client, speech__max_buffer_s=1)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128)
    await conn.speak(counting_pcm(12000).tobytes())
    await conn.speak(counting_pcm(8000).tobytes())
    error = await conn.until("error")
    assert error["code"] == "BUFFER_FULL"
    assert len(conn.of("agent.speak.confirmed")) == 1


async def test_interrupt_latency_is_at_most_one_frame_and_accounts_exactly(live):
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=128, video_height=128, output={"audio": True})
    await live.settle()
    sent = counting_pcm(16000 * 2)
    await conn.speak(sent.tobytes())
    await conn.barrier()
    await live.tick(10)
    await conn.ws.send_json({"type": "agent.interrupt"})
    confirmed = await conn.until("agent.interrupt.confirmed")
    await live.tick(3)
    await conn.barrier()
    ended = conn.of("agent.speak_ended")
    assert len(ended) == 1 and ended[0]["interrupted"] is True
    assert confirmed["utterance_id"] == ended[0]["utterance_id"]
    assert confirmed["played_ms"] == ended[0]["played_ms"] > 0
    assert confirmed["played_ms"] + confirmed["dropped_ms"] == len(sent) // 16
    # The timeline shows the interrupt, then at most one more frame carrying speech.
    lines = await timeline(live, sid)
    await conn.media_count(sum(1 for x in lines if x["t"] == "frame"))
    at = next(i for i, x in enumerate(lines) if x.get("type") == "agent.interrupt.confirmed")
    audio = {int.from_bytes(m[12:16], "little"): m[16:] for m in conn.media if m[0] == 2}
    after = [x for x in lines[at:] if x["t"] == "frame"]
    speaking_after = [x for x in after if np.frombuffer(audio[x["frame_index"]], "<i2").any()]
    assert len(after) >= 3 and len(speaking_after) == 0
    heard = sum(
        np.count_nonzero(np.frombuffer(audio[x["frame_index"]], "<i2"))
        for x in lines[:at]
        if x["t"] == "frame"
    )
    assert heard // 16 == confirmed["played_ms"]


async def timeline(live, sid):
    response = await live.api.get(f"/v1/sessions/{sid}/timeline")
    assert response.status == 200
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def test_output_stream_decodes_to_the_timeline_frames_with_their_audio(live):
    sid, token = await live.started_session()
    conn = await live.connect(
        sid,
        token,
        video_width=128,
        video_height=128,
        output={"video": "jpeg", "audio": True},
    )
    await live.settle()
    tone = (np.sin(np.arange(12000) * 2 * np.pi * 220 / 16000) * 14000).astype(np.int16)
    tone[tone == 0] = 1
    await conn.speak(tone.tobytes())
    await conn.ws.send_json({"type": "agent.speak_end"})
    await conn.barrier()
    for i in range(30):
        # Virtual time outruns the JPEG thread; pacing the ticks keeps the sink from dropping.
        await live.tick(1)
        await conn.media_count(2 * (i + 2))
    await conn.barrier()
    frames = [x for x in await timeline(live, sid) if x["t"] == "frame"]
    await conn.media_count(2 * len(frames))
    video, audio = {}, {}
    for m in conn.media:
        kind, pts_ms, index, payload = protocol.unpack_media(m)
        (video if kind == protocol.KIND_VIDEO_JPEG else audio)[index] = (pts_ms, payload)
    assert sorted(video) == sorted(audio) == [f["frame_index"] for f in frames]
    for f in frames:
        assert video[f["frame_index"]][0] == audio[f["frame_index"]][0] == f["pts_ms"]
        assert (f["audio_start"], f["audio_end"]) == frame_sample_range(f["frame_index"], FPS)
        assert len(audio[f["frame_index"]][1]) == 2 * (f["audio_end"] - f["audio_start"])
    stream = np.concatenate([np.frombuffer(audio[f["frame_index"]][1], "<i2") for f in frames])
    start = np.flatnonzero(stream)[0]
    assert np.array_equal(stream[start : start + len(tone)], tone)
    levels = []
    for f in frames:
        img = cv2.imdecode(np.frombuffer(video[f["frame_index"]][1], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (128, 128, 3)
        levels.append(int(img[64, 64, 2]))
    assert max(levels) > jaw_level(0.2)  # the mouth opened while the tone played
    assert abs(levels[0] - jaw_level(0)) <= 3
    events = conn.of("agent.speak_started") + conn.of("agent.speak_ended")
    assert [e["type"] for e in events] == ["agent.speak_started", "agent.speak_ended"]


async def test_two_sessions_never_hear_each_other(live):
    a_sid, a_tok = await live.started_session()
    b_sid, b_tok = await live.started_session()
    a = await live.connect(a_sid, a_tok, video_width=128, video_height=128, output={"audio": True})
    b = await live.connect(b_sid, b_tok, video_width=128, video_height=128, output={"audio": True})
    await live.settle(sessions=2)
    await a.speak(np.full(4000, 1111, np.int16).tobytes())
    await b.speak(np.full(4000, -2222, np.int16).tobytes())
    await a.barrier()
    await b.barrier()
    await live.tick(15, sessions=2)
    await a.barrier()
    await b.barrier()
    heard_a = set(np.unique(np.frombuffer(b"".join(m[16:] for m in a.media), "<i2")).tolist())
    heard_b = set(np.unique(np.frombuffer(b"".join(m[16:] for m in b.media), "<i2")).tolist())
    assert heard_a == {0, 1111}
    assert heard_b == {0, -2222}
    ids_a = {e["utterance_id"] for e in a.of("agent.speak_started")}
    assert ids_a and not ids_a & {e.get("utterance_id") for e in b.events}


async def test_outputs_attach_through_the_output_factories(make_client):
    sinks = {}

    async def output(live_session, runner):
        sinks[live_session.session_id] = MemorySink()
        rooms.append(live_session.init.room)
        return sinks[live_session.session_id]

    async def ctx(app):
        app[keys.outputs_key] = (*app[keys.outputs_key], output)
        yield

    rooms = []
    live = await Live.make(make_client, contexts=[ctx])
    sid, token = await live.started_session()
    await live.connect(sid, token, video_width=128, video_height=128, room={"platform": "local"})
    await live.settle()
    await live.tick(3)
    assert [f.frame_index for f in sinks[sid].frames] == [0, 1, 2, 3]
    assert rooms == [{"platform": "local"}]


async def test_sessions_of_one_avatar_and_size_share_a_renderer(live):
    renderers = live.api.app[keys.renderers_key]
    a_sid, a_tok = await live.started_session()
    b_sid, b_tok = await live.started_session()
    c_sid, c_tok = await live.started_session()
    await live.connect(a_sid, a_tok, video_width=128, video_height=128)
    await live.connect(b_sid, b_tok, video_width=128, video_height=128)
    assert len(renderers) == 1
    await live.connect(c_sid, c_tok, video_width=256, video_height=128)
    assert len(renderers) == 2
    await live.api.json("PUT", f"/v1/sessions/{a_sid}/end")
    assert len(renderers) == 2
    await live.api.json("PUT", f"/v1/sessions/{b_sid}/end")
    await live.api.json("PUT", f"/v1/sessions/{c_sid}/end")
    assert len(renderers) == 0


async def test_the_real_engine_draws_the_session(api):
    session = await api.create_session()
    sid = session["session_id"]
    await api.start_session(sid)
    live = Live(api, None)
    conn = await live.connect(
        sid, session["access_token"], video_width=160, video_height=128, output={"video": "jpeg"}
    )
    await conn.media_count(3)
    kind, _, index, payload = protocol.unpack_media(conn.media[2])
    img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    assert (kind, index, img.shape) == (protocol.KIND_VIDEO_JPEG, 2, (128, 160, 3))
    assert img.std() > 10  # a face, not a flat frame
