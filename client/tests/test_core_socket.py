"""The client core's session socket against a real run.py: every message, the media, an
interrupt, the refusals' close codes, resuming a dropped socket, rgb24 against JPEG.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import speech

from agenthuman_client import (
    AgentHuman,
    AudioFrame,
    ConnectionEstablished,
    InterruptConfirmed,
    KeepAliveAck,
    ServerError,
    SessionSocket,
    SessionState,
    SocketClosed,
    SocketRefused,
    SocketResumed,
    SpeakConfirmed,
    SpeakEnded,
    SpeakStarted,
    VideoFrame,
)

W, H, FPS = 256, 192, 25
FRAME_MS = 1000 // FPS


async def open_socket(api: AgentHuman, **kwargs: object) -> tuple[str, SessionSocket]:
    session = await api.create_and_start()
    init = {"video_width": W, "video_height": H, "fps": FPS}
    init.update(kwargs)  # type: ignore[arg-type]
    sock = await SessionSocket.connect(session, **init)  # type: ignore[arg-type]
    return session.session_id, sock


async def test_speech_events_and_media(api: AgentHuman) -> None:
    session_id, sock = await open_socket(api, output_video="jpeg", output_audio=True)
    try:
        assert sock.established == ConnectionEstablished(session_id, False, W, H, FPS)
        assert sock._ws is not None and sock._ws.compress == 0  # no permessage-deflate
        pcm = speech(2.0)
        for start in range(0, len(pcm), 3200):
            await sock.speak(pcm[start : start + 3200])  # 200 ms chunks, binary
        await sock.speak_end()
        confirmed = await sock.wait_for(SpeakConfirmed)
        started = await sock.wait_for(SpeakStarted, timeout_s=30)
        ended = await sock.wait_for(SpeakEnded, timeout_s=30)
        assert confirmed.utterance_id == started.utterance_id == ended.utterance_id
        assert not ended.interrupted and abs(ended.played_ms - 2000) <= FRAME_MS
        assert ended.pts_ms is not None and ended.pts_ms > started.pts_ms
    finally:
        await sock.aclose()
        await api.end_session(session_id)
    items = [item async for item in sock]
    frames = [i for i in items if isinstance(i, VideoFrame)]
    audio = [i for i in items if isinstance(i, AudioFrame)]
    # Every frame's audio arrives, in order; a JPEG picture may be shed when the encoder is
    # behind (the newest wins, SPEC §10 as proposed), which a cold encoder at the session's
    # first frames sometimes is: at most a couple, never out of order.
    apts = [a.pts_ms for a in audio]
    assert len(audio) >= 2000 // FRAME_MS
    assert all(b - a == FRAME_MS for a, b in zip(apts, apts[1:], strict=False))
    pts = [f.pts_ms for f in frames]
    assert pts == sorted(set(pts)) and set(pts) <= set(apts)
    assert len(frames) >= len(audio) - 2
    assert frames[0].array().shape == (H, W, 3)
    assert all(a.sample_rate == 16000 and len(a.samples()) == 640 for a in audio)
    # The audio the frames inside the utterance carry is the speech that went in.
    inside = [a for a in audio if started.pts_ms <= a.pts_ms < ended.pts_ms]
    out = np.concatenate([a.samples() for a in inside])
    assert abs(len(out) - len(pcm)) <= 640
    n = min(len(out), len(pcm))
    assert np.corrcoef(out[:n].astype(float), pcm[:n].astype(float))[0, 1] > 0.99
    assert isinstance(items[-1], SocketClosed)


async def test_speech_at_another_rate_is_sent_with_its_rate(api: AgentHuman) -> None:
    session_id, sock = await open_socket(api)
    try:
        pcm16 = speech(1.0).astype(float) / 32768
        t = np.arange(24000) / 24000
        pcm24 = np.interp(t, np.arange(len(pcm16)) / 16000, pcm16)
        await sock.speak(pcm24.astype(np.float32), sample_rate=24000)
        await sock.speak_end()
        ended = await sock.wait_for(SpeakEnded, timeout_s=30)
        assert abs(ended.played_ms - 1000) <= FRAME_MS
    finally:
        await sock.aclose()
        await api.end_session(session_id)


async def test_interrupt_listening_keep_alive_and_bad_messages(api: AgentHuman) -> None:
    session_id, sock = await open_socket(api)
    try:
        await sock.speak(speech(5.0))
        started = await sock.wait_for(SpeakStarted, timeout_s=30)
        await asyncio.sleep(0.5)
        await sock.interrupt()
        confirmed = await sock.wait_for(InterruptConfirmed)
        ended = await sock.wait_for(SpeakEnded)
        assert ended.interrupted and ended.utterance_id == started.utterance_id
        assert confirmed.played_ms == ended.played_ms and 0 < ended.played_ms < 5000
        assert confirmed.played_ms + confirmed.dropped_ms == 5000
        await sock.start_listening()
        await sock.stop_listening()
        await sock.keep_alive()
        await sock.wait_for(KeepAliveAck)
        await sock.send_json({"type": "agent.dance"})
        bad = await sock.wait_for(ServerError)
        assert bad.code == "UNKNOWN_TYPE"
        await sock.send_json({"type": "agent.speak", "audio": "!!"})
        await sock.wait_for(ServerError, lambda e: e.code == "INVALID_AUDIO")
        await sock.keep_alive()  # the session lives on after bad messages
        assert sum(isinstance(e, KeepAliveAck) for e in sock.events) <= 2
        await sock.wait_for(KeepAliveAck, after=len(sock.events) - 1)
        ended_rest = await api.end_session(session_id)
        assert ended_rest.end_reason == "client_request"
        await sock.wait_for(SessionState, lambda e: e.state == "ended")
        closed = await sock.wait_for(SocketClosed, timeout_s=10)
        assert closed.code == 4009
    finally:
        await sock.aclose()
        await api.end_session(session_id)


async def test_refusals_carry_the_close_code(api: AgentHuman) -> None:
    session = await api.create_and_start()
    wrong = type(session)(**{**session.__dict__, "access_token": "ah_tok_wrong"})
    with pytest.raises(SocketRefused) as err:
        await SessionSocket.connect(wrong)
    assert (err.value.code, err.value.close_code) == ("UNAUTHORIZED", 4001)
    await api.end_session(session.session_id)
    with pytest.raises(SocketRefused) as err:
        await SessionSocket.connect(session)
    assert (err.value.code, err.value.close_code) == ("SESSION_ENDED", 4009)
    created = await api.create_session()
    not_started = type(created)(
        **{
            **created.__dict__,
            "ws_uri": session.ws_uri.replace(session.session_id, created.session_id),
        }
    )
    with pytest.raises(SocketRefused) as err:
        await SessionSocket.connect(not_started)
    assert (err.value.code, err.value.close_code) == ("SESSION_NOT_STARTED", 4003)
    await api.end_session(created.session_id)


async def test_a_dropped_socket_resumes_within_the_grace(api: AgentHuman) -> None:
    session_id, sock = await open_socket(api, output_audio=True)
    try:
        pcm = speech(3.0)
        await sock.speak(pcm)
        await sock.speak_end()
        await sock.wait_for(SpeakStarted, timeout_s=30)
        await sock.drop()
        await sock.wait_for(SocketResumed, timeout_s=10)
        again = await sock.wait_for(ConnectionEstablished, lambda e: e.resumed)
        assert again.session_id == session_id
        await sock.keep_alive()  # commands go over the new socket
        ended = await sock.wait_for(SpeakEnded, timeout_s=30)
        assert not ended.interrupted and abs(ended.played_ms - 3000) <= FRAME_MS
        assert sock.resumes == 1
        assert (await api.get_session(session_id)).status == "started"
    finally:
        await sock.aclose()
        await api.end_session(session_id)


async def test_rgb24_frames_are_the_jpeg_frames_undecoded(api: AgentHuman) -> None:
    """Two sessions of the deterministic test engine render the same frames: one asks for
    rgb24, one for JPEG; frame by frame they agree up to JPEG's loss."""
    frames: dict[str, dict[int, np.ndarray]] = {}
    for video in ("rgb24", "jpeg"):
        session_id, sock = await open_socket(api, output_video=video)
        got: dict[int, np.ndarray] = {}
        try:
            async for item in sock:
                if isinstance(item, VideoFrame):
                    assert (item.rgb24 is None) == (video == "jpeg")
                    got[item.frame_index] = item.array()
                    if len(got) == 10:
                        break
        finally:
            await sock.aclose()
            await api.end_session(session_id)
        frames[video] = got
    common = sorted(set(frames["rgb24"]) & set(frames["jpeg"]))
    assert len(common) >= 5
    for index in common:
        raw, jpeg = frames["rgb24"][index], frames["jpeg"][index]
        assert raw.shape == (H, W, 3) and raw.std() > 5
        assert np.abs(raw.astype(int) - jpeg.astype(int)).mean() < 4
