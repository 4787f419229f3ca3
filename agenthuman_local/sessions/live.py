"""LiveSession: what the SessionManager holds for a started session, socket to media.

The manager makes one when a session starts (`live_factory`) and closes it when the session
ends. The media runner itself is made on the first valid `session.init`, because that message
fixes the frame size, fps and sample rate; later inits resume it (queue and clock intact). That
first init's size and fps are checked against `video.max_pixels` / `video.max_fps`, re-leased on
the session's device in cost units (`relet`: a size that no longer fits is refused with
`NO_CAPACITY`, close 4005, and the session keeps its seat for another try) and stored, so GET
reports what the session really renders (`save_video`). The
live session also owns "which socket is current": a new one replaces the old (closed 4000
"replaced"), and the end of the session closes the current one with `session.state {ended}` and
4009. What the API reads of a live session — `connect`/`disconnect` (the socket handler),
`stats()` and `timeline_jsonl()` (REST) — is methods here, never its runner's attributes.

No aiohttp here: a socket is anything with the `SocketLink` shape (api/ws.py has the real one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agenthuman_local import protocol
from agenthuman_local.clock import Clock, WallClock
from agenthuman_local.config import Settings
from agenthuman_local.devices import cost_units
from agenthuman_local.engine.base import FrameDriver, FrameSize, Renderer
from agenthuman_local.errors import NoCapacity
from agenthuman_local.paths import timeline_path
from agenthuman_local.records import Session
from agenthuman_local.sessions.runner import RunnerOptions, SessionRunner
from agenthuman_local.sessions.timeline import Timeline
from agenthuman_local.transports.base import Sink

if TYPE_CHECKING:
    from agenthuman_local.engine.worker import RenderPool

log = logging.getLogger(__name__)


class SocketLink(Protocol):
    def send_event(self, event: dict[str, Any]) -> bool: ...

    def take_unsent(self) -> list[dict[str, Any]]: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class MediaSpec:
    """The media shape of a session, fixed by its first `session.init`."""

    avatar_id: str
    device: str
    width: int
    height: int
    fps: int
    sample_rate_hz: int


RendererFactory = Callable[[MediaSpec], Awaitable[Renderer]]
DriverFactory = Callable[[MediaSpec], Awaitable[FrameDriver]]
# Makes one output of a session once its media runner exists (the recorder, the viewer, the
# metrics, Daily): the sink the runner then publishes to, or None (nothing for this session).
# The composition root lists them (`app.live_ctx`).
OutputFactory = Callable[["LiveSession", "SessionRunner"], Awaitable[Sink | None]]


class SharedRenderers:
    """One renderer per (avatar, size, device), shared by the sessions that use it.

    A renderer is a pure function of its parameters, so sessions can share one; the render
    worker then batches their frames into one call. Counted: the last session to let go drops
    it, so memory follows the live sessions and not every size ever asked for.
    """

    def __init__(self, make: RendererFactory) -> None:
        self._make = make
        self._entries: dict[tuple[str, int, int, str], tuple[Renderer | None, int]] = {}
        self._locks: dict[tuple[str, int, int, str], asyncio.Lock] = {}

    @staticmethod
    def _key(spec: MediaSpec) -> tuple[str, int, int, str]:
        return (spec.avatar_id, spec.width, spec.height, spec.device)

    async def acquire(self, spec: MediaSpec) -> Renderer:
        key = self._key(spec)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            renderer, users = self._entries.get(key, (None, 0))
            if renderer is None:
                renderer = await self._make(spec)
            self._entries[key] = (renderer, users + 1)
            return renderer

    def release(self, spec: MediaSpec) -> None:
        key = self._key(spec)
        renderer, users = self._entries.get(key, (None, 0))
        if users <= 1:
            self._entries.pop(key, None)
            self._locks.pop(key, None)
        else:
            self._entries[key] = (renderer, users - 1)

    def __len__(self) -> int:
        return len(self._entries)


class SessionClosed(Exception):
    """The session ended while a socket was connecting."""


class MediaRefused(Exception):
    """session.init asked for media this session may not have: an `error` event, then close."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


# (session_id, cost units) → None, or raises errors.NoCapacity.
Relet = Callable[[str, float], Any]
SaveVideo = Callable[[str, int, int, int], Awaitable[None]]


