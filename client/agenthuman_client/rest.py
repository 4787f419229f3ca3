"""Typed asyncio calls for the REST API (SPEC §5): sessions, avatars, usage.

`AgentHuman` owns one `aiohttp.ClientSession` (or borrows the caller's). Every non-2xx answer
raises `ApiError` carrying the server's error code; `start_session` retries a start that the
server answers with `ws_uri: "try_again"` (engine still loading) or `503 NO_CAPACITY` /
`ENGINE_LOADING`, waiting as long as `Retry-After` says, until `retry_for_s` has passed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
# How long an idle pooled connection is reused. Below the server's `http.idle_timeout_s`
# (15 s), which is also aiohttp's client default: at equal timeouts the server closes first
# and a POST sent in that instant fails with ServerDisconnectedError and is not retried.
KEEPALIVE_S = 10.0
TRY_AGAIN = "try_again"
RETRYABLE_CODES = frozenset({"NO_CAPACITY", "ENGINE_LOADING"})


class ApiError(Exception):
    """A non-2xx answer: `status`, the server's `code` (SPEC §4), `message`, `suggestion`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        suggestion: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.suggestion = suggestion
        self.details = details or {}
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class VideoSize:
    width: int
    height: int
    fps: int


@dataclass(frozen=True)
class Session:
    """A session as the server returned it; `access_token` and `ws_uri` only where given.
    `era` is "C" for one made by `create_started` (its socket sends the era-[C] init)."""

    session_id: str
    status: str
    avatar_id: str
    video: VideoSize | None
    end_reason: str | None
    stats: dict[str, Any]
    access_token: str | None = None
    ws_uri: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    era: str = "B"

    @classmethod
    def from_json(
        cls,
        obj: dict[str, Any],
        *,
        access_token: str | None = None,
        ws_uri: str | None = None,
        era: str = "B",
    ) -> Session:
        video = obj.get("video")
        return cls(
            session_id=obj["session_id"],
            status=obj["status"],
            avatar_id=(obj.get("avatar") or {}).get("avatar_id", ""),
            video=VideoSize(video["width"], video["height"], video["fps"]) if video else None,
            end_reason=obj.get("end_reason"),
            stats=dict(obj.get("stats") or {}),
            access_token=access_token or obj.get("access_token") or obj.get("session_token"),
            ws_uri=ws_uri or obj.get("ws_uri"),
            raw=obj,
            era=era,
        )


@dataclass(frozen=True)
class StartResult:
    ws_uri: str
    expiration: str | None


@dataclass(frozen=True)
class UploadedAvatar:
    avatar_id: str
    preview_url: str
    image_url: str


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _retry_wait(exc: ApiError, deadline: float, default_wait_s: float) -> float:
    """How long to wait before asking again after `exc` (its Retry-After, else the default);
    re-raises `exc` when it is not worth retrying or the wait would pass `deadline`."""
    if exc.code not in RETRYABLE_CODES:
        raise exc
    wait_s = exc.retry_after_s if exc.retry_after_s is not None else default_wait_s
    if time.monotonic() + wait_s > deadline:
        raise exc
    return wait_s


def _is_avatar_id(avatar: str | bytes | Path) -> bool:
    return isinstance(avatar, str) and not avatar.startswith(("data:", "http://", "https://"))


def _refuses_local_room(exc: ApiError) -> bool:
    """A server that has no era [C] (or no local room) refusing `room: {platform: local}`."""
    if exc.status != 400:
        return False
    field = str(exc.details.get("field", ""))
    return exc.code == "UNSUPPORTED_PLATFORM" or (
        exc.code == "VALIDATION_ERROR" and field.split(".")[0] == "room"
    )


