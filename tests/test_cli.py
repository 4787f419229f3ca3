"""`python run.py` as a user runs it: a real process, a real port, real signals."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TEST_CONFIG

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUMAN_")}


def run_py(*args: str, data_dir: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run.py", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python run.py` on a free port; `banner` holds the lines it printed at start."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        port = free_port() if port is None else port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "run.py",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--config",
                str(TEST_CONFIG),
            ],
            cwd=ROOT,
            env=CLEAN_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner = self._read_banner()
        self.key = next(
            line.split()[2] for line in self.banner if line.strip().startswith("API key:")
        )
        # The banner's URL carries the real port (the one --port 0 picked).
        self.base = self.banner[1].split()[-1].removesuffix("/v1")
        self.port = int(self.base.rsplit(":", 1)[1])

    def _read_banner(self, timeout_s: float = 30) -> list[str]:
        # A thread reads, so lines already in the pipe's buffer are never missed by a select().
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        got: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            got.append(line)
            if line.startswith("Press Ctrl-C"):
                return got
        self.proc.kill()
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"no banner; got {got}; stderr: {stderr}")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"x-api-key": self.key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self._pump.join(timeout=5)  # it ends at EOF, once the process has gone
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    srv = Server(data_dir)
    yield srv
    if srv.proc.poll() is None:
        srv.stop(signal.SIGKILL)


def session_row(data_dir: Path, session_id: str) -> tuple[Any, ...]:
    conn = sqlite3.connect(data_dir / "agenthuman.db")
    try:
        row = conn.execute(
            "SELECT started_at, ended_at, end_reason FROM sessions WHERE session_id = ?",
            (session_id,),
        ).fetchone()
    finally:
        conn.close()
    assert row is not None
    return tuple(row)


def test_serve_use_and_sigterm(server: Server, data_dir: Path) -> None:
    assert server.banner[1] == f"  API base URL: {server.base}/v1"
    assert (data_dir / "api_key").read_text().strip() == server.key
    assert any("avat_local_ada (default)" in line for line in server.banner)
    status, health = server.call("GET", "/healthz")
    assert (status, health["status"], health["engine"]) == (200, "ok", "ready")

    status, created = server.call("POST", "/v1/sessions", {"avatar_id": "avat_local_ada"})
    assert status == 201
    live = created["session"]["session_id"]
    status, started = server.call("PUT", f"/v1/sessions/{live}/start")
    assert status == 200
    assert started["ws_uri"] == f"ws://127.0.0.1:{server.port}/v1/sessions/{live}/ws"
    done = server.call("POST", "/v1/sessions", {})[1]["session"]["session_id"]
    server.call("PUT", f"/v1/sessions/{done}/start")
    status, ended = server.call("POST", f"/v1/sessions/{done}/end")
    assert (status, ended["session"]["end_reason"]) == (200, "client_request")

    assert server.stop(signal.SIGTERM) == 0
    assert session_row(data_dir, live)[2] == "server_shutdown"
    assert session_row(data_dir, done)[2] == "client_request"


def test_sigint_is_clean_too(server: Server, data_dir: Path) -> None:
    sid = server.call("POST", "/v1/sessions", {"room": {"platform": "local"}})[1]["session"]
    assert server.stop(signal.SIGINT) == 0
    assert session_row(data_dir, sid["session_id"])[2] == "server_shutdown"


def test_killed_process_sessions_end_with_server_restart(server: Server, data_dir: Path) -> None:
    sid = server.call("POST", "/v1/sessions", {})[1]["session"]["session_id"]
    server.call("POST", f"/v1/sessions/{sid}/start")
    server.stop(signal.SIGKILL)
    assert session_row(data_dir, sid)[1] is None  # left started

    again = Server(data_dir)
    try:
        assert again.key == server.key  # read back from data_dir/api_key
        status, got = again.call("GET", f"/v1/sessions/{sid}")
        assert status == 200
        assert (got["session"]["status"], got["session"]["end_reason"]) == (
            "ended",
            "server_restart",
        )
    finally:
        assert again.stop() == 0


def test_port_zero_prints_the_real_port(data_dir: Path) -> None:
    srv = Server(data_dir, port=0)
    try:
        assert srv.port > 0
        assert srv.call("GET", "/healthz")[0] == 200
        created = srv.call("POST", "/v1/sessions", {"room": {"platform": "local"}})[1]
        assert created["session"]["ws_uri"].startswith(f"ws://127.0.0.1:{srv.port}/")
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "video.fps=5"], "video.fps"),
        (["--set", "video.nope=1"], "video.nope"),
        (["--port", "http"], "port"),
    ],
)
def test_config_errors_exit_2_naming_the_key(data_dir: Path, args: list[str], named: str) -> None:
    result = run_py(*args, data_dir=data_dir)
    assert result.returncode == 2
    assert f"'{named}'" in result.stderr
    assert not data_dir.exists()  # nothing was written


def test_config_error_from_the_environment(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "run.py", "--data-dir", str(data_dir)],
        cwd=ROOT,
        env={**CLEAN_ENV, "AGENTHUMAN_DEVICES__USE_CUDA": "perhaps"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "'devices.use_cuda'" in result.stderr


def test_keys_create_list_revoke(data_dir: Path) -> None:
    created = run_py("keys", "create", "--account", "bob", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ah_live_") and len(key) == 40
    listed = run_py("keys", "list", data_dir=data_dir)
    assert listed.returncode == 0
    assert f"{key[:16]}  bob" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout
    revoked = run_py("keys", "revoke", key[:16], data_dir=data_dir)
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    assert "revoked" in run_py("keys", "list", data_dir=data_dir).stdout.split(key[:16])[1]
    missing = run_py("keys", "revoke", "ah_live_zzzz", data_dir=data_dir)
    assert missing.returncode == 1 and "no active key" in missing.stderr


def test_keys_revoke_refuses_empty_and_ambiguous_prefixes(data_dir: Path) -> None:
    keys = [
        run_py("keys", "create", "--account", name, data_dir=data_dir).stdout.strip()
        for name in ("bob", "eve")
    ]
    for prefix in ("", "  ", "ah_live_", "ah_"):
        refused = run_py("keys", "revoke", prefix, data_dir=data_dir)
        assert refused.returncode == 2, (prefix, refused.stdout, refused.stderr)
        assert "refusing" in refused.stderr and "--all" in refused.stderr
    listed = run_py("keys", "list", data_dir=data_dir).stdout
    assert listed.count("active") >= 2 and "revoked" not in listed
    # The whole key names exactly one key, whatever its prefix shares with others.
    whole = run_py("keys", "revoke", keys[0], data_dir=data_dir)
    assert whole.returncode == 0 and "revoked 1" in whole.stdout, whole.stderr
    listed = run_py("keys", "list", data_dir=data_dir).stdout
    assert "revoked" in listed.split(keys[0][:12])[1].splitlines()[0]
    assert "active" in listed.split(keys[1][:12])[1].splitlines()[0]
    every = run_py("keys", "revoke", "", "--all", data_dir=data_dir)
    assert every.returncode == 0 and "revoked" in every.stdout
    assert "active" not in run_py("keys", "list", data_dir=data_dir).stdout
