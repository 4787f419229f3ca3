"""The data folder's layout (SPEC §2, §10): every path under `data_dir` is named here, once.

data_dir/
  agenthuman.db                      the store (SQLite)
  api_key                            the first API key
  viewer_secret                      the key viewer tokens are derived with (ids.viewer_token)
  avatars/<avatar_id>/               an uploaded avatar's image, preview and rig
  avatars/.<avatar_id>.tmp/          an upload being written (renamed when whole; removed
                                     at start-up when a killed process left one)
  recordings/<session_id>/
    timeline.jsonl                   one line per published frame and event
    recording.mp4                    the fragmented MP4, when recording is on

The folder is private: `make_private` creates it 0700 and tightens what is ours in it (folders
0700, files 0600) at every start; `run.py` sets the umask to 077, so what the server writes later is
private too, whatever the umask it was started under.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DB_FILE = "agenthuman.db"
API_KEY_FILE = "api_key"
VIEWER_SECRET_FILE = "viewer_secret"
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
AVATARS_DIR = "avatars"
RECORDINGS_DIR = "recordings"


def db_path(data_dir: Path) -> Path:
    return Path(data_dir) / DB_FILE


def api_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / API_KEY_FILE


def viewer_secret_path(data_dir: Path) -> Path:
    return Path(data_dir) / VIEWER_SECRET_FILE


def make_private(data_dir: Path) -> int:
    """Create `data_dir` 0700 if missing; make it and what this layout names in it (the
    database and its journals, the key files, everything under avatars/ and recordings/)
    0700 for folders and 0600 for files. Other entries are not ours and are left alone (a
    data_dir pointed at a home folder must not make it unreadable), as are symlinks, a
    symlinked avatars/ or recordings/ included (its target is not walked). An entry whose mode
    cannot be changed (another user's, say a recording a root run left) is a warning, not a
    failed start. → how many modes were tightened."""
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    changed = _tighten(str(data_dir), PRIVATE_DIR_MODE)
    for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", API_KEY_FILE, VIEWER_SECRET_FILE):
        if os.path.lexists(data_dir / name):
            changed += _tighten(str(data_dir / name), PRIVATE_FILE_MODE)
    for top in (AVATARS_DIR, RECORDINGS_DIR):
        if (data_dir / top).is_symlink() or not (data_dir / top).is_dir():
            continue
        changed += _tighten(str(data_dir / top), PRIVATE_DIR_MODE)
        for root, dirs, files in os.walk(data_dir / top):
            changed += sum(_tighten(os.path.join(root, d), PRIVATE_DIR_MODE) for d in dirs)
            changed += sum(_tighten(os.path.join(root, f), PRIVATE_FILE_MODE) for f in files)
    return changed


def _tighten(path: str, mode: int) -> int:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
            return 0
        os.chmod(path, mode)
    except OSError as exc:
        log.warning("could not make %s private: %s", path, exc.strerror or exc)
        return 0
    return 1


def avatar_dir(data_dir: Path, avatar_id: str) -> Path:
    return Path(data_dir) / AVATARS_DIR / avatar_id


def staging_dir(avatar_path: Path) -> Path:
    """Where an upload's files are written before the rename to `avatar_path`."""
    return avatar_path.with_name(f".{avatar_path.name}.tmp")


def stale_staging_dirs(data_dir: Path) -> list[Path]:
    """Staging folders left in avatars/ (by a process killed mid-upload)."""
    avatars = Path(data_dir) / AVATARS_DIR
    if not avatars.is_dir():
        return []
    return sorted(p for p in avatars.glob(".*.tmp") if p.is_dir() and not p.is_symlink())


def session_dir(data_dir: Path, session_id: str) -> Path:
    return Path(data_dir) / RECORDINGS_DIR / session_id


def timeline_path(data_dir: Path, session_id: str) -> Path:
    return session_dir(data_dir, session_id) / "timeline.jsonl"


def recording_path(data_dir: Path, session_id: str) -> Path:
    """Where a session's MP4 lives: beside its `timeline.jsonl`."""
    return session_dir(data_dir, session_id) / "recording.mp4"
