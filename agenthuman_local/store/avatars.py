"""The store's avatars: the shipped and uploaded rows, and the re-rigging of photo rigs."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agenthuman_local import ids
from agenthuman_local.records import Avatar
from agenthuman_local.store.connection import _Base, _columns, _decoded, _dumps, _Tx

# Columns that hold JSON text.
_AVATAR_JSON = ("tags", "rig")


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


class _Avatars(_Base):
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
