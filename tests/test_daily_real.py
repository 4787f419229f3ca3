"""The real daily-python, each case in its own subprocess with a timeout (it can abort a process).

Offline-safe: the only join uses an invalid URL, which fails in milliseconds; a real host would
take 19–49 s to fail without a network.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("daily")

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "daily_subprocess"


def run_script(name: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=ROOT,
    )


def result_of(name: str) -> dict:
    proc = run_script(name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_raw_init_aborts_the_process() -> None:
    proc = run_script("double_init.py")
    assert proc.returncode == -signal.SIGABRT
    assert "survived" not in proc.stdout


def test_the_guard_makes_repeated_init_safe() -> None:
    assert result_of("init_guard.py") == {"participants": ["local"]}


def test_custom_tracks_and_frame_size_checks() -> None:
    out = result_of("tracks.py")
    assert out["video_track_id"] and out["audio_track_id"]
    assert out["short"].startswith("ValueError: frame size mismatch")
    assert out["rgba"].startswith("ValueError: frame size mismatch")
    # Our join settings pass daily's own validation; a bad one would not.
    assert out["settings"]["inputs"] is None
    assert out["settings"]["publishing"] is None
    assert out["settings"]["subscriptions"] is None
    assert "not a boolean" in out["settings"]["bad_inputs"]


def test_an_invalid_url_fails_fast_without_retries_and_closes_cleanly() -> None:
    out = result_of("join_invalid_url.py")
    assert "InvalidUrl" in out["error"]
    assert out["network"] is False
    assert out["attempts"] == 1
    assert out["events"] == []
    # Generous bounds: the point is "not the 19 s network path", not a speed figure.
    assert out["join_s"] < 10 and out["close_s"] < 10


def test_only_the_transport_imports_daily_and_only_when_it_starts() -> None:
    package = ROOT / "agenthuman_local"
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name == "daily" or name.startswith("daily.") for name in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert set(importers) == {"agenthuman_local/transports/daily.py"}
    code = (
        "import sys, agenthuman_local.transports.daily, agenthuman_local.transports.daily_rooms;"
        "print('daily' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
