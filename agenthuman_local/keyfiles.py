"""The secret files in the data folder (SPEC §2, issue 12): the first API key (`api_key`) and
the viewer secret, each written owner-only (0600) and replaced whole, never truncated in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from agenthuman_local import ids


def write_key_file(path: Path, key: str) -> None:
    """Write the key readable by its owner only (0600), even if the file already existed.

    Through a temporary file (O_EXCL, 0600) renamed over `path`, so a kill part-way leaves the
    old file or the new one, never an empty one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_key_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


class StartupError(Exception):
    """Something in the data folder the server must not start with; the message says what."""


VIEWER_SECRET_BYTES = 32


def read_or_make_secret(path: Path) -> bytes:
    """The viewer secret in `path` (64 hex digits), made (0600) on first use.

    A file that is there but empty, short or not hex refuses the start (StartupError naming the
    file) rather than being replaced: a new secret silently changes every viewer URL already
    handed out, and an empty key would make every token derivable from the session id alone.
    Deleting the file is the way to ask for a new one."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        secret = ids.new_viewer_secret()
        write_key_file(path, secret.hex())
        return secret
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < VIEWER_SECRET_BYTES:
        raise StartupError(
            f"the viewer secret file {path} holds no usable secret ({2 * VIEWER_SECRET_BYTES}"
            f" hex digits expected, found {len(text)} characters"
            f"{', not hex' if text and not secret else ''});"
            " delete it and start again to make a new one (viewer URLs handed out before"
            " stop working)"
        )
    return secret
