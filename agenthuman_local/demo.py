"""`python -m agenthuman_local.demo`: watch a local avatar talk, as a client of a running server.

Creates and starts a session, prints its `viewer_url` ("open this URL and watch it talk"),
connects the session WebSocket, speaks a WAV (the shipped `data/hello.wav` by default) or, with
`--text` and espeak-ng installed, the text; waits for `agent.speak_ended`, idles until Ctrl-C or
`--seconds`, then ends the session. A client of the public API through our own client package
(`client/`, agenthuman-client), so it doubles as its example.

    python run.py &                                  # the server, in another terminal
    python -m agenthuman_local.demo                  # key from data/api_key
    python -m agenthuman_local.demo --text "Hello there" --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shutil
import subprocess
import sys
import wave
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import numpy as np
from agenthuman_client import (
    AgentHuman,
    ApiError,
    ServerError,
    SocketClosed,
    SocketRefused,
    SpeakEnded,
    SpeakStarted,
)
from agenthuman_client.socket import SessionSocket

HELLO_WAV = Path(__file__).resolve().parent / "data" / "hello.wav"
CHUNK_MS = 200
START_WAIT_S = 60.0  # start answers `try_again` while the engine loads (SPEC §5)


class DemoError(Exception):
    pass


def read_wav(data: bytes) -> tuple[bytes, int]:
    """WAV bytes → (PCM s16le mono, sample rate); stereo is mixed down."""
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2:
            raise DemoError(f"the WAV must be 16-bit PCM, not {8 * w.getsampwidth()}-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    return samples.tobytes(), rate


def speech(wav: Path | None, text: str | None) -> tuple[bytes, int]:
    """What to say: `--text` through espeak-ng when it is installed, else the WAV."""
    if text is not None:
        espeak = shutil.which("espeak-ng")
        if espeak is not None:
            out = subprocess.run([espeak, "--stdout", text], capture_output=True, check=True)
            return read_wav(out.stdout)
        print("espeak-ng is not installed: speaking the WAV instead", file=sys.stderr)
    return read_wav((wav or HELLO_WAV).read_bytes())


async def run(
    base_url: str,
    key: str,
    pcm: bytes,
    sample_rate_hz: int,
    seconds: float | None,
    avatar_id: str | None = None,
) -> None:
    async with AgentHuman(key, f"{base_url}/v1") as api:
        # Start retries `try_again` while the engine loads, and NO_CAPACITY per Retry-After.
        session = await api.create_and_start(
            avatar_id, aspect_ratio="4:3", retry_for_s=START_WAIT_S
        )
        try:
            print(
                f"\nOpen this URL and watch it talk:\n\n    {session.raw['viewer_url']}\n",
                flush=True,
            )
            sock = await SessionSocket.connect(session, http=api.http)
            sock.listeners.append(_print_errors)
            try:
                await asyncio.sleep(2.0)  # a moment to open the page before it speaks
                step = sample_rate_hz * CHUNK_MS // 1000 * 2
                for i in range(0, len(pcm), step):
                    await sock.speak(pcm[i : i + step], sample_rate_hz)
                await sock.speak_end()
                await sock.wait_for(SpeakStarted, timeout_s=60)
                print("speaking…", flush=True)
                ended = await sock.wait_for(SpeakEnded, timeout_s=600)
                print(f"spoke {ended.played_ms / 1000:.1f} s; idling (Ctrl-C ends)", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sock.wait_for(SocketClosed, timeout_s=1e9), seconds)
            finally:
                await sock.aclose()
        finally:
            await api.end_session(session.session_id)
            print(f"session {session.session_id} ended", flush=True)


def _print_errors(item: object) -> None:
    if isinstance(item, ServerError):
        print(f"server: {item.code}: {item.error}", file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agenthuman_local.demo", description=__doc__)
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="the server")
    p.add_argument("--key", help="API key (default: read from --key-file)")
    p.add_argument("--key-file", type=Path, default=Path("data/api_key"))
    p.add_argument("--wav", type=Path, help="16-bit PCM WAV to speak (default: hello.wav)")
    p.add_argument("--text", help="say this with espeak-ng (when installed)")
    p.add_argument("--seconds", type=float, help="idle this long after speaking, then end")
    p.add_argument("--avatar", help="avatar id, e.g. one from upload-face (default: the server's)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        key = args.key or args.key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        print(f"no API key: pass --key or start the server once ({args.key_file})", file=sys.stderr)
        return 2
    try:
        pcm, rate = speech(args.wav, args.text)
        asyncio.run(run(args.base_url.rstrip("/"), key, pcm, rate, args.seconds, args.avatar))
    except KeyboardInterrupt:
        pass
    except (
        DemoError,
        ApiError,
        SocketRefused,
        ConnectionError,
        TimeoutError,
        aiohttp.ClientError,
        OSError,
        subprocess.CalledProcessError,
    ) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
