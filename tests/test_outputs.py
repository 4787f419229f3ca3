"""The local outputs of live sessions (SPEC §10): the recording decodes back to what the timeline
says was published, /metrics counts what the timelines count, the recording route, the viewer
encodes only while watched, and a recording survives kill -9 of a real run.py."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import av
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from agenthuman_local import keys
from agenthuman_local.paths import recording_path
from agenthuman_local.sessions.live import LiveSession
from agenthuman_local.transports.recording import RecorderSink
from bench.server import speech_pcm
from tests.server_proc import kill_9_while_speaking, session_after_restart, two_servers
from tests.test_ws_helpers import Live, wait_for

FPS = 25
SR = 16_000
SAMPLES_PER_FRAME = SR // FPS
# AAC: the encoder's priming samples, and its frame size.
AAC_PRIMING = AAC_FRAME = 1024
AAC_PRIMING_S = AAC_PRIMING / SR


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * SR))
    return (np.sin(2 * np.pi * 220 * t / SR) * 12000).astype("<i2").tobytes()


async def timeline(live: Live, sid: str) -> list[dict[str, Any]]:
    response = await live.api.get(f"/v1/sessions/{sid}/timeline")
    assert response.status == 200
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def speak_and_end(live: Live, sid: str, token: str, seconds: float) -> list[dict]:
    """One utterance on a wall-clock session, a few idle frames, then the end; → frame lines."""
    conn = await live.connect(sid, token, video_width=160, video_height=128)
    await conn.speak(tone(seconds))
    await conn.ws.send_json({"type": "agent.speak_end"})
    await conn.until("agent.speak_ended")
    await asyncio.sleep(0.2)
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    await conn.ws.close()
    return [line for line in await timeline(live, sid) if line["t"] == "frame"]


def decode(mp4: bytes) -> tuple[list[np.ndarray], list[float], np.ndarray]:
    """(video frames as RGB, their times in s, all audio samples as int16)."""
    images, times, audio = [], [], []
    with av.open(io.BytesIO(mp4)) as container:
        for frame in container.decode(container.streams.video[0]):
            images.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    with av.open(io.BytesIO(mp4)) as container:
        for aframe in container.decode(container.streams.audio[0]):
            audio.append(aframe.to_ndarray().reshape(-1))
    pcm = np.concatenate(audio) if audio else np.zeros(0)
    if pcm.dtype.kind == "f":  # the AAC decoder gives float planar
        pcm = np.clip(np.round(pcm * 32768), -32768, 32767)
    return images, times, pcm.astype(np.int16)


async def test_the_recording_decodes_to_the_timelines_frames_and_audio(make_client) -> None:
    live = await Live.make(make_client, virtual=False, recording__enabled=True)
    sid, token = await live.started_session()
    frames = await speak_and_end(live, sid, token, 1.0)
    response = await live.api.get(f"/v1/sessions/{sid}/recording")
    assert response.status == 200 and response.content_type == "video/mp4"
    images, times, pcm = decode(await response.read())
    assert recording_path(live.api.app[keys.settings_key].data_dir, sid).exists()

    assert len(images) == len(frames) > FPS
    assert images[0].shape == (128, 160, 3)
    # Frame n shows at n/FPS after frame 1: the MP4 muxer shifts every packet after the first
    # video frame by the AAC encoder's priming (recording.py), so frame 0 lasts 64 ms longer.
    steps = np.diff(times[1:])
    assert np.allclose(steps, 1 / FPS, atol=1e-3)
    duration_s = times[-1] + 1 / FPS
    assert abs(duration_s - AAC_PRIMING_S - len(frames) / FPS) <= 1 / FPS
    # The audio decodes to the priming, then every published sample, then under one AAC frame
    # of padding.
    spoken = sum(f["audio_end"] - f["audio_start"] for f in frames)
    heard = pcm[AAC_PRIMING:]
    assert spoken <= len(heard) < spoken + AAC_FRAME, (len(heard), spoken)
    # The tone is in there, loud, for about the second it lasted.
    frames_pcm = heard[:spoken].reshape(-1, SAMPLES_PER_FRAME)
    loud = np.abs(frames_pcm.astype(np.int32)).max(axis=1) > 4000
    assert abs(int(loud.sum()) - FPS) <= 2, int(loud.sum())


async def test_metrics_count_what_the_timelines_count(make_client) -> None:
    live = await Live.make(make_client, virtual=False)
    per_session = []
    for seconds in (0.4, 0.8):
        sid, token = await live.started_session()
        frames = await speak_and_end(live, sid, token, seconds)
        stats = (await live.api.json("GET", f"/v1/sessions/{sid}"))["session"]["stats"]
        per_session.append((frames, stats))
    text = await (await live.api.get("/metrics")).text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    all_frames = [f for frames, _ in per_session for f in frames]
    assert value("agenthuman_frames_published_total") == len(all_frames)
    assert value("agenthuman_frames_late_total") == sum(f["late"] for f in all_frames)
    assert value("agenthuman_frames_dropped_total") == sum(
        s["frames_dropped"] for _, s in per_session
    )
    assert value("agenthuman_render_ms_count") == len(all_frames)
    assert value("agenthuman_first_frame_latency_ms_count") == 2
    received_ms = sum(s["audio_ms_received"] for _, s in per_session)
    assert received_ms == 1200
    assert value("agenthuman_audio_bytes_received_total") == received_ms * 32
    assert value("agenthuman_sessions", status="started") == 0
    assert value("agenthuman_device_capacity", device="cpu") == 4


async def test_stats_are_live_while_started(make_client) -> None:
    live = await Live.make(make_client, virtual=False)
    sid, token = await live.started_session()
    conn = await live.connect(sid, token, video_width=160, video_height=128)
    await conn.speak(tone(0.5))
    await conn.until("agent.speak_started")

    async def published() -> int:
        session = (await live.api.json("GET", f"/v1/sessions/{sid}"))["session"]
        assert session["status"] == "started"
        return int(session["stats"]["frames_published"])

    first = await published()
    assert first > 0
    await asyncio.sleep(0.3)
    assert await published() > first
    listed = (await live.api.json("GET", "/v1/sessions?status=started"))["sessions"]
    assert listed[0]["stats"]["audio_ms_received"] == 500
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    await conn.ws.close()


async def test_the_recording_route_is_404_when_there_is_none_and_per_account(make_client) -> None:
    live = await Live.make(make_client, virtual=False)  # test.yaml: recording off
    sid, token = await live.started_session()
    await speak_and_end(live, sid, token, 0.2)
    off = await live.api.get(f"/v1/sessions/{sid}/recording")
    body = await off.json()
    assert off.status == 404 and body["error"]["code"] == "NOT_FOUND"
    assert "recording.enabled" in body["error"]["suggestion"]
    missing = await live.api.get("/v1/sessions/sess_01JZZZZZZZZZZZZZZZZZZZZZZZ/recording")
    assert (await missing.json())["error"]["code"] == "SESSION_NOT_FOUND"

    recording = await Live.make(make_client, virtual=False, recording__enabled=True)
    sid, token = await recording.started_session()
    not_yet = await recording.api.get(f"/v1/sessions/{sid}/recording")
    assert not_yet.status == 404  # no session.init yet, so no file
    await speak_and_end(recording, sid, token, 0.2)
    assert (await recording.api.get(f"/v1/sessions/{sid}/recording")).status == 200
    other = await recording.api.get(f"/v1/sessions/{sid}/recording", key="ah_test_" + "x" * 32)
    assert other.status == 401
    no_key = await recording.api.get(f"/v1/sessions/{sid}/recording", key=None)
    assert no_key.status == 401


async def test_frames_are_encoded_for_the_viewer_only_while_one_is_connected(make_client) -> None:
    live = await Live.make(make_client, virtual=False)
    hub = live.api.app[keys.viewer_hub_key]
    session = await live.api.create_session()
    sid = session["session_id"]
    await live.api.start_session(sid)
    conn = await live.connect(sid, session["access_token"], video_width=160, video_height=128)
    await conn.speak(tone(0.4))
    await conn.until("agent.speak_started")
    await asyncio.sleep(0.3)
    assert hub.frames_encoded == 0

    url = session["viewer_url"].split("://", 1)[1].split("/", 1)[1]
    page = await live.api.client.ws_connect("/" + url.replace("/viewer?", "/viewer/ws?"))
    states, jpegs = [], 0
    while jpegs < 5 or "ended" not in states:
        msg = await page.receive(timeout=10)
        if isinstance(msg.data, bytes) and msg.data[0] == 1:
            jpegs += 1
            if jpegs == 5:
                await live.api.json("PUT", f"/v1/sessions/{sid}/end")
        elif isinstance(msg.data, str) and json.loads(msg.data)["type"] == "state":
            states.append(json.loads(msg.data)["state"])
    assert hub.frames_encoded >= 5
    assert states[0] == "speaking" and states[-1] == "ended"
    await page.close()
    await conn.ws.close()
    await wait_for(lambda: not hub.has_viewers(sid))
    assert live.api.app[keys.manager_key].live(sid) is None


async def test_the_outputs_attach_to_every_live_session(make_client) -> None:
    live = await Live.make(make_client, recording__enabled=True)
    sid, token = await live.started_session()
    await live.connect(sid, token, video_width=160, video_height=128)
    held = live.api.app[keys.manager_key].live(sid)
    assert isinstance(held, LiveSession) and held.runner is not None
    names = sorted(type(s).__name__ for s in held.runner.sinks)
    assert names == ["MetricsOutput", "RecorderSink", "Timeline", "ViewerOutput"]
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")


async def test_recording_and_a_stalled_viewer_never_hold_the_session_back(make_client) -> None:
    live = await Live.make(make_client, recording__enabled=True)
    session = await live.api.create_session()
    sid = session["session_id"]
    await live.api.start_session(sid)
    await live.connect(sid, session["access_token"], video_width=160, video_height=128)
    url = session["viewer_url"].split("/v1/", 1)[1].replace("/viewer?", "/viewer/ws?")
    stalled = await live.api.client.ws_connect("/v1/" + url)  # connected, never read
    await wait_for(lambda: live.api.app[keys.viewer_hub_key].has_viewers(sid))
    await live.settle()
    await live.tick(100)  # four virtual seconds, far faster than the encoders run
    frames = [line for line in await timeline(live, sid) if line["t"] == "frame"]
    assert len(frames) == 101 and not any(f["late"] for f in frames)
    held = live.api.app[keys.manager_key].live(sid)
    assert isinstance(held, LiveSession) and held.runner is not None
    recorder = next(s for s in held.runner.sinks if isinstance(s, RecorderSink)).recorder
    await live.api.json("PUT", f"/v1/sessions/{sid}/end")
    # Every frame was written (behind, with the previous picture: counted as repeated).
    assert recorder.frames_written == 101 and recorder.frames_dropped == 0
    await stalled.close()


# --- kill -9 ---------------------------------------------------------------------------------


async def test_a_recording_survives_kill_9_and_the_restart_ends_its_session(tmp_path) -> None:
    data_dir = tmp_path / "data"
    sets = {"devices.use_cuda": "false", "recording.enabled": "true"}
    async with two_servers(sets, data_dir) as (first, second):
        speech = speech_pcm()[: 3 * SR].tobytes()
        # 2.3 s: two whole one-second fragments, then some
        sid = await kill_9_while_speaking(first, speech, width=160, height=128, after_s=2.3)
        assert first.proc is not None and first.proc.returncode == -9
        images, times, pcm = decode(recording_path(data_dir, sid).read_bytes())
        assert images[0].shape == (128, 160, 3)
        assert times[-1] - times[0] >= 1.0
        assert len(pcm) >= SR and np.abs(pcm).max() > 1000  # the speech was recorded

        ended = await session_after_restart(second, sid)
        assert (ended["status"], ended["end_reason"]) == ("ended", "server_restart")
        await second.stop()
