"""The SQLite store: every SQL statement the server runs (the schema is `migrations.py`).

This package owns the one aiosqlite connection; the only package that imports aiosqlite. Here is
`Store`: opening the database (PRAGMAs, the SQLite version check), bringing its schema up to date,
and closing it. Its queries come, by what they touch, from mixins over one connection base:

- `connection`: the connection, its lock, write transactions (`_Tx`), how database failures
  become `StorageUnavailable`, and the JSON text columns;
- `accounts`: accounts and API keys;
- `avatars`: avatars and their re-rigs;
- `sessions`: sessions, their status, stats, Daily room and frame size.

Rows are the dataclasses of `records.py`; times are float unix seconds; JSON columns as text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from agenthuman_local.errors import StorageUnavailable
from agenthuman_local.migrations import MIGRATIONS
from agenthuman_local.store.accounts import AmbiguousKeyPrefix, _Accounts
from agenthuman_local.store.avatars import _Avatars
from agenthuman_local.store.sessions import _Sessions

__all__ = ["BUSY_TIMEOUT_MS", "MIN_SQLITE", "AmbiguousKeyPrefix", "Store"]

BUSY_TIMEOUT_MS = 5000
MIN_SQLITE = (3, 35, 0)


class Store(_Accounts, _Avatars, _Sessions):
    """The server's database, opened once by `open`; every query is a method of a mixin."""

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int | None = None) -> Store:
        """Open (creating if needed) the database at `path` and bring its schema up to date."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            # Migration 4 drops a column (ALTER TABLE … DROP COLUMN, SQLite 3.35, 2021).
            raise StorageUnavailable(
                f"this Python's SQLite is {sqlite3.sqlite_version}; the server needs"
                f" {'.'.join(map(str, MIN_SQLITE))} or newer (a newer Python, or one built"
                " against a newer libsqlite3)"
            )
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms or BUSY_TIMEOUT_MS)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            store = cls(conn, path)
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        """Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await conn.close()

    async def _migrate(self) -> None:
        row = await self._fetch_one("PRAGMA user_version")
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StorageUnavailable(
                f"{self.path} has schema version {version}, newer than this server"
                f" ({len(MIGRATIONS)}); upgrade the server"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            async with self._write() as tx:
                for statement in MIGRATIONS[number - 1]:
                    await tx.run(statement)
                await tx.run(f"PRAGMA user_version = {number}")

    async def schema_version(self) -> int:
        row = await self._fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0
