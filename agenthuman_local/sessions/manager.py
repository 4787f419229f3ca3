"""SessionManager: creates, starts, ends and finds sessions; owns their device seats and timers.

Every transition is checked by `state.transition` and written to the store before it is reported.
Start and end of one session are serialised by a per-session lock, so twenty concurrent starts
lease one seat and return one `ws_uri`. A seat is the session's cost in units of its default
size and fps (`devices.cost_units`); its first `session.init` re-leases its real size.

How live-session code plugs in (no aiohttp here; the app wires it):

- `live_factory(session) -> H` (optional, from the app) is awaited once when a session starts,
  after its seat is leased and `started_at` is stored; H is the session's live part, anything
  with the `LiveHandle` shape (the app's is `sessions.live.LiveSession`, so the app's manager is
  a `SessionManager[LiveSession]` and `live()` hands the API that type, no isinstance needed).
  It is kept until the session ends. If the factory raises, the session ends with `error` and
  start fails (500).
- `await manager.end(session_id, reason)` is the single path to `ended`: it cancels the timers,
  awaits `live.aclose(reason)` (the live session writes its final stats with
  `store.set_session_stats` there), stores `ended_at` and the reason, then frees the seat.
- Code running inside a live session's own tasks must call `manager.end_soon(session_id,
  reason)` instead: `end` awaits its `aclose`, which would wait on the caller itself.
- `manager.mark_connected(session_id)` — the WebSocket handler calls it on a valid
  `session.init`; it disarms the `ws.connect_timeout_s` timer (else: `websocket_timeout`).
  `manager.mark_refused(session_id)` arms it again when that init is then refused (size or
  capacity): the session keeps its seat for a retry, not for ever.
- The timers (connect, `session.max_duration_s` → `expired`) are `sessions.timers`; they sleep
  on `clock`, the same injectable clock the sessions' pacers use (the wall clock unless a test
  gives its own).
- `manager.lookup(session_id)` finds a session without an account (the WebSocket authenticates
  by token: `ids.secret_matches(token, session.token_hash)`); `manager.live(session_id)` gives
  the session's live part (None unless it is started in this process).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from agenthuman_local import ids
from agenthuman_local.clock import Clock, WallClock
from agenthuman_local.config import Settings
from agenthuman_local.devices import DevicePool, cost_units
from agenthuman_local.errors import (
    EngineLoading,
    Internal,
    SessionEnded,
    SessionNotFound,
    StorageUnavailable,
    Unavailable,
)
from agenthuman_local.records import Avatar, Session
from agenthuman_local.sessions.state import EndReason, SessionState, transition
from agenthuman_local.sessions.timers import SessionTimers
from agenthuman_local.store import Store

log = logging.getLogger(__name__)

# Frame size per aspect ratio (SPEC §3), unless session.init asks for another.
VIDEO_SIZES: dict[str, tuple[int, int]] = {
    "4:3": (960, 720),
    "3:4": (720, 960),
    "1:1": (720, 720),
    "16:9": (1280, 720),
    "9:16": (720, 1280),
}


@dataclass
class EngineStatus:
    """Whether the avatar engine can render yet; the engine's start-up flips `ready`."""

    ready: bool = True
    error: str | None = None


class LiveHandle(Protocol):
    """What the manager needs of a started session's live part."""

    async def aclose(self, reason: EndReason) -> None:
        """Stop rendering, leave rooms, finalise outputs. Must be idempotent."""
        ...


H = TypeVar("H", bound=LiveHandle)
LiveFactory = Callable[[Session], Awaitable[H]]


class RoomHooks(Protocol):
    """Rooms made for sessions (the app's Daily rooms, SPEC §7)."""

    async def create_room(self, session_id: str) -> dict[str, Any] | None:
        """A room for a new session that named none (None: local outputs only). May raise an
        AppError, which fails the create."""
        ...

    def session_ended(self, session_id: str) -> None:
        """The session ended (its live part closed, or it never started): let its room go.
        Returns at once; never raises."""
        ...


