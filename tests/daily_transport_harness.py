"""What the DailyTransport tests share: a transport on a fake daily-python (`make`), callbacks
that remember what they saw and on which thread (`Recorder`), and a wait for what the fake's
threads do (`until`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np

from agenthuman_local.transports.daily import DailyCallbacks, DailyTransport
from tests.fakes_daily import FakeDaily

W, H, SR = 64, 48, 16_000


class Recorder:
    """Callbacks that remember what they saw and on which thread."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.threads: set[int] = set()
        self.room_empty = asyncio.Event()
        self.changed = asyncio.Event()

    def _note(self, *event) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(event)
        self.changed.set()

    def callbacks(self) -> DailyCallbacks:
        return DailyCallbacks(
            on_participant_joined=lambda pid, name: self._note("joined", pid, name),
            on_participant_left=lambda pid, reason: self._note("left", pid, reason),
            on_error=lambda message: self._note("error", message),
            on_call_state=lambda state: self._note("state", state),
            on_room_empty=lambda: (self._note("empty"), self.room_empty.set()),
        )

    async def wait_for(self, event: tuple) -> None:
        while event not in self.events:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


def make(daily: FakeDaily, rec: Recorder | None = None, **kw) -> DailyTransport:
    kw.setdefault("join_backoff_s", 0.01)
    return DailyTransport(
        "https://example.daily.co/room",
        "tok",
        "AI Avatar (AH)",
        W,
        H,
        SR,
        (rec or Recorder()).callbacks(),
        lib=daily.lib,
        **kw,
    )


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait for something another thread does (the fake's threads cannot set asyncio events)."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def frame(value: int) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)