class LiveSession:
    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        pool: RenderPool,
        renderers: SharedRenderers,
        make_driver: DriverFactory,
        end_soon: Callable[[str, str], None],
        save_stats: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        outputs: Sequence[OutputFactory] = (),
        relet: Relet | None = None,
        save_video: SaveVideo | None = None,
    ) -> None:
        self.session = session
        self.session_id: str = session.session_id
        self.settings = settings
        self.runner: SessionRunner | None = None
        self.spec: MediaSpec | None = None
        # The first valid session.init (its `room` is for the Daily output's hook).
        self.init: protocol.SessionInit | None = None
        self.link: SocketLink | None = None
        self._pool = pool
        self._renderers = renderers
        self._make_driver = make_driver
        self._end_soon = end_soon
        self._save_stats = save_stats
        self._clock = clock or WallClock()
        self._outputs = tuple(outputs)
        self._relet = relet
        self._save_video = save_video
        self._lock = asyncio.Lock()
        self._closed = False

    def _spec(self, init: protocol.SessionInit) -> MediaSpec:
        s = self.session
        return MediaSpec(
            avatar_id=s.avatar_id,
            device=s.device or "cpu",
            width=init.video_width or s.video_width,
            height=init.video_height or s.video_height,
            fps=init.fps or s.fps,
            sample_rate_hz=init.sample_rate_hz,
        )

    async def _admit(self, spec: MediaSpec) -> None:
        """Bounds, then the lease in cost units, then the stored size; MediaRefused if not."""
        video = self.settings.video
        if spec.width * spec.height > video.max_pixels or spec.fps > video.max_fps:
            raise MediaRefused(
                protocol.E_INVALID_VIDEO_SIZE,
                f"{spec.width}x{spec.height} at {spec.fps} fps is over this server's bounds"
                f" ({video.max_pixels} pixels, {video.max_fps} fps)",
                protocol.CLOSE_PROTOCOL,
            )
        if self._relet is not None:
            try:
                self._relet(self.session_id, cost_units(spec.width, spec.height, spec.fps))
            except NoCapacity as exc:
                raise MediaRefused(
                    protocol.E_NO_CAPACITY,
                    f"No capacity for {spec.width}x{spec.height} at {spec.fps} fps on this"
                    " session's device; ask for a smaller size or fps",
                    protocol.CLOSE_NO_CAPACITY,
                ) from exc
        s = self.session
        if self._save_video is not None and (spec.width, spec.height, spec.fps) != (
            s.video_width,
            s.video_height,
            s.fps,
        ):
            await self._save_video(self.session_id, spec.width, spec.height, spec.fps)

    async def _start_media(self, spec: MediaSpec) -> SessionRunner:
        renderer = await self._renderers.acquire(spec)
        try:
            return await self._wire_media(spec, renderer)
        except BaseException:
            self._renderers.release(spec)
            raise

    async def _wire_media(self, spec: MediaSpec, renderer: Renderer) -> SessionRunner:
        settings = self.settings
        options = RunnerOptions(
            session_id=self.session_id,
            fps=spec.fps,
            sample_rate_hz=spec.sample_rate_hz,
            max_buffer_s=settings.speech.max_buffer_s,
            silence_gap_ms=settings.speech.silence_gap_ms,
            idle_timeout_s=settings.session.idle_timeout_s,
            reconnect_grace_s=settings.ws.reconnect_grace_s,
        )
        timeline = await asyncio.to_thread(
            Timeline, timeline_path(settings.data_dir, self.session_id)
        )
        runner = SessionRunner(
            options,
            renderer=renderer,
            worker=self._pool.get(spec.device),
            driver=await self._make_driver(spec),
            clock=self._clock,
            timeline=timeline,
            on_end=lambda reason: self._end_soon(self.session_id, reason),
        )
        for make_output in self._outputs:
            sink = await make_output(self, runner)
            if sink is not None:
                runner.add_sink(sink)
        runner.start()
        return runner

    async def connect(
        self, link: SocketLink, init: protocol.SessionInit
    ) -> tuple[SessionRunner, bool]:
        """A socket sent a valid session.init: make or resume the media, make it current.

        Sends `connection.established` on `link`, then every event the session could not send
        while no socket was current. Returns (runner, resumed).
        """
        async with self._lock:
            if self._closed:
                raise SessionClosed(self.session_id)
            resumed = self.runner is not None
            if self.runner is None:
                wanted = self._spec(init)
                await self._admit(wanted)
                self.init = init
                self.spec = wanted
                self.runner = await self._start_media(wanted)
            runner, spec = self.runner, self.spec
            assert spec is not None
            old, self.link = self.link, link
            if old is not None:
                runner.detach(old, old.take_unsent())
                await old.close(protocol.CLOSE_REPLACED, "replaced")
            link.send_event(
                protocol.connection_established(
                    self.session_id,
                    resumed=resumed,
                    width=spec.width,
                    height=spec.height,
                    fps=spec.fps,
                )
            )
            runner.attach(link)
            return runner, resumed

    def disconnect(self, link: SocketLink) -> None:
        """The socket closed: its unsent events wait for the next one; the grace starts."""
        if self.link is not link:
            return
        self.link = None
        if self.runner is not None:
            self.runner.detach(link, link.take_unsent())

    def stats(self) -> dict[str, int | None] | None:
        """The live counters (SPEC §3 `stats`, whole numbers); None before the media starts."""
        return _int_stats(self.runner.stats()) if self.runner is not None else None

    def timeline_jsonl(self) -> str | None:
        """The timeline when it is kept in memory only (no file to read); else None."""
        if self.runner is None or self.runner.timeline.path is not None:
            return None
        return self.runner.timeline.jsonl()

    async def aclose(self, reason: str) -> None:
        """The manager ends the session: stop media, store stats, tell and close the socket."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
        stats = None
        if self.runner is not None:
            stats = await self.runner.aclose(str(reason))
            assert self.spec is not None
            self._renderers.release(self.spec)
        if stats is not None and self._save_stats is not None:
            try:
                await self._save_stats(self.session_id, _int_stats(stats))
            except Exception:
                log.exception("session %s: could not store its stats", self.session_id)
        link, self.link = self.link, None
        if link is not None:
            link.send_event(protocol.session_state("ended", str(reason)))
            await link.close(protocol.CLOSE_ENDED, "session ended")


def _int_stats(stats: dict[str, Any]) -> dict[str, int | None]:
    return {k: (None if v is None else int(round(v))) for k, v in stats.items()}


def frame_size(spec: MediaSpec) -> FrameSize:
    return FrameSize(spec.width, spec.height)
