"""Daily per session (SPEC §7): the room a session gets, the avatar joining it, the room's end.

- At create (era [B], no room named) with `daily.api_key` set, `create_room` makes a private
  room and a meeting token through Daily's REST API; they are the session's `daily_room`. A
  REST failure fails the create with `502 DAILY_API_ERROR` and stores nothing: a client that
  asked for Daily learns at once that it will not get it.
- After the first valid `session.init` the output factory (`output`) picks the room
  (`config.room` when it names one, else the session's `daily_room`), reports `session.state
  {connecting}` and joins in a named task, so `connection.established` never waits on Daily.
  Then `joined_room` and the frames go to the room through `DailySink`; or `room_error
  {reason}` and `daily_room.error` in GET, while the session keeps rendering to its other
  outputs.
- Nobody else in the room for `daily.empty_room_timeout_s` → the session ends `room_empty`.
- At the end the runner closes the output (leave, then `release()` off the loop), then the
  manager's `session_ended` deletes a room we created, in a task this object owns. A failed
  delete is logged and shown as `daily_room.error`; rooms also carry an expiry in case the
  process dies first.

The transport (`transports/daily.py`) is the only code that touches daily-python;
`app[keys.daily_lib_key]` swaps the library for a fake in tests; `app.daily_ctx` makes the
one `DailyRooms` of the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agenthuman_local import protocol
from agenthuman_local.audio import SAMPLE_RATE_HZ
from agenthuman_local.errors import AppError
from agenthuman_local.sessions.state import EndReason
from agenthuman_local.transports.daily import DailyLib, DailySink, DailyTransport
from agenthuman_local.transports.daily_rest import DailyRestClient, DailyRestError
from agenthuman_local.transports.daily_room import DailyCallbacks, DailyJoinError

if TYPE_CHECKING:
    from agenthuman_local.config import Settings
    from agenthuman_local.sessions.live import LiveSession
    from agenthuman_local.sessions.runner import SessionRunner
    from agenthuman_local.store import Store
    from agenthuman_local.transports.base import Sink

log = logging.getLogger(__name__)

# A room outlives its session only if the process dies before deleting it; Daily then closes
# it this long after the session could have ended at the latest.
ROOM_SPARE_S = 24 * 3600.0
# release() blocks while a join is pending (up to ~49 s offline): the session's end waits this
# long, then the transport's own task finishes it.
RELEASE_WAIT_S = 5.0


class DailyApiError(AppError):
    status = 502
    code = "DAILY_API_ERROR"
    default_suggestion = (
        "Check daily.api_key and Daily's status page, then create the session again."
    )

    def __init__(self, exc: DailyRestError) -> None:
        super().__init__(
            f"Daily's API could not create the session's room: {exc}",
            details={"daily_status": exc.status, "daily_error": exc.error},
        )


@dataclass(frozen=True)
class RoomChoice:
    url: str
    token: str
    display_name: str

    def as_json(self) -> dict[str, Any]:
        name = urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]
        return {"url": self.url, "name": name, "token": self.token}


class RoomChoiceError(ValueError):
    """`config.room` names a Daily room it does not describe fully."""


def choose_room(
    init_room: Mapping[str, Any] | None, stored: Mapping[str, Any] | None, display_name: str
) -> RoomChoice | None:
    """The room the avatar joins: `config.room` when it names one, else the stored one.

    `platform: local` in `config.room` means no room at all.
    """
    if init_room is not None:
        platform = init_room.get("platform", "daily")
        if platform == "local":
            return None
        if platform != "daily":
            raise RoomChoiceError(f"config.room.platform {platform!r}: only daily rooms are joined")
        fields = {}
        for field in ("url", "token"):
            value = init_room.get(field)
            if not isinstance(value, str) or not value:
                raise RoomChoiceError(f"config.room.{field} is required for a daily room")
            fields[field] = value
        name = init_room.get("display_name")
        return RoomChoice(
            fields["url"], fields["token"], name if isinstance(name, str) and name else display_name
        )
    if stored is not None and stored.get("url") and stored.get("token"):
        return RoomChoice(str(stored["url"]), str(stored["token"]), display_name)
    return None


class DailyRooms:
    """The manager's room hooks and the Daily output factory, for every session of the app."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        end_soon: Callable[[str, EndReason], None],
        *,
        rest: DailyRestClient | None = None,
        lib: DailyLib | None = None,
        transport_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._end_soon = end_soon
        self._rest = rest
        self._lib = lib
        self._transport_options = dict(transport_options or {})
        self._owned: dict[str, str] = {}  # session_id → name of the room we created for it
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- the manager's hooks ----------------------------------------------------------------

    async def create_room(self, session_id: str) -> dict[str, Any] | None:
        """A new room and token for a session that named none; None without `daily.api_key`.

        Raises DailyApiError (502) when Daily's API fails.
        """
        if self._rest is None:
            return None
        max_s = self._settings.session.max_duration_s
        try:
            room = await self._rest.create_room_with_token(exp_s=(max_s or 0) + ROOM_SPARE_S)
        except DailyRestError as exc:
            log.warning("session %s: no Daily room: %s", session_id, exc)
            raise DailyApiError(exc) from exc
        self._owned[session_id] = room.name
        return {"url": room.url, "name": room.name, "token": room.token}

    def session_ended(self, session_id: str) -> None:
        """The session ended and its runner is closed: delete the room we made. Returns at once."""
        name = self._owned.pop(session_id, None)
        if name is not None and self._rest is not None and not self._closed:
            self.spawn(self._delete(session_id, name), f"daily:{session_id}:delete")

    async def _delete(self, session_id: str, name: str) -> None:
        assert self._rest is not None
        try:
            await self._rest.delete_room(name)
        except DailyRestError as exc:
            log.warning("session %s: Daily room %s not deleted: %s", session_id, name, exc)
            await self.note_error(session_id, f"the room could not be deleted: {exc}")

    # -- the output factory -----------------------------------------------------------------

    async def output(self, live: LiveSession, runner: SessionRunner) -> Sink | None:
        """On the first valid session.init: start joining the session's room, if it has one;
        → the session's `DailyOutput` (None: no room)."""
        sid = live.session_id
        stored = live.session.daily_room
        try:
            room = choose_room(
                live.init.room if live.init is not None else None,
                stored,
                self._settings.daily.display_name,
            )
        except RoomChoiceError as exc:
            runner.emit_state(protocol.STATE_ROOM_ERROR, str(exc))
            await self.note_error(sid, str(exc))
            return None
        if room is None:
            return None
        current = room.as_json()
        if stored is None or any(stored.get(k) != v for k, v in current.items()):
            await self._save(sid, current)
        spec = live.spec
        assert spec is not None
        options = {
            "fps": spec.fps,
            "empty_room_timeout_s": self._settings.daily.empty_room_timeout_s,
            "release_timeout_s": RELEASE_WAIT_S,
            "clock": runner.clock,  # the empty-room timer runs on the session's clock
            **self._transport_options,
        }
        output = DailyOutput(self, sid, runner, current)
        output.transport = DailyTransport(
            room.url,
            room.token,
            room.display_name,
            spec.width,
            spec.height,
            SAMPLE_RATE_HZ,
            output.callbacks(),
            lib=self._lib,
            **options,
        )
        runner.emit_state(protocol.STATE_CONNECTING)
        output.start()  # a task: the live session adds the sink before the join begins
        return output

    # -- shared -----------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def note_error(self, session_id: str, error: str | None) -> None:
        """`daily_room.error` as GET shows it (None clears it)."""
        try:
            session = await self._store.get_session(session_id)
        except Exception:
            log.exception("session %s: could not read daily_room", session_id)
            return
        room = dict(session.daily_room or {}) if session is not None else {}
        if not room.get("url"):  # no room to speak of: the room_error event says it all
            return
        if error is None:
            if "error" not in room:
                return
            room.pop("error")
        else:
            room["error"] = error
        await self._save(session_id, room)

    async def _save(self, session_id: str, room: dict[str, Any]) -> None:
        # What GET shows is a report: storage trouble must not cost the session its room.
        try:
            await self._store.set_session_daily_room(session_id, room)
        except Exception:
            log.exception("session %s: could not store daily_room", session_id)

    def end_soon(self, session_id: str, reason: EndReason) -> None:
        self._end_soon(session_id, reason)

    async def aclose(self) -> None:
        """Await the room deletions still running, then close the REST client. Idempotent."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._rest is not None:
            await self._rest.aclose()


class DailyOutput:
    """One session's Daily output, a runner sink: joins in a named task, then feeds DailySink.

    Frames published before the join completes (or after it failed) are not queued anywhere.
    """

    def __init__(
        self,
        rooms: DailyRooms,
        session_id: str,
        runner: SessionRunner,
        room_json: dict[str, Any],
    ) -> None:
        self.session_id = session_id
        self.transport: DailyTransport | None = None
        self.bad_frames = 0
        self._rooms = rooms
        self._runner = runner
        self._room_json = room_json
        self._sink: DailySink | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._sink.dropped if self._sink is not None else 0

    def callbacks(self) -> DailyCallbacks:
        return DailyCallbacks(
            on_room_empty=lambda: self._rooms.end_soon(self.session_id, EndReason.ROOM_EMPTY),
            on_call_state=self._on_call_state,
            on_error=lambda message: log.warning("session %s: Daily: %s", self.session_id, message),
        )

    def start(self) -> None:
        self._join_task = asyncio.get_running_loop().create_task(
            self._join(), name=f"daily:{self.session_id}:join"
        )

    async def _join(self) -> None:
        assert self.transport is not None
        try:
            await self.transport.start()
        except DailyJoinError as exc:
            error = str(exc)
        except Exception as exc:  # a failed join never ends the session (SPEC §7)
            log.exception("session %s: joining the Daily room failed", self.session_id)
            error = f"{type(exc).__name__}: {exc}"
        else:
            self._sink = DailySink(self.transport)
            self._runner.emit_state(protocol.STATE_JOINED_ROOM)
            await self._rooms.note_error(self.session_id, None)
            return
        log.warning("session %s: Daily join failed: %s", self.session_id, error)
        self._runner.emit_state(protocol.STATE_ROOM_ERROR, error)
        await self._rooms.note_error(self.session_id, error)

    def _on_call_state(self, state: str) -> None:
        if state == "left" and not self._closed:  # thrown out, or the room was closed
            self._sink = None
            reason = "the avatar is no longer in the Daily room"
            self._runner.emit_state(protocol.STATE_ROOM_ERROR, reason)
            self._rooms.spawn(
                self._rooms.note_error(self.session_id, reason), f"daily:{self.session_id}:note"
            )

    async def publish(self, frame: Any) -> None:
        if self._sink is None:
            return
        try:
            await self._sink.publish(frame)
        except ValueError:  # a frame the room's tracks cannot take: drop it, keep the session
            self.bad_frames += 1
            if self.bad_frames == 1:
                log.exception("session %s: a frame did not fit the Daily tracks", self.session_id)

    async def aclose(self) -> None:
        """Stop joining, leave, release (off the loop). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sink = None
        if self._join_task is not None:
            self._join_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._join_task
        if self.transport is not None:
            await self.transport.aclose()
