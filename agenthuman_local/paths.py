"""The data folder's layout (SPEC §2, §10): every path under `data_dir` is named here, once.

data_dir/
  agenthuman.db                      the store (SQLite)
  api_key                            the first API key, 0600
  avatars/<avatar_id>/               an uploaded avatar's image, preview and rig
  recordings/<session_id>/
    timeline.jsonl                   one line per published frame and event
    recording.mp4                    the fragmented MP4, when recording is on
"""

from __future__ import annotations

from pathlib import Path

DB_FILE = "agenthuman.db"
API_KEY_FILE = "api_key"
AVATARS_DIR = "avatars"
RECORDINGS_DIR = "recordings"


def db_path(data_dir: Path) -> Path:
    return Path(data_dir) / DB_FILE


def api_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / API_KEY_FILE


def avatar_dir(data_dir: Path, avatar_id: str) -> Path:
    return Path(data_dir) / AVATARS_DIR / avatar_id


def session_dir(data_dir: Path, session_id: str) -> Path:
    return Path(data_dir) / RECORDINGS_DIR / session_id


def timeline_path(data_dir: Path, session_id: str) -> Path:
    return session_dir(data_dir, session_id) / "timeline.jsonl"


def recording_path(data_dir: Path, session_id: str) -> Path:
    """Where a session's MP4 lives: beside its `timeline.jsonl`."""
    return session_dir(data_dir, session_id) / "recording.mp4"
