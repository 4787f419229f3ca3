"""The SQLite store: every SQL statement the server runs (the schema is `migrations.py`).

One aiosqlite connection (one worker thread) in WAL mode. aiosqlite serialises single calls but
not the statements of a transaction that spans several awaits, so one `asyncio.Lock` guards every
use of the connection; each write runs in its own `BEGIN IMMEDIATE … COMMIT`. Any database
failure other than a bug of ours (locked, busy, disk full, I/O error, closed) surfaces as
`StorageUnavailable` (503) and leaves no half-written row. The only module that imports aiosqlite.

Rows are the dataclasses of `records.py`; times are float unix seconds; JSON columns as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from agenthuman_local import ids
from agenthuman_local.errors import StorageUnavailable
from agenthuman_local.migrations import MIGRATIONS
from agenthuman_local.records import STAT_KEYS, ApiKey, Avatar, Session
from agenthuman_local.sessions.state import SessionState

BUSY_TIMEOUT_MS = 5000
MIN_SQLITE = (3, 35, 0)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# Columns that hold JSON text.
_SESSION_JSON = ("metadata", "daily_room", "stats")
_AVATAR_JSON = ("tags", "rig")


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


def _session_from_row(row: sqlite3.Row) -> Session:
    return Session(**_decoded(row, _SESSION_JSON))


def _avatar_from_row(row: sqlite3.Row) -> Avatar:
    values = _decoded(row, _AVATAR_JSON)
    return Avatar(
        **values | {"tags": tuple(values["tags"]), "is_public": bool(values["is_public"])}
    )


async def _record_rerig(tx: _Tx, avatar_id: str, version: int, outcome: str) -> None:
    await tx.insert(
        "rig_updates",
        {"avatar_id": avatar_id, "tried_version": version, "outcome": outcome, "at": time.time()},
        on_conflict="(avatar_id) DO UPDATE SET tried_version = excluded.tried_version,"
        " outcome = excluded.outcome, at = excluded.at",
    )


_STATUS_SQL = {
    SessionState.CREATED: "started_at IS NULL AND ended_at IS NULL",
    SessionState.STARTED: "started_at IS NOT NULL AND ended_at IS NULL",
    SessionState.ENDED: "ended_at IS NOT NULL",
}


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


class AmbiguousKeyPrefix(Exception):
    """A key prefix given to revoke matches more than one active key."""

    def __init__(self, prefix: str, matches: int) -> None:
        super().__init__(f"{prefix!r} matches {matches} active keys")
        self.prefix = prefix
        self.matches = matches


class Store:
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self._lock = asyncio.Lock()
        self.path = path

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

    # -- plumbing ---------------------------------------------------------------------------

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

    # -- accounts and API keys ----------------------------------------------------------------

    async def ensure_account(self, name: str) -> str:
        """The id of the account called `name`, created if missing."""
        async with self._write() as tx:
            row = await tx.fetch_one("SELECT account_id FROM accounts WHERE name = ?", (name,))
            if row is not None:
                return str(row["account_id"])
            account_id = ids.new_id("acct")
            await tx.run(
                "INSERT INTO accounts (account_id, name, created_at) VALUES (?, ?, ?)",
                (account_id, name, time.time()),
            )
            return account_id

    async def add_api_key(self, account_id: str, key: str) -> ApiKey:
        """Store a key by its SHA-256 and its prefix (`ids.KEY_PREFIX_LEN` characters; keys made
        before that was 16 keep their 12); the key itself is not kept."""
        now = time.time()
        prefix = key[: ids.KEY_PREFIX_LEN]
        async with self._write() as tx:
            await tx.run(
                "INSERT INTO api_keys (key_hash, prefix, account_id, created_at)"
                " VALUES (?, ?, ?, ?)",
                (ids.secret_hash(key), prefix, account_id, now),
            )
            row = await tx.fetch_one(
                "SELECT name FROM accounts WHERE account_id = ?", (account_id,)
            )
        return ApiKey(prefix, account_id, row["name"] if row else "", now, None)

    async def has_api_keys(self) -> bool:
        return await self._fetch_one("SELECT 1 FROM api_keys LIMIT 1") is not None

    async def account_for_key(self, key: str) -> str | None:
        """The account of an active (not revoked) key, else None."""
        row = await self._fetch_one(
            "SELECT account_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            (ids.secret_hash(key),),
        )
        return str(row["account_id"]) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._fetch(
            "SELECT k.prefix, k.account_id, a.name, k.created_at, k.revoked_at"
            " FROM api_keys k JOIN accounts a USING (account_id) ORDER BY k.created_at"
        )
        return [ApiKey(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def revoke_api_keys(self, prefix: str, *, at_most: int | None = None) -> int:
        """Revoke the active keys whose stored prefix starts with `prefix` — or, given a whole
        key, that key — and return how many. With `at_most`, a prefix matching more active keys
        revokes nothing and raises `AmbiguousKeyPrefix` (a typed prefix must not take others)."""
        if len(prefix) > ids.KEY_PREFIX_LEN:
            where, arg = "key_hash = ?", ids.secret_hash(prefix)
        else:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where, arg = "prefix LIKE ? ESCAPE '\\'", escaped + "%"
        async with self._write() as tx:
            row = await tx.fetch_one(
                f"SELECT count(*) AS n FROM api_keys WHERE {where} AND revoked_at IS NULL", (arg,)
            )
            matches = int(row["n"]) if row else 0
            if at_most is not None and matches > at_most:
                raise AmbiguousKeyPrefix(prefix, matches)
            return await tx.run(
                f"UPDATE api_keys SET revoked_at = ? WHERE {where} AND revoked_at IS NULL",
                (time.time(), arg),
            )

    # -- avatars --------------------------------------------------------------------------------

    async def sync_shipped_avatars(self, avatars: Iterable[Avatar]) -> None:
        """Insert or refresh the public avatars that ship with the server (keeps created_at)."""
        async with self._write() as tx:
            for avatar in avatars:
                values = _columns(avatar, _AVATAR_JSON)
                refreshed = [c for c in values if c not in ("avatar_id", "created_at")]
                await tx.insert(
                    "avatars",
                    values,
                    on_conflict="(avatar_id) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in refreshed),
                )

    async def create_avatar(
        self,
        *,
        account_id: str,
        name: str,
        kind: str = "photo",
        image_path: str | None = None,
        preview_path: str | None = None,
        rig: Mapping[str, Any] | None = None,
        tags: Sequence[str] = ("user_exclusive",),
        avatar_id: str | None = None,
    ) -> Avatar:
        """A private avatar owned by `account_id` (e.g. from upload-face); returns the row."""
        avatar = Avatar(
            avatar_id=avatar_id or ids.new_id("avat"),
            account_id=account_id,
            kind=kind,
            name=name,
            tags=tuple(tags),
            is_public=False,
            created_at=time.time(),
            image_path=image_path,
            preview_path=preview_path,
            rig=dict(rig) if rig is not None else None,
        )
        async with self._write() as tx:
            await tx.insert("avatars", _columns(avatar, _AVATAR_JSON))
        return avatar

    async def get_avatar(self, avatar_id: str, account_id: str | None = None) -> Avatar | None:
        """The avatar, or None. With `account_id`: only if it is public or that account's own."""
        sql = "SELECT * FROM avatars WHERE avatar_id = ?"
        params: list[Any] = [avatar_id]
        if account_id is not None:
            sql += " AND (is_public = 1 OR account_id = ?)"
            params.append(account_id)
        row = await self._fetch_one(sql, params)
        return _avatar_from_row(row) if row else None

    async def list_avatars(self, account_id: str) -> tuple[list[Avatar], list[Avatar]]:
        """(public avatars, oldest first; the account's own avatars, newest first)."""
        public = await self._fetch(
            "SELECT * FROM avatars WHERE is_public = 1 ORDER BY created_at, avatar_id"
        )
        own = await self._fetch(
            "SELECT * FROM avatars WHERE is_public = 0 AND account_id = ?"
            " ORDER BY created_at DESC, avatar_id DESC",
            (account_id,),
        )
        return [_avatar_from_row(r) for r in public], [_avatar_from_row(r) for r in own]

    async def avatars_to_rerig(self, version: int) -> list[Avatar]:
        """Photo avatars whose rig is older than `version` and not yet tried at it (oldest
        first)."""
        rows = await self._fetch(
            "SELECT * FROM avatars WHERE kind = 'photo' AND image_path IS NOT NULL"
            " AND COALESCE(json_extract(rig, '$.version'), 0) < ?"
            " AND avatar_id NOT IN"
            " (SELECT avatar_id FROM rig_updates WHERE tried_version >= ?)"
            " ORDER BY created_at, avatar_id",
            (version, version),
        )
        return [_avatar_from_row(r) for r in rows]

    async def replace_avatar_rig(
        self, avatar_id: str, old_version: int | None, rig: Mapping[str, Any]
    ) -> bool:
        """Set a rig where the row still holds one of `old_version`; records the re-rig.
        False (nothing written) when the avatar is gone or its rig changed meanwhile."""
        version = int(rig["version"])
        async with self._write() as tx:
            changed = await tx.run(
                "UPDATE avatars SET rig = ? WHERE avatar_id = ?"
                " AND COALESCE(json_extract(rig, '$.version'), 0) = ?",
                (_dumps(rig), avatar_id, old_version or 0),
            )
            if changed:
                await _record_rerig(tx, avatar_id, version, "rigged")
            return changed > 0

    async def record_rerig(self, avatar_id: str, version: int, outcome: str) -> None:
        """Note that re-rigging at `version` was tried and kept the old rig (`outcome`: why)."""
        async with self._write() as tx:
            await _record_rerig(tx, avatar_id, version, outcome)

    async def rerig_outcome(self, avatar_id: str) -> tuple[int, str] | None:
        row = await self._fetch_one(
            "SELECT tried_version, outcome FROM rig_updates WHERE avatar_id = ?", (avatar_id,)
        )
        return (int(row[0]), str(row[1])) if row else None

    async def delete_avatar(self, avatar_id: str) -> bool:
        """Delete the row; True if there was one. Sessions keep their own copy of the name."""
        async with self._write() as tx:
            await tx.run("DELETE FROM rig_updates WHERE avatar_id = ?", (avatar_id,))
            return await tx.run("DELETE FROM avatars WHERE avatar_id = ?", (avatar_id,)) > 0

    # -- sessions -------------------------------------------------------------------------------

    async def count_sessions_by_status(self) -> dict[str, int]:
        """{status: number of sessions} for every status (SPEC §3), 0 where there are none."""
        rows = await self._fetch(
            "SELECT CASE WHEN ended_at IS NOT NULL THEN 'ended'"
            " WHEN started_at IS NOT NULL THEN 'started' ELSE 'created' END AS status,"
            " COUNT(*) FROM sessions GROUP BY status"
        )
        return {str(s): 0 for s in SessionState} | {str(r[0]): int(r[1]) for r in rows}

    async def insert_session(self, session: Session) -> None:
        async with self._write() as tx:
            await tx.insert("sessions", _columns(session, _SESSION_JSON))

    async def get_session(self, session_id: str, account_id: str | None = None) -> Session | None:
        """The session, or None; with `account_id`, None also when another account owns it."""
        sql = "SELECT * FROM sessions WHERE session_id = ?"
        params: list[Any] = [session_id]
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        row = await self._fetch_one(sql, params)
        return _session_from_row(row) if row else None

    async def list_sessions(
        self,
        account_id: str,
        *,
        status: SessionState | None = None,
        limit: int = 50,
        before_id: str | None = None,
    ) -> list[Session]:
        """The account's sessions, newest first (ids are time-ordered), older than `before_id`."""
        sql = "SELECT * FROM sessions WHERE account_id = ?"
        params: list[Any] = [account_id]
        if before_id is not None:
            sql += " AND session_id < ?"
            params.append(before_id)
        if status is not None:
            sql += f" AND {_STATUS_SQL[status]}"
        sql += " ORDER BY session_id DESC LIMIT ?"
        params.append(limit)
        return [_session_from_row(r) for r in await self._fetch(sql, params)]

    async def mark_started(
        self, session_id: str, *, started_at: float, expiration: float | None, device: str
    ) -> bool:
        """created → started; False (nothing written) if the session was not `created`."""
        async with self._write() as tx:
            changed = await tx.run(
                "UPDATE sessions SET started_at = ?, expiration = ?, device = ?"
                " WHERE session_id = ? AND started_at IS NULL AND ended_at IS NULL",
                (started_at, expiration, device, session_id),
            )
        return changed == 1

    async def mark_ended(self, session_id: str, *, ended_at: float, reason: str) -> bool:
        """→ ended with `reason`; False (nothing written) if it had already ended."""
        async with self._write() as tx:
            changed = await tx.run(
                "UPDATE sessions SET ended_at = ?, end_reason = ?"
                " WHERE session_id = ? AND ended_at IS NULL",
                (ended_at, reason, session_id),
            )
        return changed == 1

    async def end_started_sessions(self, *, ended_at: float, reason: str) -> list[str]:
        """End every session still `started` (left by a process that died); returns their ids."""
        async with self._write() as tx:
            rows = await tx.fetch(
                f"SELECT session_id FROM sessions WHERE {_STATUS_SQL[SessionState.STARTED]}"
            )
            await tx.run(
                "UPDATE sessions SET ended_at = ?, end_reason = ?"
                f" WHERE {_STATUS_SQL[SessionState.STARTED]}",
                (ended_at, reason),
            )
        return [r["session_id"] for r in rows]

    async def set_session_stats(self, session_id: str, stats: Mapping[str, int | None]) -> None:
        """Merge `stats` (keys from STAT_KEYS) into the session's stats; the runner calls this."""
        unknown = set(stats) - set(STAT_KEYS)
        if unknown:
            raise ValueError(f"unknown stats keys: {sorted(unknown)}")
        async with self._write() as tx:
            row = await tx.fetch_one(
                "SELECT stats FROM sessions WHERE session_id = ?", (session_id,)
            )
            if row is None:
                return
            merged = json.loads(row["stats"]) | dict(stats)
            await tx.run(
                "UPDATE sessions SET stats = ? WHERE session_id = ?", (_dumps(merged), session_id)
            )

    async def set_session_daily_room(
        self, session_id: str, daily_room: Mapping[str, Any] | None
    ) -> None:
        """`daily_room` as GET shows it: `{url, name, token}` (plus `error` after a failed join)."""
        async with self._write() as tx:
            await tx.run(
                "UPDATE sessions SET daily_room = ? WHERE session_id = ?",
                (_dumps(dict(daily_room)) if daily_room is not None else None, session_id),
            )

    async def set_session_video(
        self, session_id: str, *, width: int, height: int, fps: int | None = None
    ) -> None:
        """The frame size (and fps) `session.init` asked for, replacing the defaults."""
        async with self._write() as tx:
            await tx.run(
                "UPDATE sessions SET video_width = ?, video_height = ?, fps = COALESCE(?, fps)"
                " WHERE session_id = ?",
                (width, height, fps, session_id),
            )


class _Tx:
    """The statements of one write transaction (see `Store._write`)."""

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
