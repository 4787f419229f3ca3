"""A fake daily-python that keeps the real library's threading rules (daily-and-transports.md §1).

- Completions and events of a client run one after another on that client's own thread
  (`fake-daily-N`), never on the caller's; with `sync_completions=True`, completions run on the
  calling thread before the call returns, as some real completions do.
- Requests run one at a time: a `leave()` issued during a pending join completes after it.
- `release()` blocks the calling thread until pending requests finish; later calls raise.
- `CallClient` before `init()`, or `init()` twice, raise (the real library aborts the process).
- Custom sources check frame sizes and types; the audio source is clocked in real time on its
  own thread, and freeing it with a completion pending is recorded as a violation (the real one
  deadlocks).

Everything the transport does is appended to `FakeDaily.calls`, in order, from any thread.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agenthuman_local.transports.daily import DailyLib

HANG = "hang"  # a join_results entry: the join completes only after `hang_s`


class FakeEventHandler:
    # Like daily's: positional arguments only.
    def __new__(cls, *_args: Any) -> FakeEventHandler:
        return super().__new__(cls)


class FakeCustomVideoSource:
    def __init__(self, daily: FakeDaily, width: int, height: int, color_format: str = "RGBA"):
        if color_format not in ("RGBA", "BGRA", "ARGB", "ABGR", "RGB", "I420"):
            raise ValueError(f"invalid color format '{color_format}'")
        self.width, self.height, self.color_format = width, height, color_format
        self._daily = daily
        self.frames: list[bytes] = []

    def write_frame(self, frame: bytes) -> None:
        if not isinstance(frame, bytes):
            raise TypeError(f"'{type(frame).__name__}' object is not an instance of 'bytes'")
        expected = self.width * self.height * len(self.color_format)
        if len(frame) != expected:
            raise ValueError(f"frame size mismatch: expected {expected} bytes, got {len(frame)}")
        self.frames.append(frame)
        self._daily.record("write_frame")


class FakeCustomAudioSource:
    def __init__(self, daily: FakeDaily, sample_rate: int, channels: int, auto_silence=True):
        self.sample_rate, self.channels = sample_rate, channels
        self._daily = daily
        self._jobs: queue.SimpleQueue[tuple[int, Callable[[int], None] | None]] = (
            queue.SimpleQueue()
        )
        self._pending = 0
        self._lock = threading.Lock()
        self.chunks: list[bytes] = []
        self.completion_threads: list[str] = []
        threading.Thread(target=self._clock, name="fake-daily-audio", daemon=True).start()

    def write_frames(self, frames: bytes, completion: Callable[[int], None] | None = None) -> int:
        if len(frames) % 2:
            raise ValueError("frames bytestring should contain 16-bit samples")
        n = len(frames) // 2 // self.channels
        self.chunks.append(frames)
        with self._lock:
            self._pending += 1
        self._jobs.put((n, completion))
        return n

    def _clock(self) -> None:
        while True:
            n, completion = self._jobs.get()
            if n < 0:
                return
            time.sleep(n / self.sample_rate)  # real time, like CustomAudioSource
            with self._lock:
                self._pending -= 1
            if completion is not None:
                self.completion_threads.append(threading.current_thread().name)
                completion(n)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def __del__(self) -> None:
        if self._pending:
            self._daily.violations.append("audio source freed with a completion pending")
        self._jobs.put((-1, None))


class FakeTrack:
    _ids = itertools.count(1)

    def __init__(self, source: Any) -> None:
        self.source = source
        self.id = f"track-{next(self._ids)}"


def _participant(pid: str, name: str = "", local: bool = False) -> dict[str, Any]:
    return {"id": pid, "info": {"isLocal": local, "userName": name}}


class FakeCallClient:
    def __init__(self, daily: FakeDaily, event_handler: Any = None) -> None:
        if not daily.initialized:
            raise RuntimeError("Execution context is not initialized")
        if not isinstance(event_handler, FakeEventHandler):
            raise TypeError("event_handler must be an EventHandler")
        self._daily = daily
        self._handler = event_handler
        self._requests: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._released = False
        self.remote: dict[str, dict[str, Any]] = {}
        self.user_name: str | None = None
        self.join_settings: dict[str, Any] | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"fake-daily-{len(daily.clients) + 1}", daemon=True
        )
        self.thread.start()
        daily.clients.append(self)

    # -- the daily-python surface ---------------------------------------------------------

    def set_user_name(self, user_name: str) -> None:
        self._check()
        self.user_name = user_name

    def update_subscription_profiles(self, settings: Any, completion: Any = None) -> None:
        self._check()
        self._daily.record("update_subscription_profiles")
        self._complete(completion, None)

    def participants(self) -> dict[str, Any]:
        self._check()
        return {"local": _participant("me", local=True), **self.remote}

    def join(self, url: str, token: Any = None, client_settings: Any = None, completion=None):
        self._check()
        self._daily.record("join")
        self.join_settings = client_settings
        attempt = len([c for c in self._daily.calls if c == "join"]) - 1
        results = self._daily.join_results
        result = results[attempt] if attempt < len(results) else None

        def run() -> None:
            self._event("on_participant_updated", _participant("me", local=True))
            if result == HANG:
                time.sleep(self._daily.hang_s)
                error: str | None = "Connection(Api(RoomLookup(…Error(Connect, Elapsed(()))))"
            else:
                time.sleep(self._daily.join_delay_s)
                error = result
            if error is None:
                for pid, name in self._daily.already_in_room:
                    self.remote[pid] = _participant(pid, name)
                    self._event("on_participant_joined", self.remote[pid])
                self._event("on_call_state_updated", "joined")
                self._finish(completion, ({"participants": {}}, None))
            else:
                self._event("on_error", "Failed to fetch room information")
                self._event("on_call_state_updated", "leaving")
                self._event("on_call_state_updated", "left")
                self._finish(completion, (None, error))
                self._event("on_error", "Error handling join: " + error)

        self._requests.put(run)

    def leave(self, completion: Any = None) -> None:
        self._check()
        self._daily.record("leave")

        def run() -> None:
            self._event("on_call_state_updated", "leaving")
            self._event("on_call_state_updated", "left")
            self._finish(completion, (None,))

        self._requests.put(run)

    def release(self) -> None:
        self._check()
        self._daily.record("release:start")
        self._daily.release_threads.append(threading.current_thread().name)
        self._requests.put(None)
        self.thread.join()  # blocks until pending requests finish, like the real one
        self._released = True
        self._daily.record("release")

    # -- test controls: room events arrive on the client's thread ---------------------------

    def remote_joins(self, pid: str, name: str = "guest") -> None:
        def run() -> None:
            self.remote[pid] = _participant(pid, name)
            self._event("on_participant_joined", self.remote[pid])

        self._requests.put(run)

    def remote_leaves(self, pid: str, reason: str = "leftCall") -> None:
        def run() -> None:
            participant = self.remote.pop(pid, _participant(pid))
            self._event("on_participant_left", participant, reason)

        self._requests.put(run)

    def error_event(self, message: str) -> None:
        self._requests.put(lambda: self._event("on_error", message))

    def kicked_out(self) -> None:
        self._requests.put(lambda: self._event("on_call_state_updated", "left"))

    # -- internals ----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._released:
            raise RuntimeError("this object has already been released")

    def _run(self) -> None:
        while (job := self._requests.get()) is not None:
            job()

    def _event(self, name: str, *args: Any) -> None:
        self._daily.event_threads.append(threading.current_thread().name)
        method = getattr(self._handler, name, None)
        if method is not None:
            method(*args)

    def _finish(self, completion: Any, args: tuple[Any, ...]) -> None:
        if completion is not None:
            self._daily.completion_threads.append(threading.current_thread().name)
            completion(*args)

    def _complete(self, completion: Any, *args: Any) -> None:
        """A completion that needs no network: synchronous or on the client's thread."""
        if completion is None:
            return
        if self._daily.sync_completions:
            self._finish(completion, args)
        else:
            self._requests.put(lambda: self._finish(completion, args))


