"""`python -m agenthuman_local.demo` against a real `python run.py`: it prints the viewer URL,
the avatar speaks what it was given, and the session ends."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from agenthuman_local.demo import HELLO_WAV, read_wav
from bench.server import ROOT, Client, Server


async def demo(server: Server, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agenthuman_local.demo", "--base-url", server.base_url,
        "--key-file", str(server.data_dir / "api_key"), "--seconds", "0.5", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode()


async def spoken_ms(server: Server, output: str, avatar_id: str | None = None) -> int:
    """The session the demo printed: ended by the client, after one whole utterance (by
    `avatar_id` when given)."""
    url = re.search(r"Open this URL and watch it talk:\s+(\S+)", output)
    assert url, output
    # The viewer token is base64url: it may start with "-".
    sid = re.search(r"/sessions/(sess_\w+)/viewer\?token=[\w-]", url.group(1))
    assert sid, url.group(1)
    client = Client(server)
    try:
        session = await client.session(sid.group(1))
        events = [e for e in await client.timeline(sid.group(1)) if e["t"] == "event"]
    finally:
        await client.aclose()
    assert (session["status"], session["end_reason"]) == ("ended", "client_request")
    if avatar_id is not None:
        assert session["avatar"]["avatar_id"] == avatar_id
    ended = [e for e in events if e["type"] == "agent.speak_ended"]
    assert len(ended) == 1 and not ended[0]["interrupted"]
    return int(ended[0]["played_ms"])


@pytest.mark.slow
async def test_the_demo_speaks_a_wav_then_ends_its_session(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:  # 0.8 s, stereo at 24 kHz: mixed down and resampled
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(24_000)
        t = np.arange(19_200)
        tone = (np.sin(2 * np.pi * 200 * t / 24_000) * 9000).astype("<i2")
        w.writeframes(np.stack([tone, tone], axis=1).tobytes())
    server = Server({"devices.use_cuda": "false", "recording.enabled": "false"})
    try:
        await server.start()
        code, output = await demo(server, "--wav", str(wav))
        assert code == 0, output
        assert abs(await spoken_ms(server, output) - 800) <= 40
        # --avatar names the avatar (not the default, avat_local_ada).
        code, output = await demo(server, "--wav", str(wav), "--avatar", "avat_local_ben")
        assert code == 0, output
        assert abs(await spoken_ms(server, output, "avat_local_ben") - 800) <= 40
        if shutil.which("espeak-ng"):
            code, output = await demo(server, "--text", "Hello")
            assert code == 0, output
            assert await spoken_ms(server, output) > 200
        await server.stop()
    finally:
        server.cleanup()


async def test_without_a_key_it_says_where_the_key_comes_from(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agenthuman_local.demo", "--key-file", str(tmp_path / "none"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 2 and b"--key" in out


def test_the_shipped_wav_is_speech_the_server_accepts() -> None:
    pcm, rate = read_wav(HELLO_WAV.read_bytes())
    assert rate == 16_000 and len(pcm) // 2 > rate  # over a second of 16 kHz mono
