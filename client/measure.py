"""Measurements for the client (not tests: nothing here is asserted). Run from client/:

    SERVER_PYTHON=../.venv/bin/python ../.venv-client/bin/python measure.py [--seconds 8]

1. CPU per frame on both sides, `output.video` "jpeg" vs "rgb24", at 1280×720@25, the client
   turning every frame into RGB as the adapters do (server: utime+stime of run.py from /proc;
   client: this process's CPU time, threads included).
2. Pipecat end-to-end latency: the first TTS audio frame into the pipeline → the first speaking
   image written by the output transport (the test harness of tests/test_pipecat.py), p50/p95
   over utterances, at 256×192 and 960×720.
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

import test_pipecat as harness  # noqa: E402
from conftest import speech, start_server, stop_server  # noqa: E402

from agenthuman_client import AgentHuman, SessionSocket, SpeakStarted, VideoFrame  # noqa: E402

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
        await run.send(harness.EndFrame())

    run = await harness.run_pipeline(server, script, limit_s=utterances * 4 + 30)
    assert run.service.socket is not None
    starts = [e.pts_ms for e in run.service.socket.events if isinstance(e, SpeakStarted)]
    out = []
    for t_sent, pts, t_event in zip(sent, starts, started_at, strict=False):
        t_image = next(t for t, f in run.output.video if f.metadata[harness.PTS_KEY] >= pts)
        out.append((t_image - t_sent) * 1000)
        parts["to_speak_started_event"].append((t_event - t_sent) * 1000)
    parts["to_image_pushed_by_service"] += run.service.first_image_latencies_ms
    return out


parts: dict[str, list[float]] = {"to_speak_started_event": [], "to_image_pushed_by_service": []}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--utterances", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            result: dict[str, object] = {}
            for video in ("jpeg", "rgb24") if args.seconds > 0 else ():
                result[f"cpu_{video}_1280x720"] = await cpu_per_frame(server, video, args.seconds)
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
            print(json.dumps(result, indent=2))
        finally:
            stop_server(server)


if __name__ == "__main__":
    asyncio.run(main())
