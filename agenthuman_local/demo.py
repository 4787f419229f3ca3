"""`python -m agenthuman_local.demo`: watch a local avatar talk, as a client of a running server.

Creates and starts a session, prints its `viewer_url` ("open this URL and watch it talk"),
connects the session WebSocket, speaks a WAV (the shipped `data/hello.wav` by default) or, with
`--text` and espeak-ng installed, the text; waits for `agent.speak_ended`, idles until Ctrl-C or
`--seconds`, then ends the session. Uses only the public API, so it doubles as a client example.

    python run.py &                                  # the server, in another terminal
    python -m agenthuman_local.demo                  # key from data/api_key
    python -m agenthuman_local.demo --text "Hello there" --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import shutil
import subprocess
import sys
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

HELLO_WAV = Path(__file__).resolve().parent / "data" / "hello.wav"
CHUNK_MS = 200
START_RETRIES = 60  # start answers `try_again` while the engine loads (SPEC §5)


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


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as r:
        body = await r.json(content_type=None)
        if r.status >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise DemoError(f"{method} {url}: {r.status} {error.get('message', body)}")
        return body


async def _start(http: aiohttp.ClientSession, base_url: str, session_id: str) -> str:
    for _ in range(START_RETRIES):
        started = await _json(http, "PUT", f"{base_url}/v1/sessions/{session_id}/start")
        if started["ws_uri"] != "try_again":
            return str(started["ws_uri"])
        await asyncio.sleep(1.0)
    raise DemoError("the avatar engine did not finish loading")


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            event = msg.json()
            if event["type"] == "error":
                print(f"server: {event.get('code')}: {event.get('error')}", file=sys.stderr)
            if event["type"] == kind:
                return dict(event)
    raise DemoError(f"the socket closed before {kind} ({ws.close_code})")


async def run(
    base_url: str,
    key: str,
    pcm: bytes,
    sample_rate_hz: int,
    seconds: float | None,
    avatar_id: str | None = None,
) -> None:
    body: dict[str, Any] = {"aspect_ratio": "4:3"}
    if avatar_id:
        body["avatar_id"] = avatar_id
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:
        created = await _json(http, "POST", f"{base_url}/v1/sessions", json=body)
        session = created["session"]
        sid = session["session_id"]
        try:
            ws_uri = await _start(http, base_url, sid)
            print(
                f"\nOpen this URL and watch it talk:\n\n    {session['viewer_url']}\n", flush=True
            )
            async with http.ws_connect(ws_uri, max_msg_size=0) as ws:
                init = {"session_id": sid, "access_token": session["access_token"]}
                await ws.send_json({"type": "session.init", "config": init})
                await _until(ws, "connection.established")
                await asyncio.sleep(2.0)  # a moment to open the page before it speaks
                step = sample_rate_hz * CHUNK_MS // 1000 * 2
                for i in range(0, len(pcm), step):
                    audio = base64.b64encode(pcm[i : i + step]).decode()
                    msg = {"type": "agent.speak", "audio": audio, "sample_rate": sample_rate_hz}
                    await ws.send_json(msg)
                await ws.send_json({"type": "agent.speak_end"})
                await _until(ws, "agent.speak_started")
                print("speaking…", flush=True)
                ended = await _until(ws, "agent.speak_ended")
                print(f"spoke {ended['played_ms'] / 1000:.1f} s; idling (Ctrl-C ends)", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_until(ws, "never"), seconds)
        finally:
            await _json(http, "PUT", f"{base_url}/v1/sessions/{sid}/end")
            print(f"session {sid} ended", flush=True)


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
    except (DemoError, aiohttp.ClientError, OSError, subprocess.CalledProcessError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