class SessionManager(Generic[H]):
    def __init__(
        self,
        settings: Settings,
        store: Store,
        devices: DevicePool,
        engine: EngineStatus,
        *,
        live_factory: LiveFactory[H] | None = None,
        rooms: RoomHooks | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._rooms = rooms
        self._store = store
        self._devices = devices
        self._engine = engine
        self._live_factory = live_factory
        self._handles: dict[str, H] = {}
        self._live: set[str] = set()  # started in this process and not yet ended
        self._timers = SessionTimers(clock or WallClock(), self.end_soon)
        self._end_tasks: set[asyncio.Task[None]] = set()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._closed = False

    # -- queries ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Sessions can start: the engine has loaded and the devices are known."""
        return self._engine.ready and self._devices.ready

    def ws_uri(self, session_id: str) -> str:
        return f"{self._settings.ws_base_url}/v1/sessions/{session_id}/ws"

    def usage(self) -> dict[str, Any]:
        """The Usage object of SPEC §3; minutes are not metered locally."""
        return {"concurrency": self._devices.concurrency(), "minutes": {"total_remaining": None}}

    def live(self, session_id: str) -> H | None:
        """The live part of a session started in this process and not yet ended."""
        return self._handles.get(session_id)

    async def get(self, account_id: str, session_id: str) -> Session:
        session = await self._store.get_session(session_id, account_id)
        if session is None:
            raise SessionNotFound()
        return session

    async def lookup(self, session_id: str) -> Session | None:
        """Any account's session by id, for callers that authenticate by session token."""
        return await self._store.get_session(session_id)

    async def list_sessions(
        self, account_id: str, *, status: SessionState | None, limit: int, cursor: str | None
    ) -> tuple[list[Session], str | None]:
        """One page, newest first, and the cursor of the next page (None on the last)."""
        rows = await self._store.list_sessions(
            account_id, status=status, limit=limit + 1, before_id=cursor
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].session_id if more and rows else None)

    # -- transitions ------------------------------------------------------------------------

    async def create(
        self,
        account_id: str,
        *,
        avatar: Avatar,
        aspect_ratio: str,
        metadata: Mapping[str, Any],
        daily_room: Mapping[str, Any] | None = None,
        start: bool = False,
        make_room: bool = False,
    ) -> tuple[Session, str]:
        """A new session and its secret token (returned once, stored only as a hash).

        With `start` (era [C]) it is created already started, in one write; nothing is stored
        when the engine is loading or no seat is free. With `make_room` and no `daily_room`,
        the room hooks make one (SPEC §7); it is let go again if the create fails.
        """
        token = ids.new_token()
        width, height = VIDEO_SIZES[aspect_ratio]
        session = Session(
            session_id=ids.new_id("sess"),
            account_id=account_id,
            avatar_id=avatar.avatar_id,
            avatar_name=avatar.name,
            token_hash=ids.secret_hash(token),
            aspect_ratio=aspect_ratio,
            video_width=width,
            video_height=height,
            fps=self._settings.video.fps,
            metadata=dict(metadata),
            daily_room=dict(daily_room) if daily_room is not None else None,
            created_at=time.time(),
        )
        if start and not self.ready:
            raise EngineLoading()
        if make_room and daily_room is None and self._rooms is not None:
            room = await self._rooms.create_room(session.session_id)
            session = replace(session, daily_room=room)
        try:
            return await self._insert_new(session, token, start)
        except BaseException:
            if self._rooms is not None:
                self._rooms.session_ended(session.session_id)
            raise

    async def _insert_new(self, session: Session, token: str, start: bool) -> tuple[Session, str]:
        if not start:
            await self._store.insert_session(session)
            return session, token
        async with self._lock_for(session.session_id):
            device = self._devices.lease(session.session_id, _cost(session))
            session = replace(
                session,
                started_at=session.created_at,
                expiration=self._expiration(session.created_at),
                device=device.name,
            )
            try:
                await self._store.insert_session(session)
            except BaseException:
                self._devices.release(session.session_id)
                raise
            await self._activate(session)
        return session, token

    async def start(self, account_id: str, session_id: str) -> Session | None:
        """created → started. Idempotent; None means 'try again' (the engine is loading)."""
        async with self._lock_for(session_id):
            session = await self.get(account_id, session_id)
            if session.status is SessionState.ENDED:
                raise SessionEnded()
            if session.status is SessionState.STARTED:
                return session
            if not self.ready:
                return None
            transition(session.status, SessionState.STARTED)
            device = self._devices.lease(session_id, _cost(session))
            now = time.time()
            expiration = self._expiration(now)
            try:
                stored = await self._store.mark_started(
                    session_id, started_at=now, expiration=expiration, device=device.name
                )
            except BaseException:
                self._devices.release(session_id)
                raise
            if not stored:  # another process changed the row under us; report what is there
                self._devices.release(session_id)
                return await self.get(account_id, session_id)
            session = replace(session, started_at=now, expiration=expiration, device=device.name)
            await self._activate(session)
            return session

    async def end(
        self, session_id: str, reason: EndReason, *, account_id: str | None = None
    ) -> Session:
        """→ ended with `reason` (any state). Idempotent: an ended session is returned as is.

        With `account_id`, another account's session is SessionNotFound.
        """
        async with self._lock_for(session_id):
            session = await self._store.get_session(session_id, account_id)
            if session is None:
                raise SessionNotFound()
            if session.status is SessionState.ENDED:
                if session_id in self._live:  # ended behind our back: drop what we hold
                    await self._end_locked(session, reason, write=False)
                return session
            transition(session.status, SessionState.ENDED)
            return await self._end_locked(session, reason)

    def end_soon(self, session_id: str, reason: EndReason) -> None:
        """Schedule `end` in a task the manager owns (for callers inside a live session or a
        timer)."""
        task = asyncio.create_task(
            self._end_quietly(session_id, reason), name=f"session:{session_id}:end"
        )
        self._end_tasks.add(task)
        task.add_done_callback(self._end_tasks.discard)

    def mark_connected(self, session_id: str) -> None:
        """A valid session.init arrived: disarm the connect timeout. Idempotent."""
        self._timers.disarm_connect(session_id)

    def mark_refused(self, session_id: str) -> None:
        """The first session.init was refused (size, capacity) and its socket closed: the
        session keeps its seat for a retry, so the connect timeout runs again from now (else a
        client that never retries would hold the seat until the session expires)."""
        self._timers.rearm_connect(session_id, self._settings.ws.connect_timeout_s)

    async def recover(self) -> list[str]:
        """At start-up: sessions a dead process left `started` end with `server_restart`."""
        ended = await self._store.end_started_sessions(
            ended_at=time.time(), reason=EndReason.SERVER_RESTART
        )
        if ended:
            log.info("ended %d session(s) left started by an earlier process", len(ended))
        return ended

    async def aclose(self) -> None:
        """End every live session with `server_shutdown` and await all owned tasks; a session
        that starts afterwards ends at once (start fails 503). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._timers.cancel_all()
        await asyncio.gather(*self._end_tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._end_quietly(sid, EndReason.SERVER_SHUTDOWN) for sid in list(self._live)),
        )
        # Live sessions may have asked for ends of their own while closing.
        await asyncio.gather(*self._end_tasks, return_exceptions=True)
        await self._timers.settle()

    # -- internals --------------------------------------------------------------------------

    def _lock_for(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    def _expiration(self, started_at: float) -> float | None:
        max_s = self._settings.session.max_duration_s
        return started_at + max_s if max_s is not None else None

    async def _activate(self, session: Session) -> None:
        """A session just stored as started: make its live part, arm its timers (lock held)."""
        sid = session.session_id
        self._live.add(sid)
        if self._closed:  # a start that raced the shutdown: no live part, no timers
            await self._end_locked(session, EndReason.SERVER_SHUTDOWN)
            raise Unavailable("The server is shutting down")
        if self._live_factory is not None:
            try:
                self._handles[sid] = await self._live_factory(session)
            except Exception as exc:
                log.exception("session %s: the live session failed to start", sid)
                await self._end_locked(session, EndReason.ERROR)
                raise Internal("The session could not start rendering") from exc
        expire_s = None if session.expiration is None else session.expiration - time.time()
        self._timers.arm(sid, connect_s=self._settings.ws.connect_timeout_s, expire_s=expire_s)

    async def _end_locked(
        self, session: Session, reason: EndReason, *, write: bool = True
    ) -> Session:
        """Cancel the timers, close the live part, store the end (unless `write` is False), free
        the seat. The caller holds the session's lock."""
        sid = session.session_id
        self._timers.cancel(sid)
        live = self._handles.pop(sid, None)
        now = time.time()
        try:
            if live is not None:
                try:
                    await live.aclose(reason)
                except Exception:
                    log.exception("session %s: the live session failed while closing", sid)
            if write:
                await self._store.mark_ended(sid, ended_at=now, reason=reason)
        finally:
            self._live.discard(sid)
            self._devices.release(sid)
            if self._rooms is not None:
                self._rooms.session_ended(sid)
        if not write:
            return session
        fresh = await self._store.get_session(sid)
        return fresh or replace(session, ended_at=now, end_reason=reason)

    async def _end_quietly(self, session_id: str, reason: EndReason) -> None:
        try:
            await self.end(session_id, reason)
        except (SessionNotFound, StorageUnavailable) as exc:
            log.warning("session %s: could not end with %s: %s", session_id, reason, exc)


def _cost(session: Session) -> float:
    """A session's lease at start: its default size and fps, in cost units."""
    return cost_units(session.video_width, session.video_height, session.fps)
