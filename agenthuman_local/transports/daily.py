"""The avatar as a participant of a Daily room: one custom video track, one custom audio track.

The only module that imports `daily` (daily-python), and only when a transport starts, so the
package works without it. It follows the library's measured rules
(research/daily-and-transports.md §1):

- `Daily.init()` once per process behind a lock; `deinit()` never (freeing custom sources after
  it aborts the process, and exit is clean without it).
- Completions and events run on daily's own thread, one after another, and a completion may
  also run synchronously on the calling thread. Both cross to the loop with
  `call_soon_threadsafe` and nothing else: daily's thread never waits on the loop.
- Custom sources check frame sizes themselves; we check shape and dtype first anyway, so a bad
  frame is our `ValueError`, never a native crash.
- Audio goes out in 20–40 ms chunks, each awaited through its completion: `CustomAudioSource`
  is clocked in real time, so the completions pace the output and keep the native queue short
  (it has no flush, so a short queue is what keeps an interrupt quick).
- Join has a timeout per attempt and retries only network errors (never a bad URL or token).
- Shutdown: stop the producers, await the last audio completion (an audio source freed while a
  completion is pending deadlocks), `leave()` with a timeout, `release()` on a worker thread
  (it blocks while a join is pending, up to ~49 s offline).

What the room means (callbacks, join errors, settings, presence) is in `daily_room`; how daily's
objects and threads meet the loop (`DailyLib`, the init guard, the event handler, completions) is
in `daily_bridge`; the Sink adapter is `DailySink`, at the end of this module. Use::

    transport = DailyTransport(url, token, "AI Avatar (AH)", 960, 720, 16000, callbacks)
    await transport.start()               # raises DailyJoinError; call aclose() either way
    transport.publish(frame.rgb, frame.pcm)   # non-blocking; a bounded queue, oldest dropped
    await transport.aclose()

`publish` feeds a pump task that writes each frame's video, then its audio paced in real time,
so the room sees lips and sound together. `write_video` / `write_audio` are the raw calls.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import logging
from typing import Any

import numpy as np

from agenthuman_local.clock import Clock
from agenthuman_local.transports.base import MediaFrame
from agenthuman_local.transports.daily_bridge import (
    DailyLib,
    completion_callback,
    ensure_initialized,
    handler_class,
)
from agenthuman_local.transports.daily_room import (
    SUBSCRIBE_TO_NOTHING,
    DailyCallbacks,
    DailyJoinError,
    RoomPresence,
    client_settings,
    invoke,
    is_network_error,
)

log = logging.getLogger(__name__)

# Audio sources whose last completion never came: freeing one would deadlock the process, so
# they are kept for its lifetime (a few KB each, and only after a stuck shutdown).
_UNFREEABLE: list[Any] = []
# Releases that outlived aclose()'s wait: owned here until daily lets them finish.
_RELEASING: set[asyncio.Task[None]] = set()


@functools.cache
def load_daily() -> DailyLib:
    """Import daily-python (lazily) and describe it. The same object every call."""
    import daily

    return DailyLib(
        init=daily.Daily.init,
        EventHandler=daily.EventHandler,
        CallClient=daily.CallClient,
        CustomVideoSource=daily.CustomVideoSource,
        CustomVideoTrack=daily.CustomVideoTrack,
        CustomAudioSource=daily.CustomAudioSource,
        CustomAudioTrack=daily.CustomAudioTrack,
    )


class _State(enum.Enum):
    NEW = "new"
    JOINING = "joining"
    JOINED = "joined"
    FAILED = "failed"
    LEFT = "left"
    CLOSED = "closed"


class DailyTransport:
    def __init__(
        self,
        room_url: str,
        token: str | None,
        display_name: str,
        width: int,
        height: int,
        sample_rate_hz: int,
        callbacks: DailyCallbacks | None = None,
        *,
        fps: int = 25,
        empty_room_timeout_s: float = 30.0,
        join_timeout_s: float = 20.0,
        join_attempts: int = 3,
        join_backoff_s: float = 1.0,
        leave_timeout_s: float = 5.0,
        release_timeout_s: float = 60.0,
        audio_chunk_ms: int = 40,
        video_bitrate_bps: int = 1_500_000,
        queue_frames: int = 8,
        lib: DailyLib | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not 20 <= audio_chunk_ms <= 40:
            raise ValueError(f"audio_chunk_ms must be 20-40, got {audio_chunk_ms}")
        self.room_url = room_url
        self.display_name = display_name
        self.width = width
        self.height = height
        self.sample_rate_hz = sample_rate_hz
        self.fps = fps
        self.frames_dropped = 0
        self._token = token
        self._callbacks = callbacks or DailyCallbacks()
        self._join_timeout_s = join_timeout_s
        self._join_attempts = max(1, join_attempts)
        self._join_backoff_s = join_backoff_s
        self._leave_timeout_s = leave_timeout_s
        self._release_timeout_s = release_timeout_s
        self._chunk_bytes = sample_rate_hz * audio_chunk_ms // 1000 * 2
        self._video_bitrate_bps = video_bitrate_bps
        self._lib = lib
        self._state = _State.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._video_source: Any = None
        self._video_track: Any = None
        self._audio_source: Any = None
        self._audio_track: Any = None
        self._presence = RoomPresence(self._callbacks, empty_room_timeout_s, clock)
        self._audio_lock = asyncio.Lock()
        self._audio_fut: asyncio.Future[Any] | None = None
        self._queue: collections.deque[tuple[np.ndarray, bytes]] = collections.deque(
            maxlen=queue_frames
        )
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._closed: asyncio.Event | None = None

    @property
    def joined(self) -> bool:
        return self._state is _State.JOINED

    @property
    def participant_ids(self) -> frozenset[str]:
        """The other participants in the room (never the avatar itself)."""
        return frozenset(self._presence.ids)

    def client_settings(self, video_track_id: str, audio_track_id: str) -> dict[str, Any]:
        return client_settings(
            video_track_id, audio_track_id, fps=self.fps, video_bitrate_bps=self._video_bitrate_bps
        )

    async def start(self) -> None:
        """Join the room. Raises `DailyJoinError`; the caller calls `aclose()` either way."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"DailyTransport.start() called in state {self._state.value}")
        loop = self._loop = asyncio.get_running_loop()
        self._state = _State.JOINING
        try:
            lib = self._lib or load_daily()
        except ImportError as exc:
            self._fail()
            raise DailyJoinError(
                f"daily-python is not installed: {exc}", attempts=0, network=False
            ) from exc
        ensure_initialized(lib)
        self._video_source = lib.CustomVideoSource(self.width, self.height, "RGB")
        self._video_track = lib.CustomVideoTrack(self._video_source)
        self._audio_source = lib.CustomAudioSource(self.sample_rate_hz, 1)
        self._audio_track = lib.CustomAudioTrack(self._audio_source)
        handler = handler_class(lib.EventHandler)(self._from_daily)
        self._client = client = lib.CallClient(event_handler=handler)
        client.set_user_name(self.display_name)
        client.update_subscription_profiles(SUBSCRIBE_TO_NOTHING)
        settings = self.client_settings(self._video_track.id, self._audio_track.id)
        for attempt in range(1, self._join_attempts + 1):
            fut: asyncio.Future[Any] = loop.create_future()
            client.join(self.room_url, self._token, settings, completion=completion_callback(fut))
            try:
                # Shielded: daily completes the join later anyway; leave() waits for it.
                _data, error = await asyncio.wait_for(asyncio.shield(fut), self._join_timeout_s)
            except TimeoutError:
                # No retry: daily runs one request at a time, so a new join would only queue
                # behind the stuck one.
                self._fail()
                raise DailyJoinError(
                    f"join timed out after {self._join_timeout_s:g} s",
                    attempts=attempt,
                    network=True,
                ) from None
            if self._state is _State.CLOSED:
                raise DailyJoinError("closed while joining", attempts=attempt, network=False)
            if error is None:
                break
            network = is_network_error(str(error))
            if not network or attempt == self._join_attempts:
                self._fail()
                raise DailyJoinError(str(error), attempts=attempt, network=network)
            log.warning("daily join attempt %d failed, retrying: %s", attempt, error)
            await asyncio.sleep(self._join_backoff_s * attempt)
            if self._state is _State.CLOSED:
                raise DailyJoinError("closed while joining", attempts=attempt, network=False)
        self._state = _State.JOINED
        self._presence.activate(client.participants() or {})
        self._pump_task = loop.create_task(self._pump(), name=f"daily:{self.room_url}:pump")

    def _fail(self) -> None:
        if self._state is not _State.CLOSED:
            self._state = _State.FAILED

    def _check_frame(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"frame is {rgb.shape} {rgb.dtype}, expected ({self.height}, {self.width}, 3) uint8"
            )

    def write_video(self, rgb: np.ndarray) -> bool:
        """Write one RGB frame now (≈0.3 ms at 720p); False when not in the room."""
        self._check_frame(rgb)
        if self._state is not _State.JOINED:
            return False
        self._video_source.write_frame(rgb.tobytes())
        return True

    async def write_audio(self, pcm: bytes) -> int:
        """Send PCM s16le mono in real time; returns the samples daily took (0 when not joined)."""
        if len(pcm) % 2:
            raise ValueError(f"PCM s16le needs an even byte count, got {len(pcm)}")
        written = 0
        async with self._audio_lock:
            for offset in range(0, len(pcm), self._chunk_bytes):
                if self._state is not _State.JOINED or self._loop is None:
                    break
                fut: asyncio.Future[Any] = self._loop.create_future()
                self._audio_fut = fut
                self._audio_source.write_frames(
                    pcm[offset : offset + self._chunk_bytes], completion=completion_callback(fut)
                )
                # Shielded so a cancelled writer leaves the completion for aclose() to await.
                written += int(await asyncio.shield(fut) or 0)
        return written

    def publish(self, rgb: np.ndarray, pcm: bytes) -> None:
        """Queue one frame and its audio for the room; never blocks. Dropped when not joined."""
        self._check_frame(rgb)
        if self._state is not _State.JOINED:
            return
        if len(self._queue) == self._queue.maxlen:
            self.frames_dropped += 1
        self._queue.append((rgb, pcm))
        self._wake.set()

    async def _pump(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            rgb, pcm = self._queue.popleft()
            self.write_video(rgb)
            await self.write_audio(pcm)

    def _from_daily(self, name: str, args: tuple[Any, ...]) -> None:
        """Runs on daily's thread: hand the event to the loop and return at once."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_event, name, args)
        except RuntimeError:
            pass

    def _on_event(self, name: str, args: tuple[Any, ...]) -> None:
        if self._state is _State.CLOSED:
            return
        if name == "participant_joined":
            self._presence.joined(args[0])
        elif name == "participant_left":
            self._presence.left(args[0], str(args[1]))
        elif self._state is not _State.JOINED:
            log.debug("daily %s while not joined (part of the join result): %s", name, args)
        elif name == "error":
            invoke(self._callbacks.on_error, str(args[0]))
        elif name == "call_state":
            state = str(args[0])
            if state == "left":  # thrown out, or the room closed
                self._state = _State.LEFT
                self._presence.deactivate()
            invoke(self._callbacks.on_call_state, state)

    async def aclose(self) -> None:
        """Leave the room and release the client. Idempotent; concurrent calls wait together."""
        if self._closed is not None:
            await self._closed.wait()
            return
        self._closed = asyncio.Event()
        try:
            await self._shutdown()
        finally:
            self._closed.set()

    async def _shutdown(self) -> None:
        was = self._state
        self._state = _State.CLOSED
        self._presence.deactivate()
        self._queue.clear()
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        audio_fut = self._audio_fut
        if audio_fut is not None and not audio_fut.done():
            try:
                await asyncio.wait_for(asyncio.shield(audio_fut), self._leave_timeout_s)
            except TimeoutError:
                log.warning("daily audio completion never came; keeping its source alive")
                _UNFREEABLE.append(self._audio_source)
        client = self._client
        if client is None:
            return
        if was is not _State.NEW:
            assert self._loop is not None
            left: asyncio.Future[Any] = self._loop.create_future()
            client.leave(completion=completion_callback(left))
            try:
                error = await asyncio.wait_for(asyncio.shield(left), self._leave_timeout_s)
                if error:
                    log.warning("daily leave reported: %s", error)
            except TimeoutError:
                log.warning("daily leave timed out after %g s", self._leave_timeout_s)
        sources = (self._video_track, self._video_source, self._audio_track, self._audio_source)
        self._client = self._video_source = self._video_track = None
        self._audio_source = self._audio_track = None
        # release() blocks while a join is pending; the sources ride along so they are freed
        # only after the client that uses them.
        assert self._loop is not None
        release = self._loop.create_task(
            asyncio.to_thread(_release, client, sources), name=f"daily:{self.room_url}:release"
        )
        _RELEASING.add(release)
        release.add_done_callback(_RELEASING.discard)
        try:
            await asyncio.wait_for(asyncio.shield(release), self._release_timeout_s)
        except TimeoutError:
            log.warning("daily release still blocked after %g s", self._release_timeout_s)


def _release(client: Any, _sources: tuple[Any, ...]) -> None:
    client.release()


class DailySink:
    """Frames to a started `DailyTransport`; its own pump paces them into the room."""

    def __init__(self, transport: DailyTransport) -> None:
        self.transport = transport

    @property
    def dropped(self) -> int:
        return self.transport.frames_dropped

    async def publish(self, frame: MediaFrame) -> None:
        if frame.sample_rate_hz != self.transport.sample_rate_hz:
            raise ValueError(
                f"frame audio is {frame.sample_rate_hz} Hz, the room's track "
                f"{self.transport.sample_rate_hz} Hz"
            )
        self.transport.publish(frame.rgb, frame.pcm)

    async def aclose(self) -> None:
        await self.transport.aclose()
