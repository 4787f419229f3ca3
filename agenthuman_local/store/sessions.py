"""The store's sessions: their rows, status (created → started → ended), stats, Daily room and
frame size."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from agenthuman_local.records import STAT_KEYS, Session
from agenthuman_local.sessions.state import SessionState
from agenthuman_local.store.connection import _Base, _columns, _decoded, _dumps

# Columns that hold JSON text.
_SESSION_JSON = ("metadata", "daily_room", "stats")


def _session_from_row(row: sqlite3.Row) -> Session:
    return Session(**_decoded(row, _SESSION_JSON))


_STATUS_SQL = {
    SessionState.CREATED: "started_at IS NULL AND ended_at IS NULL",
    SessionState.STARTED: "started_at IS NOT NULL AND ended_at IS NULL",
    SessionState.ENDED: "ended_at IS NOT NULL",
}


class _Sessions(_Base):
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
