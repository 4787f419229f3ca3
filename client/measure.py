"""Measurements for the client (not tests: nothing here is asserted). Run from client/:

    SERVER_PYTHON=../.venv/bin/python ../.venv-client/bin/python measure.py [--seconds 8]
        [--interrupts 12] [--only-interrupts] [--livekit-interrupts 8]

1. CPU per frame on both sides, `output.video` "jpeg" vs "rgb24", at 1280×720@25, the client
   turning every frame into RGB as the adapters do (server: utime+stime of run.py from /proc;
   client: this process's CPU time, threads included).
2. Pipecat interrupt: an InterruptionFrame mid-utterance → the first image after the cut
   written by the output transport (min/p50/max over `--interrupts`; `--only-interrupts`).
3. Pipecat end-to-end latency: the first TTS audio frame into the pipeline → the first speaking
   image written by the output transport (the test harness, tests/pipecat_harness.py), p50/p95
   over utterances, at 256×192 and 960×720.
4. LiveKit interrupt, through the framework's AvatarRunner (the mock room of
   tests/livekit_harness.py; what the runner's audio track plays is read back from it): ms of
   speech that still played after `clear_buffer`, and the reported position minus what played,
   with the generator clearing the runner's queue and without (the framework's own runner
   alone); `--livekit-interrupts`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "tests"))

import livekit_harness as lk  # noqa: E402
import pipecat_harness as harness  # noqa: E402
from conftest import speech, start_server, stop_server  # noqa: E402
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner  # noqa: E402
from pipecat.frames.frames import EndFrame, InterruptionFrame  # noqa: E402

from agenthuman_client import (  # noqa: E402
    AgentHuman,
    SessionSocket,
    SpeakEnded,
    SpeakStarted,
    VideoFrame,
)
from agenthuman_client.livekit import AgentHumanAudioOutput  # noqa: E402
from agenthuman_client.pipecat import PTS_KEY  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def cpu_per_frame(server, video: str, seconds: float) -> dict[str, float]:
    async with AgentHuman(server.api_key, server.base_url) as api:
        session = await api.create_and_start()
        sock = await SessionSocket.connect(
            session, video_width=1280, video_height=720, fps=25, output_video=video
        )
        frames = 0
        try:
            async for item in sock:  # warm up: the first second
                if isinstance(item, VideoFrame) and item.frame_index >= 25:
                    break
            s0, c0, t0 = proc_cpu_s(server.proc.pid), time.process_time(), time.monotonic()
            async for item in sock:
                if isinstance(item, VideoFrame):
                    item.array()
                    frames += 1
                    if time.monotonic() - t0 >= seconds:
                        break
            s1, c1, t1 = proc_cpu_s(server.proc.pid), time.process_time(), time.monotonic()
        finally:
            await sock.aclose()
            await api.end_session(session.session_id)
    return {
        "fps": round(frames / (t1 - t0), 1),
        "server_ms_per_frame": round((s1 - s0) * 1000 / frames, 2),
        "client_ms_per_frame": round((c1 - c0) * 1000 / frames, 2),
    }


async def latencies(server, width: int, height: int, utterances: int) -> list[float]:
    harness.W, harness.H = width, height
    sent: list[float] = []
    started_at: list[float] = []

    async def script(run: harness.Run) -> None:
        await harness.wait_idle_frames(run, 15)
        assert run.service.socket is not None
        run.service.socket.listeners.append(
            lambda item: isinstance(item, SpeakStarted) and started_at.append(time.perf_counter())
        )
        for _ in range(utterances):
            sent.append(time.perf_counter())
            await run.say(speech(1.0))
            await asyncio.sleep(2.0)
        await run.send(EndFrame())

    run = await harness.run_pipeline(server, script, limit_s=utterances * 4 + 30)
    assert run.service.socket is not None
    starts = [e.pts_ms for e in run.service.socket.events if isinstance(e, SpeakStarted)]
    out = []
    for t_sent, pts, t_event in zip(sent, starts, started_at, strict=False):
        t_image = next(t for t, f in run.output.video if f.metadata[PTS_KEY] >= pts)
        out.append((t_image - t_sent) * 1000)
        parts["to_speak_started_event"].append((t_event - t_sent) * 1000)
    parts["to_image_pushed_by_service"] += run.service.first_image_latencies_ms
    return out


parts: dict[str, list[float]] = {"to_speak_started_event": [], "to_image_pushed_by_service": []}


async def interrupt_latencies(server, interrupts: int) -> dict[str, list[float]]:
    """InterruptionFrame into the pipeline mid-utterance → the first image after the cut
    (pts ≥ the interrupted speak_ended's pts) written by the output transport; with the
    interrupted speak_ended's arrival and the service's push of that image."""
    harness.W, harness.H = 256, 192
    marks: list[float] = []
    ended_at: dict[str, float] = {}

    def on_item(item: object) -> None:
        if isinstance(item, SpeakEnded) and item.interrupted:
            ended_at[item.utterance_id] = time.perf_counter()

    async def script(run: harness.Run) -> None:
        await harness.wait_idle_frames(run, 15)
        sock = run.service.socket
        assert sock is not None
        sock.listeners.append(on_item)
        for _ in range(interrupts):
            after = len(sock.events)
            await run.say(speech(4.0), stop=False)
            await sock.wait_for(SpeakStarted, timeout_s=30, after=after)
            await asyncio.sleep(0.8 + 0.4 * np.random.random())  # any phase of the frame clock
            marks.append(time.perf_counter())
            await run.send(InterruptionFrame())
            await sock.wait_for(SpeakEnded, timeout_s=10, after=after)
            await asyncio.sleep(0.6)
        await run.send(EndFrame())

    run = await harness.run_pipeline(server, script, limit_s=interrupts * 6 + 30)
    sock = run.service.socket
    assert sock is not None
    ended = [e for e in sock.events if isinstance(e, SpeakEnded) and e.interrupted]
    out: dict[str, list[float]] = {"to_image_written": [], "to_speak_ended_event": []}
    for mark, e in zip(marks, ended, strict=False):
        t_image = next(
            t for t, f in run.output.video if t >= mark and f.metadata[PTS_KEY] >= e.pts_ms
        )
        out["to_image_written"].append((t_image - mark) * 1000)
        out["to_speak_ended_event"].append((ended_at[e.utterance_id] - mark) * 1000)
    out["to_image_pushed_by_service"] = list(run.service.interrupt_latencies_ms)
    return out


async def livekit_interrupts(server, interrupts: int, clear: bool) -> dict[str, list[float]]:
    """clear_buffer mid-utterance through the runner: speech out after it, position error."""
    out: dict[str, list[float]] = {"speech_after_clear": [], "position_minus_heard": []}
    out["unheard_cleared"] = []
    async with AgentHuman(server.api_key, server.base_url) as api:
        session_id, sock, gen = await lk.open_generator(api)
        recorder = lk.TrackRecorder()
        audio_out = AgentHumanAudioOutput(gen, sample_rate=lk.RATE)
        runner = AvatarRunner(
            recorder.room(),
            audio_recv=audio_out,
            video_gen=gen,
            options=AvatarOptions(lk.W, lk.H, lk.FPS, lk.RATE, 1),
        )
        if clear:
            gen.attach_av_sync(runner.av_sync)
        finished: list = []
        audio_out.on("playback_finished", finished.append)
        await runner.start()
        try:
            for i in range(interrupts):
                pcm = lk.marked(speech(4.0))
                t_start = time.perf_counter()
                for frame in lk.frames_of(pcm):
                    await audio_out.capture_frame(frame)
                audio_out.flush()  # as the agent does at the end of its TTS
                after = len(sock.events)
                await sock.wait_for(SpeakStarted, timeout_s=30, after=after)
                await asyncio.sleep(0.8 + 0.4 * np.random.random())
                t_clear = time.perf_counter()
                audio_out.clear_buffer()
                for _ in range(100):
                    if len(finished) > i:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.6)
                heard = recorder.played_ms(pcm, t_start)
                loud = [f for t, f in recorder.frames if t > t_clear]
                after_ms = 0.0
                if any(np.any(f) for f in loud):
                    joined = np.concatenate(loud)
                    after_ms = (np.flatnonzero(joined)[-1] + 1) * 1000 / lk.RATE
                out["speech_after_clear"].append(after_ms)
                out["position_minus_heard"].append(finished[i].playback_position * 1000 - heard)
                if clear:
                    out["unheard_cleared"].append(gen.interrupts[-1].unheard_ms)
        finally:
            await runner.aclose()
            await recorder.aclose()
            await sock.aclose()
            await api.end_session(session_id)
    return out


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 1),
        "p50": round(float(np.percentile(values, 50)), 1),
        "max": round(max(values), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--utterances", type=int, default=12)
    parser.add_argument("--interrupts", type=int, default=12)
    parser.add_argument("--only-interrupts", action="store_true")
    parser.add_argument("--livekit-interrupts", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            result: dict[str, object] = {"loadavg_start": os.getloadavg()}
            for clear in (False, True) if args.livekit_interrupts else ():
                found = await livekit_interrupts(server, args.livekit_interrupts, clear)
                for name, values in found.items():
                    key = f"livekit_{'cleared' if clear else 'runner_alone'}_{name}_ms"
                    result[key] = summary(values)
            if args.interrupts:
                for name, values in (await interrupt_latencies(server, args.interrupts)).items():
                    result[f"interrupt_{name}_ms"] = summary(values)
            if args.only_interrupts:
                result["loadavg_end"] = os.getloadavg()
                print(json.dumps(result, indent=2))
                return
            cpu: dict[str, dict[str, float]] = {}
            for video in ("jpeg", "rgb24", "jpeg", "rgb24") if args.seconds > 0 else ():
                # Twice each, interleaved: the machine may be shared; the ratio is the figure.
                got = await cpu_per_frame(server, video, args.seconds)
                for key, value in got.items():
                    cpu.setdefault(video, {}).setdefault(key, 0.0)
                    cpu[video][key] += value / 2
            for video, got in cpu.items():
                result[f"cpu_{video}_1280x720"] = {k: round(v, 2) for k, v in got.items()}
            if cpu:
                for side in ("server", "client"):
                    key = f"{side}_ms_per_frame"
                    result[f"cpu_ratio_jpeg_over_rgb24_{side}"] = round(
                        cpu["jpeg"][key] / cpu["rgb24"][key], 2
                    )
            for width, height in ((256, 192), (960, 720)):
                lat = await latencies(server, width, height, args.utterances)
                result[f"latency_ms_{width}x{height}"] = {
                    "n": len(lat),
                    "p50": round(float(np.percentile(lat, 50)), 1),
                    "p95": round(float(np.percentile(lat, 95)), 1),
                }
            for name, values in parts.items():
                result[f"latency_part_{name}_ms"] = {
                    "p50": round(float(np.percentile(values, 50)), 1),
                    "p95": round(float(np.percentile(values, 95)), 1),
                }
            result["loadavg_end"] = os.getloadavg()
            print(json.dumps(result, indent=2))
        finally:
            stop_server(server)


if __name__ == "__main__":
    asyncio.run(main())
