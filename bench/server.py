"""A real `python run.py` in a subprocess, and a client that talks to it: public, for the live
benchmarks and for the tests that need a whole process (kill -9, restart, browser, fuzzing).

`Server` starts run.py on a free 127.0.0.1 port over a temporary data dir (rate limit off,
config/default.yaml otherwise, so recording is on as shipped), waits for /healthz, reads the
process's RSS and open file descriptors from /proc, and stops it with SIGTERM (SIGKILL for the
fault tests). `Client` creates and starts sessions over REST; `Conn` is one session socket that
records every event with the time it arrived, and checks the utterance promises of SPEC §8.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEECH_WAV = ROOT / "tests" / "data" / "speech.wav"
SPEECH_RATE_HZ = 16000
HEALTH_POLL_S = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def speech_pcm() -> np.ndarray:
    """tests/data/speech.wav as int16 at 16 kHz (real speech, with its natural pauses)."""
    with wave.open(str(SPEECH_WAV)) as w:
        assert w.getframerate() == SPEECH_RATE_HZ and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def chunks(pcm: np.ndarray, chunk_ms: int) -> Iterator[bytes]:
    step = SPEECH_RATE_HZ * chunk_ms // 1000
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step].tobytes()


def pctl(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


class Server:
    """One run.py process. `sets` are `--set` flags (section.key → value)."""

    def __init__(self, sets: Mapping[str, object] | None = None, data_dir: Path | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-server-")
        self.data_dir = data_dir or Path(self._tmp.name) / "data"
        self.sets = {"rate_limit_per_minute": 0, "log_level": "warning", **(sets or {})}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_key = ""
        self.log_path = Path(self._tmp.name) / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self, *, umask: int = -1) -> float:
        """Start the process (under `umask` if not -1); returns the monotonic time it was
        spawned."""
        self.port = free_port()
        args = [sys.executable, str(ROOT / "run.py"), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        for key, value in self.sets.items():
            args += ["--set", f"{key}={value}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUMAN_")}
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, umask=umask
            )
        return t0

    async def start(
        self, *, engine_ready: bool = True, limit_s: float = 60, umask: int = -1
    ) -> tuple[float, float]:
        """Spawn and wait; → (seconds to /healthz ok, seconds to engine ready or nan)."""
        t0 = self.spawn(umask=umask)
        healthz_s = engine_s = float("nan")
        deadline = t0 + limit_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"run.py exited {self.proc.returncode}: {self.log_tail()}")
                try:
                    async with http.get(f"{self.base_url}/healthz") as r:
                        body = await r.json() if r.status == 200 else None
                except (aiohttp.ClientError, OSError):
                    body = None
                if body is not None and body.get("status") == "ok":
                    if math.isnan(healthz_s):
                        healthz_s = time.monotonic() - t0
                    if body.get("engine") == "ready":
                        engine_s = time.monotonic() - t0
                        break
                    if not engine_ready:
                        break
                await asyncio.sleep(HEALTH_POLL_S)
            else:
                raise TimeoutError(f"run.py not ready in {limit_s} s: {self.log_tail()}")
        self.api_key = (self.data_dir / "api_key").read_text().strip()
        return healthz_s, engine_s

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def stop(self, limit_s: float = 20) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL after `limit_s`. Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, limit_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        return proc.returncode

    def cleanup(self) -> None:
        self.kill9()
        self._tmp.cleanup()


class Client:
    """REST with the server's key."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = aiohttp.ClientSession(
            base_url=server.base_url, headers={"x-api-key": server.api_key}
        )

    async def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, path, **kwargs) as r:
            return r.status, await r.json(content_type=None)

    async def create_start(self, body: Mapping[str, Any] | None = None) -> tuple[dict, float]:
        """→ (the created session with `ws_uri`, ms from create sent to start answered)."""
        t0 = time.perf_counter()
        status, created = await self.json("POST", "/v1/sessions", json=dict(body or {}))
        assert status == 201, created
        session = created["session"]
        status, started = await self.json("PUT", f"/v1/sessions/{session['session_id']}/start")
        elapsed_ms = (time.perf_counter() - t0) * 1000
        assert status == 200 and started["ws_uri"].startswith("ws"), started
        return {**session, "ws_uri": started["ws_uri"]}, elapsed_ms

    async def session(self, session_id: str) -> dict[str, Any]:
        status, body = await self.json("GET", f"/v1/sessions/{session_id}")
        assert status == 200, body
        return dict(body["session"])

    async def end(self, session_id: str) -> dict[str, Any]:
        status, body = await self.json("PUT", f"/v1/sessions/{session_id}/end")
        assert status == 200, body
        return dict(body["session"])

    async def timeline(self, session_id: str) -> list[dict[str, Any]]:
        async with self.http.get(f"/v1/sessions/{session_id}/timeline") as r:
            if r.status != 200:
                return []
            return [json.loads(line) for line in (await r.text()).splitlines() if line]

    async def aclose(self) -> None:
        await self.http.close()