class FakeDaily:
    """One fake library: configure it, hand `lib` to the transport, then inspect `calls`."""

    def __init__(
        self,
        *,
        join_results: list[str | None] | None = None,
        join_delay_s: float = 0.01,
        hang_s: float = 1.0,
        sync_completions: bool = False,
        already_in_room: list[tuple[str, str]] | None = None,
    ) -> None:
        self.join_results = join_results or []
        self.join_delay_s = join_delay_s
        self.hang_s = hang_s
        self.sync_completions = sync_completions
        self.already_in_room = already_in_room or []
        self.initialized = False
        self.init_calls = 0
        self.clients: list[FakeCallClient] = []
        self.video_sources: list[FakeCustomVideoSource] = []
        self.audio_sources: list[FakeCustomAudioSource] = []
        self.calls: list[str] = []
        self.event_threads: list[str] = []
        self.completion_threads: list[str] = []
        self.violations: list[str] = []
        self.release_threads: list[str] = []
        self._lock = threading.Lock()
        self.lib = DailyLib(
            init=self._init,
            EventHandler=FakeEventHandler,
            CallClient=lambda event_handler=None: FakeCallClient(self, event_handler),
            CustomVideoSource=self._video_source,
            CustomVideoTrack=FakeTrack,
            CustomAudioSource=self._audio_source,
            CustomAudioTrack=FakeTrack,
        )

    @property
    def client(self) -> FakeCallClient:
        return self.clients[-1]

    def record(self, call: str) -> None:
        with self._lock:
            self.calls.append(call)

    def _init(self) -> None:
        self.init_calls += 1
        if self.initialized:
            raise RuntimeError("Execution context already exists!")
        self.initialized = True

    def _video_source(self, width: int, height: int, color_format: str = "RGBA") -> Any:
        source = FakeCustomVideoSource(self, width, height, color_format)
        self.video_sources.append(source)
        return source

    def _audio_source(self, sample_rate: int, channels: int, auto_silence: bool = True) -> Any:
        source = FakeCustomAudioSource(self, sample_rate, channels, auto_silence)
        self.audio_sources.append(source)
        return source


@dataclass(frozen=True)
class SinkFrame:
    """A published frame as the transports' Sink adapters read it (transports.base.PublishedFrame).

    Kept here, not imported, so the transport tests do not depend on the session layer.
    """

    session_id: str
    frame_index: int
    pts_ms: int
    rgb: np.ndarray
    samples: np.ndarray
    sample_rate_hz: int = 16_000

    @property
    def pcm(self) -> bytes:
        return self.samples.astype("<i2").tobytes()
