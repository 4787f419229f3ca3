"""A real `run.py` on 127.0.0.1 for the client's tests (config/test.yaml, a temporary data dir).

The server runs in its own interpreter: `SERVER_PYTHON` if set, else the repository's
`.venv/bin/python` (what `make install` builds), else this interpreter. The client's tests may
run from a venv that has only the client and the frameworks, never torch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agenthuman_client import AgentHuman

ROOT = Path(__file__).resolve().parents[2]
SPEECH_WAV = ROOT / "tests" / "data" / "speech.wav"


def server_python() -> str:
    if os.environ.get("SERVER_PYTHON"):
        return os.environ["SERVER_PYTHON"]
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    port: int
    api_key: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_server(data_dir: Path, log: Path, *sets: str, engine_ready: bool = True) -> RunningServer:
    """run.py with `--set` items; returns at /healthz ok (and, with `engine_ready`, once the
    engine is ready)."""
    port = free_port()
    args = [server_python(), str(ROOT / "run.py"), "--config", str(ROOT / "config" / "test.yaml")]
    args += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    for item in sets:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUMAN_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"run.py exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                body = json.loads(r.read())
            if body.get("status") == "ok" and (body.get("engine") == "ready" or not engine_ready):
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        raise TimeoutError(f"run.py not ready: {log.read_text()[-3000:]}")
    return RunningServer(proc, port, (data_dir / "api_key").read_text().strip(), log)


def stop_server(server: RunningServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(10)


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    with tempfile.TemporaryDirectory(prefix="agenthuman-client-") as tmp:
        running = start_server(Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            yield running
        finally:
            stop_server(running)


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[AgentHuman]:
    async with AgentHuman(server.api_key, server.base_url) as client:
        yield client


def speech(seconds: float | None = None) -> np.ndarray:
    """tests/data/speech.wav (16 kHz int16), cut to its first `seconds`."""
    with wave.open(str(SPEECH_WAV)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()
    return pcm if seconds is None else pcm[: int(16000 * seconds)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The LiveKit tests run last. After them the Pipecat caption-timing test failed in 4 of 5
    whole runs (a word 217 ms early: the avatar's audio came out with a gap) and passed in every
    run with them last or without them. Our guess, not proven: the LiveKit FFI runtime they start
    (native threads and sources) stays in this process and competes with timing-sensitive tests."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_livekit"))
