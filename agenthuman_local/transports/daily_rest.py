"""Daily's REST API, the part a session needs: a room, meeting tokens, and deleting the room.

Used when `daily.api_key` is set (SPEC §7): the manager creates a private room per session with
`create_room_with_token`, hands its `{url, name, token}` out as `daily_room`, gives the avatar
its own token, and deletes the room when the session ends. Every failure is a `DailyRestError`
carrying the HTTP status (None when Daily was unreachable) and Daily's own error and message
(`{"error": "authentication-error", "info": "…"}`), so the caller can surface it as is.

    client = DailyRestClient(settings.daily.api_url, settings.daily.api_key)
    room = await client.create_room_with_token(exp_s=3600, user_name="guest")
    avatar_token = await client.create_meeting_token(room.name, exp_s=3600, user_name="AI")
    ...
    await client.delete_room(room.name)
    await client.aclose()
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class DailyRestError(Exception):
    """A Daily REST call failed. `status` is None when Daily could not be reached at all."""

    def __init__(self, method: str, path: str, status: int | None, error: str, info: str):
        where = f"Daily API {method} {path}"
        detail = f"{status} {error}" if status is not None else error
        super().__init__(f"{where} failed: {detail}: {info}" if info else f"{where}: {detail}")
        self.status = status
        self.error = error
        self.info = info


@dataclass(frozen=True)
class DailyRoom:
    name: str
    url: str
    token: str | None = None


class DailyRestClient:
    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None

    async def create_room(
        self, *, exp_s: float | None = None, private: bool = True, name: str | None = None
    ) -> DailyRoom:
        """A room that Daily ejects everyone from and closes `exp_s` seconds from now."""
        properties: dict[str, Any] = {}
        if exp_s is not None:
            properties.update(exp=int(time.time() + exp_s), eject_at_room_exp=True)
        body: dict[str, Any] = {
            "privacy": "private" if private else "public",
            "properties": properties,
        }
        if name is not None:
            body["name"] = name
        data = await self._request("POST", "/rooms", body)
        try:
            return DailyRoom(name=str(data["name"]), url=str(data["url"]))
        except (KeyError, TypeError):
            raise DailyRestError("POST", "/rooms", 200, "bad-response", str(data)[:200]) from None

    async def create_meeting_token(
        self,
        room_name: str,
        *,
        exp_s: float | None = None,
        user_name: str | None = None,
        is_owner: bool = False,
    ) -> str:
        properties: dict[str, Any] = {"room_name": room_name, "is_owner": is_owner}
        if exp_s is not None:
            properties["exp"] = int(time.time() + exp_s)
        if user_name is not None:
            properties["user_name"] = user_name
        data = await self._request("POST", "/meeting-tokens", {"properties": properties})
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise DailyRestError("POST", "/meeting-tokens", 200, "bad-response", str(data)[:200])
        return token

    async def create_room_with_token(
        self, *, exp_s: float | None = None, user_name: str | None = None
    ) -> DailyRoom:
        """A private room and a token for it; the room is deleted again if the token fails."""
        room = await self.create_room(exp_s=exp_s)
        try:
            token = await self.create_meeting_token(room.name, exp_s=exp_s, user_name=user_name)
        except BaseException:
            try:
                await self.delete_room(room.name)
            except DailyRestError as exc:
                log.warning("could not delete room %s after a failed token: %s", room.name, exc)
            raise
        return DailyRoom(name=room.name, url=room.url, token=token)

    async def delete_room(self, name: str) -> bool:
        """True when deleted, False when Daily no longer had it (so ending twice is fine)."""
        try:
            await self._request("DELETE", "/rooms/" + urllib.parse.quote(name, safe=""))
        except DailyRestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        headers = {"Authorization": f"Bearer {self._api_key}"}
        try:
            async with self._session.request(
                method, self._api_url + path, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            raise DailyRestError(
                method, path, None, reason, str(exc) or type(exc).__name__
            ) from exc
        data = _json_or_none(text)
        if 200 <= status < 300:
            return data if data is not None else {}
        error, info = "http-error", text[:200]
        if isinstance(data, dict):
            error = str(data.get("error") or error)
            info = str(data.get("info") or data.get("message") or info)
        raise DailyRestError(method, path, status, error, info)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
