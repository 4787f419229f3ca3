"""The store's accounts and API keys (a key is kept as its SHA-256 and its prefix)."""

from __future__ import annotations

import time

from agenthuman_local import ids
from agenthuman_local.records import ApiKey
from agenthuman_local.store.connection import _Base


class AmbiguousKeyPrefix(Exception):
    """A key prefix given to revoke matches more than one active key."""

    def __init__(self, prefix: str, matches: int) -> None:
        super().__init__(f"{prefix!r} matches {matches} active keys")
        self.prefix = prefix
        self.matches = matches


class _Accounts(_Base):
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
