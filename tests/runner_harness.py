"""The session-runner harness its tests share: a real runner with the real driver on a virtual
clock, a fake renderer, a memory sink and a list of the events it sends (`Harness`, `ListLink`),
and `tone`, loud audio whose samples count up so order and gaps can be checked."""

import numpy as np

from agenthuman_local.engine.driver import Driver
from agenthuman_local.sessions.runner import RunnerOptions, SessionRunner
from tests.fakes import FakeRenderer, MemorySink, VirtualClock

FPS = 25


class ListLink:
    def __init__(self):
        self.events = []
        self.alive = True

    def send_event(self, event):
        if not self.alive:
            return False
        self.events.append(event)
        return True

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]


class Harness:
    def __init__(self, worker, renderer=None, clock=None, **options):
        self.clock = clock or VirtualClock()
        self.worker = worker
        self.sink = MemorySink()
        self.link = ListLink()
        self.ended = []
        opts = {"session_id": "sess_test", "fps": FPS, **options}
        self.runner = SessionRunner(
            RunnerOptions(**opts),
            renderer=renderer or FakeRenderer(),
            worker=worker,
            driver=Driver(opts["fps"], seed=1, deterministic=True),
            clock=self.clock,
            on_end=self.ended.append,
        )
        self.runner.add_sink(self.sink)
        self.runner.attach(self.link)
        self.fps = opts["fps"]

    async def start(self):
        self.runner.start()
        await self.clock.settled(2)

    async def step(self, n=1, *, drain=True):
        for _ in range(n):
            if drain:
                await self.worker.drain()
            self.clock.advance(1 / self.fps)
            await self.clock.settled(2)

    @property
    def frames(self):
        return list(self.sink.frames)


def tone(n, value_start=1):
    """Loud audio whose sample values count up, so order and gaps can be checked."""
    t = np.arange(n)
    wave = (np.sin(2 * np.pi * 220 * t / 16000) * 12000).astype(np.int16)
    wave[::2] = (np.arange(value_start, value_start + (n + 1) // 2) % 30000).astype(np.int16)
    return wave
