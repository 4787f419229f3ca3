"""Where daily-python's objects and threads meet the loop, apart from daily-python itself (which
it never imports; `daily.load_daily` does, when a transport starts).

- `DailyLib`: the parts of daily-python the transport uses, so tests can pass fakes.
- `ensure_initialized`: `Daily.init()` at most once per process, behind a lock.
- `handler_class`: daily's `EventHandler` subclassed to forward the events we use.
- `completion_callback`: a daily completion that resolves an asyncio future from any thread,
  through `call_soon_threadsafe` and nothing else (research/daily-and-transports.md §1.2).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DailyLib:
    """The parts of daily-python we use; tests pass fakes with the same shapes.

    `init` is the raw `Daily.init`; `ensure_initialized` guards it.
    """

    init: Callable[[], None]
    EventHandler: type
    CallClient: Callable[..., Any]
    CustomVideoSource: Callable[..., Any]
    CustomVideoTrack: Callable[..., Any]
    CustomAudioSource: Callable[..., Any]
    CustomAudioTrack: Callable[..., Any]


_init_lock = threading.Lock()
_initialized: set[DailyLib] = set()


def ensure_initialized(lib: DailyLib) -> None:
    """`lib.init()` at most once per process: a second `Daily.init()` aborts the process."""
    with _init_lock:
        if lib not in _initialized:
            lib.init()
            _initialized.add(lib)


@functools.cache
def handler_class(base: type) -> type:
    """A subclass of daily's `EventHandler` that forwards the events we use to `forward`."""

    class _Handler(base):  # type: ignore[valid-type, misc]
        # daily's EventHandler.__new__ rejects keyword arguments (pipecat does the same).
        def __new__(cls, *_args: Any, **_kwargs: Any) -> Any:
            return super().__new__(cls)

        def __init__(self, forward: Callable[[str, tuple[Any, ...]], None]) -> None:
            self._forward = forward

        def on_participant_joined(self, participant: Any) -> None:
            self._forward("participant_joined", (participant,))

        def on_participant_left(self, participant: Any, reason: Any) -> None:
            self._forward("participant_left", (participant, reason))

        def on_error(self, message: Any) -> None:
            self._forward("error", (message,))

        def on_call_state_updated(self, state: Any) -> None:
            self._forward("call_state", (state,))

    return _Handler


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def completion_callback(fut: asyncio.Future[Any]) -> Callable[..., None]:
    """A daily completion that resolves `fut` on its loop, from any thread."""
    loop = fut.get_loop()

    def done(*args: Any) -> None:
        try:
            loop.call_soon_threadsafe(_resolve, fut, args[0] if len(args) == 1 else args)
        except RuntimeError:  # the loop is closed: no one is waiting any more
            pass

    return done
