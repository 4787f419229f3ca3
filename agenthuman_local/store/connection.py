"""The store's connection: one aiosqlite connection and what every query goes through.

One aiosqlite connection (one worker thread) in WAL mode. aiosqlite serialises single calls but
not the statements of a transaction that spans several awaits, so one `asyncio.Lock` guards every
use of the connection; each write runs in its own `BEGIN IMMEDIATE … COMMIT`. Any database
failure other than a bug of ours (locked, busy, disk full, I/O error, closed) surfaces as
`StorageUnavailable` (503) and leaves no half-written row.

`_Base` holds the connection and its plumbing (`_fetch`, `_write`); the query mixins of
`accounts`, `avatars` and `sessions` build on it. Also here: the JSON text columns' encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from agenthuman_local.errors import StorageUnavailable


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _columns(record: Any, json_columns: tuple[str, ...]) -> dict[str, Any]:
    """A record as {column: value}, JSON columns encoded."""
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    for column in json_columns:
        if values[column] is not None:
            values[column] = _dumps(values[column])
    return values


def _decoded(row: sqlite3.Row, json_columns: tuple[str, ...]) -> dict[str, Any]:
    values = dict(row)
    for column in json_columns:
        if values[column] is not None:
            values[column] = json.loads(values[column])
    return values


# What aiosqlite raises (as ValueError) for a connection that is closed or closing.
_AIOSQLITE_CLOSED = frozenset({"Connection closed", "no active connection"})


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Database trouble → StorageUnavailable; our own SQL or constraint bugs stay loud."""
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
        raise
    except sqlite3.DatabaseError as exc:
        raise StorageUnavailable(f"Storage is unavailable: {exc}") from exc
    except ValueError as exc:
        if str(exc) not in _AIOSQLITE_CLOSED:
            raise  # a value we cannot store (a bug upstream), not an outage
        raise StorageUnavailable("Storage is unavailable: the database is closed") from exc


class _Base:
    """The connection, its lock and the plumbing every query of the store goes through."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self._lock = asyncio.Lock()
        self.path = path

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageUnavailable("Storage is unavailable: the database is closed")
        return self._conn

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with _storage_errors():
            async with self._lock:
                return list(await self._connection().execute_fetchall(sql, params))

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._fetch(sql, params)
        return rows[0] if rows else None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_Tx]:
        """One write transaction; rolled back on any exception."""
        with _storage_errors():
            async with self._lock:
                conn = self._connection()
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(conn)
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")


class _Tx:
    """The statements of one write transaction (see `_Base._write`)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; returns the number of rows it changed."""
        async with self._conn.execute(sql, params) as cursor:
            return int(cursor.rowcount)

    async def insert(self, table: str, values: Mapping[str, Any], on_conflict: str = "") -> None:
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        conflict = f" ON CONFLICT {on_conflict}" if on_conflict else ""
        await self.run(
            f"INSERT INTO {table} ({columns}) VALUES ({marks}){conflict}", tuple(values.values())
        )

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None
