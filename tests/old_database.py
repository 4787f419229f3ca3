"""A database as an older version of the server left it, for the migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agenthuman_local.migrations import MIGRATIONS


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """A new SQLite database at `path` after the first `version` migrations, with one account
    (`acct_1`); the caller adds its rows, commits and closes it."""
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:version]:
        for statement in migration:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO accounts VALUES ('acct_1', 'me', 1.0)")
    return conn