class AgentHuman:
    """The REST API at `base_url` (ending in `/v1`) with `api_key`."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        http: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._own_http = http is None
        self.http = http or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def __aenter__(self) -> AgentHuman:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One call; → the JSON body of a 2xx answer, else raises `ApiError`."""
        headers = {"x-api-key": self.api_key, **kwargs.pop("headers", {})}
        async with self.http.request(
            method, self.base_url + path, headers=headers, **kwargs
        ) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            if 200 <= response.status < 300 and isinstance(body, dict):
                return body
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict):
                error = {"code": f"HTTP_{response.status}", "message": str(body)[:200]}
            raise ApiError(
                response.status,
                str(error.get("code", f"HTTP_{response.status}")),
                str(error.get("message", "")),
                suggestion=error.get("suggestion"),
                details=error.get("details"),
                retry_after_s=_retry_after(response),
            )

    # --- sessions --------------------------------------------------------------------------

    async def create_session(
        self,
        avatar_id: str | None = None,
        *,
        aspect_ratio: str | None = None,
        metadata: dict[str, Any] | None = None,
        daily_room: dict[str, Any] | None = None,
    ) -> Session:
        """Era [B] create: the session is `created`, with its `access_token`."""
        body: dict[str, Any] = {}
        if avatar_id is not None:
            body["avatar_id"] = avatar_id
        if aspect_ratio is not None:
            body["aspect_ratio"] = aspect_ratio
        if metadata is not None:
            body["metadata"] = metadata
        if daily_room is not None:
            body["daily_room"] = daily_room
        created = await self.request("POST", "/sessions", json=body)
        return Session.from_json(created["session"])

    async def start_session(
        self, session_id: str, *, retry_for_s: float = 60.0, default_wait_s: float = 0.5
    ) -> StartResult:
        """Start; retries `try_again` and NO_CAPACITY / ENGINE_LOADING per Retry-After."""
        deadline = time.monotonic() + retry_for_s
        while True:
            try:
                started = await self.request("PUT", f"/sessions/{session_id}/start")
            except ApiError as exc:
                wait_s = _retry_wait(exc, deadline, default_wait_s)
            else:
                if started.get("ws_uri") != TRY_AGAIN:
                    return StartResult(started["ws_uri"], started.get("expiration"))
                wait_s = default_wait_s
                if time.monotonic() + wait_s > deadline:
                    raise ApiError(503, "ENGINE_LOADING", "The engine is still loading")
            await asyncio.sleep(wait_s)

    async def create_and_start(
        self, avatar_id: str | None = None, *, retry_for_s: float = 60.0, **create: Any
    ) -> Session:
        """Create, then start: → the session with `access_token` and `ws_uri`."""
        session = await self.create_session(avatar_id, **create)
        try:
            started = await self.start_session(session.session_id, retry_for_s=retry_for_s)
        except BaseException:
            # Never leave a created session behind on a failed start.
            try:
                await asyncio.shield(self.end_session(session.session_id))
            except Exception:
                pass
            raise
        fresh = await self.get_session(session.session_id)
        return Session.from_json(
            fresh.raw, access_token=session.access_token, ws_uri=started.ws_uri
        )

    async def create_started(
        self,
        avatar: str | bytes | Path | None = None,
        *,
        room: dict[str, Any] | None = None,
        aspect_ratio: str | None = None,
        metadata: dict[str, Any] | None = None,
        retry_for_s: float = 60.0,
        default_wait_s: float = 0.5,
    ) -> Session:
        """Era [C] create: created **and started** in one call (a `room` field makes it era
        [C]; SPEC §4) → the session with its `session_token` and `ws_uri`.

        `room` defaults to `{"platform": "local"}` (this server's local outputs only; `daily`
        takes `url` and `token`). `avatar` is an avatar id, or a photo (bytes, a file path or
        a `data:image/…;base64,` string) that the server turns into an avatar first. While the
        engine loads (503 ENGINE_LOADING) or the server is full (NO_CAPACITY) it retries per
        Retry-After until `retry_for_s` runs out.

        A server without era [C] is handled when `room` is left out and `avatar` is an id (or
        None): one that ignores `room` (unknown fields are ignored; the session comes back
        `created`) gets the era-[B] start, one that refuses the local room (400
        UNSUPPORTED_PLATFORM or VALIDATION_ERROR on `room`) the era-[B] create and start; the
        session is then era "B". This is what the adapters call."""
        plain = room is None and (avatar is None or _is_avatar_id(avatar))
        body: dict[str, Any] = {"room": room if room is not None else {"platform": "local"}}
        if isinstance(avatar, Path):
            avatar = await asyncio.to_thread(avatar.read_bytes)
        if isinstance(avatar, bytes):
            kind = "png" if avatar.startswith(b"\x89PNG") else "jpeg"
            avatar = f"data:image/{kind};base64," + base64.b64encode(avatar).decode()
        if avatar is not None:
            body["avatar"] = avatar
        body_b: dict[str, Any] = {}  # the same create in era [B], for the fallback
        if aspect_ratio is not None:
            body["aspect_ratio"] = body_b["aspect_ratio"] = aspect_ratio
        if metadata is not None:
            body["metadata"] = body_b["metadata"] = metadata
        deadline = time.monotonic() + retry_for_s
        while True:
            try:
                created = await self.request("POST", "/sessions", json=body)
                break
            except ApiError as exc:
                if plain and _refuses_local_room(exc):
                    return await self.create_and_start(
                        avatar, retry_for_s=max(deadline - time.monotonic(), 0.0), **body_b
                    )
                await asyncio.sleep(_retry_wait(exc, deadline, default_wait_s))
        obj = created["session"]
        if obj.get("status") == "created":
            # No era [C] here: `room` was ignored and the session is era [B], created only.
            session = Session.from_json(obj)
            if not plain:  # the room asked for is not there: never a session without it
                with contextlib.suppress(Exception):
                    await self.end_session(session.session_id)
                raise ApiError(
                    501, "ERA_C_UNSUPPORTED", "The server ignored `room` (it has no era [C])"
                )
            try:
                started = await self.start_session(
                    session.session_id, retry_for_s=max(deadline - time.monotonic(), 0.0)
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.end_session(session.session_id))
                raise
            fresh = await self.get_session(session.session_id)
            return Session.from_json(
                fresh.raw, access_token=session.access_token, ws_uri=started.ws_uri
            )
        return Session.from_json(obj, access_token=obj.get("session_token"), era="C")

    async def get_session(self, session_id: str) -> Session:
        return Session.from_json((await self.request("GET", f"/sessions/{session_id}"))["session"])

    async def list_sessions(self, status: str = "all", limit: int = 50) -> list[Session]:
        body = await self.request("GET", "/sessions", params={"status": status, "limit": limit})
        return [Session.from_json(s) for s in body["sessions"]]

    async def end_session(self, session_id: str) -> Session:
        """End with `client_request`; ending an ended session is not an error."""
        ended = await self.request("PUT", f"/sessions/{session_id}/end")
        return Session.from_json(ended["session"])

    # --- avatars and usage -----------------------------------------------------------------

    async def list_avatars(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/avatars"))["avatars"])

    async def upload_face(self, image: bytes | str | Path) -> UploadedAvatar:
        """One photo (bytes or a file path) → an avatar usable at once (SPEC §5)."""
        if isinstance(image, bytes):
            data = image
        else:
            data = await asyncio.to_thread(Path(image).read_bytes)
        body = await self.request(
            "POST", "/avatars/upload-face", json={"image_base64": base64.b64encode(data).decode()}
        )
        return UploadedAvatar(body["avatar_id"], body["preview_url"], body["image_url"])

    async def delete_avatar(self, avatar_id: str) -> None:
        await self.request("DELETE", f"/avatars/{avatar_id}")

    async def usage(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/usage"))