@dataclass
class Conn:
    """One session socket: a reader task logs (arrival time, event) and media; `check_order`
    counts broken utterance promises (SPEC §8)."""

    ws: aiohttp.ClientWebSocketResponse
    session_id: str
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    media: list[bytes] = field(default_factory=list)
    keep_media: bool = False
    _reader: asyncio.Task[None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, session: Mapping[str, Any], **init: Any
    ) -> Conn:
        ws = await http.ws_connect(session["ws_uri"], max_msg_size=0)
        config = {"session_id": session["session_id"], "access_token": session["access_token"]}
        await ws.send_json({"type": "session.init", "config": {**config, **init}})
        first = await ws.receive_json(timeout=30)
        assert first["type"] == "connection.established", first
        conn = cls(ws, session["session_id"], keep_media="output" in init)
        conn._reader = asyncio.create_task(conn._read(), name=f"bench:{conn.session_id}:read")
        return conn

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.events.append((time.perf_counter(), json.loads(msg.data)))
                self._arrived.set()
            elif msg.type is aiohttp.WSMsgType.BINARY and self.keep_media:
                self.media.append(msg.data)

    async def until(self, kind: str, start: int = 0, limit_s: float = 30) -> tuple[float, dict]:
        """The first event of `kind` at index ≥ `start`."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            for t, event in self.events[start:]:
                if event["type"] == kind:
                    return t, event
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.5)
            if self.ws.closed and not self._arrived.is_set():
                break
        raise TimeoutError(f"{self.session_id}: no {kind} (events: {self.kinds()[-8:]})")

    def kinds(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    async def speak(self, pcm: bytes) -> None:
        await self.ws.send_json({"type": "agent.speak", "audio": base64.b64encode(pcm).decode()})

    async def send(self, kind: str) -> None:
        await self.ws.send_json({"type": kind})

    def errors(self) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == "error"]

    def check_order(self) -> int:
        """Violations: a speak_started or speak_ended twice, ended before started, or a started
        utterance never ended."""
        started: set[str] = set()
        ended: set[str] = set()
        bad = 0
        for _, e in self.events:
            uid = e.get("utterance_id")
            if e["type"] == "agent.speak_started":
                bad += uid in started or uid in ended
                started.add(uid)
            elif e["type"] == "agent.speak_ended":
                bad += uid in ended
                ended.add(uid)
        return bad + len(started - ended)

    async def aclose(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def speak_utterance(conn: Conn, pcm: np.ndarray, *, chunk_ms: int = 200, speed: float = 4):
    """One utterance in `chunk_ms` chunks at `speed`× real time, then `agent.speak_end`;
    → the perf_counter time its first chunk was sent."""
    t_first = time.perf_counter()
    for chunk in chunks(pcm, chunk_ms):
        await conn.speak(chunk)
        await asyncio.sleep(chunk_ms / 1000 / speed)
    await conn.send("agent.speak_end")
    return t_first


async def viewer(
    http: aiohttp.ClientSession, session: Mapping[str, Any], *, compress: int = 0
) -> ViewerCount:
    """Attach one viewer (SPEC §10) to the session; counts what it receives. `compress=15`
    offers permessage-deflate as a browser does (the server declines it)."""
    url = session["viewer_url"].replace("http", "ws", 1).replace("/viewer?", "/viewer/ws?", 1)
    count = ViewerCount(await http.ws_connect(url, max_msg_size=0, compress=compress))
    count.task = asyncio.create_task(count.run(), name=f"bench:{session['session_id']}:viewer")
    return count


@dataclass
class ViewerCount:
    ws: aiohttp.ClientWebSocketResponse
    binary: int = 0
    text: int = 0
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.binary += 1
            elif msg.type is aiohttp.WSMsgType.TEXT:
                self.text += 1

    async def aclose(self) -> None:
        await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def recording_files(data_dir: Path, session_id: str) -> list[str]:
    folder = data_dir / "recordings" / session_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
