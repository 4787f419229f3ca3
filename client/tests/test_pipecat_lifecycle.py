"""How `AgentHumanVideoService`'s session ends and fails in a real Pipecat pipeline against a
real run.py: an `EndFrame` (its drain bounded), a `CancelFrame`, a dropped socket, errors as
error frames with our code, `RATE_LIMITED` as a warning, size and fps from the transport's
params (the pipeline: `pipecat_harness`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytest.importorskip("pipecat")

from conftest import RunningServer, speech, start_server, stop_server  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    TTSAudioRawFrame,
)
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat_harness import (  # noqa: E402
    FRAME_MS,
    FRAME_SAMPLES,
    RATE,
    RecordingOutput,
    Run,
    run_pipeline,
    wait_idle_frames,
)

from agenthuman_client import AgentHuman, ServerError, SpeakEnded, SpeakStarted  # noqa: E402
from agenthuman_client.pipecat import AgentHumanErrorFrame, AgentHumanVideoService  # noqa: E402


async def test_end_frame_after_the_last_chunk_plays_it_all(
    server: RunningServer, api: AgentHuman
) -> None:
    pcm = speech(2.0)

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(pcm, stop=False)
        await run.send(EndFrame())

    run = await run_pipeline(server, script)
    sock = run.service.socket
    assert sock is not None
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert not ended.interrupted and abs(ended.played_ms - 2000) <= FRAME_MS
    assert abs(len(run.output.audio_samples()) - len(pcm)) <= FRAME_SAMPLES
    assert len(run.down.of(BotStoppedSpeakingFrame)) == 1
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_end_frame_waits_for_queued_speech_no_longer_than_end_timeout(
    server: RunningServer, api: AgentHuman
) -> None:
    """The drain on EndFrame is bounded: 6 s queued, `end_timeout_s=1` → the pipeline ends
    about 1 s later, with the session ended, not after the whole utterance."""

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(speech(6.0), chunk_ms=200, stop=False)
        run.marks["end"] = time.perf_counter()
        await run.send(EndFrame())

    run = await run_pipeline(server, script, end_timeout_s=1.0)
    waited = time.perf_counter() - run.marks["end"]
    assert 0.9 <= waited < 1.0 + 2.0, waited
    assert len(run.output.audio_samples()) / RATE < 3.0  # it did not play the 6 s
    sock = run.service.socket
    assert sock is not None
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_cancel_ends_the_session_at_once(server: RunningServer, api: AgentHuman) -> None:
    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(speech(3.0), stop=False)
        await run.send(CancelFrame())

    t0 = time.perf_counter()
    run = await run_pipeline(server, script)
    assert time.perf_counter() - t0 < 3.0 + 2.0  # not the 3 s of speech plus an end wait
    sock = run.service.socket
    assert sock is not None
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_a_socket_dropped_mid_utterance_resumes(server: RunningServer) -> None:
    pcm = speech(3.0)

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(pcm)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakStarted, timeout_s=30)
        await asyncio.sleep(0.5)
        await sock.drop()
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await asyncio.sleep(0.3)
        await run.send(EndFrame())

    run = await run_pipeline(server, script)
    sock = run.service.socket
    assert sock is not None and sock.resumes == 1
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert not ended.interrupted and abs(ended.played_ms - 3000) <= FRAME_MS
    assert not run.up.frames, run.up.frames
    # What was published while no socket was attached never came back: less audio, not more.
    assert 1000 < len(run.output.audio_samples()) / RATE * 1000 <= 3000 + FRAME_MS
    assert len(run.down.of(BotStoppedSpeakingFrame)) >= 1


@pytest.mark.parametrize("case", ["bad_key", "server_down"])
async def test_errors_become_error_frames_with_our_code(server: RunningServer, case: str) -> None:
    async def script(run: Run) -> None:
        await asyncio.sleep(0.2)
        await run.send(TTSAudioRawFrame(speech(0.2).tobytes(), RATE, 1))
        await run.send(EndFrame())

    if case == "bad_key":
        run = await run_pipeline(server, script, api_key="ah_live_" + "x" * 32, limit_s=15)
        expected = "UNAUTHORIZED"
    else:
        run = await run_pipeline(server, script, base_url="http://127.0.0.1:9/v1", limit_s=15)
        expected = "SERVER_UNREACHABLE"
    errors = [f for _, f in run.up.of(ErrorFrame)]
    assert errors and isinstance(errors[0], AgentHumanErrorFrame)
    assert errors[0].code == expected


async def test_rate_limited_is_a_warning_not_an_error_frame(tmp_path: Path) -> None:
    """10 ms TTS chunks past the server's message budget: paced, all played, no ErrorFrame."""
    server = start_server(tmp_path / "data", tmp_path / "server.log", "ws.max_messages_per_s=20")

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 5)
        await run.say(speech(1.0), chunk_ms=10)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await run.send(EndFrame())

    try:
        run = await run_pipeline(server, script, limit_s=60)
    finally:
        stop_server(server)
    sock = run.service.socket
    assert sock is not None
    assert [e.code for e in sock.events if isinstance(e, ServerError)][:1] == ["RATE_LIMITED"]
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert not ended.interrupted and abs(ended.played_ms - 1000) <= FRAME_MS
    assert not run.up.frames, run.up.frames


def test_size_and_fps_come_from_the_transport_params() -> None:
    params = TransportParams(
        video_out_enabled=True, video_out_width=640, video_out_height=480, video_out_framerate=30
    )
    service = AgentHumanVideoService(api_key="k", transport=RecordingOutput(params))
    assert (service._width, service._height, service._fps) == (640, 480, 30)
