"""Per-socket fairness on the session WebSocket (SPEC §8, issue 12).

Fairness between sockets: each socket may send `ws.max_messages_per_s` messages a second
(`MessageBudget`, bursts of twice that). Past it the handler waits before it reads on, so the
client's messages back up in its own buffers and TCP (aiohttp stops reading a socket whose
queue is full) — nothing is dropped, `played_ms`/`dropped_ms` stay exact — and the client gets
one `error RATE_LIMITED` per second of throttling. A storm on one socket then costs the event
loop no more than a busy, well-behaved client, and its neighbours stay on time.

Repeated control messages reach the session at most once a frame (`ControlCoalescer`): an
`agent.interrupt`, `session.keep_alive` or listening cue that repeats the command just before
it (nothing else between) within one frame of the one the session had is answered by the
socket handler (`api.ws`), with the reply the session would have given —
`agent.interrupt.confirmed` with nothing to drop (`utterance_id` null, 0 ms: the interrupt
before already dropped everything and no speech came since), `session.keep_alive.ack`, nothing
for a cue — in the same order on the same queue, so every message is still answered, but a
storm of them costs no rendering, no timeline line and no listener call each.
"""

from __future__ import annotations

from collections.abc import Callable

from agenthuman_local import protocol


class MessageBudget:
    """A token bucket over one socket's messages: `rate` a second, bursts up to `2 * rate`."""

    RATE_LIMITED_EVERY_S = 1.0  # at most one RATE_LIMITED event per this many seconds

    def __init__(self, rate: float, now: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = 2.0 * rate
        self._tokens = self.capacity
        self._now = now
        self._stamp = now()
        self._warned_at: float | None = None

    def take(self) -> float:
        """Spend one message; → the seconds to wait before handling it (0 within budget)."""
        now = self._now()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def should_warn(self) -> bool:
        """Whether to send RATE_LIMITED now (once per RATE_LIMITED_EVERY_S while throttled)."""
        now = self._now()
        if self._warned_at is not None and now - self._warned_at < self.RATE_LIMITED_EVERY_S:
            return False
        self._warned_at = now
        return True


class ControlCoalescer:
    """Which control messages repeat the one before within a frame (module docstring)."""

    def __init__(self, frame_s: float, now: Callable[[], float]) -> None:
        self.frame_s = frame_s
        self._now = now
        self._last: protocol.Command | None = None
        self._last_at = 0.0

    def absorb(self, cmd: protocol.Command) -> bool:
        """True: `cmd` is the session's last command again, less than a frame after the
        session had it — answer it without the session. False: dispatch it (and remember)."""
        if not isinstance(cmd, protocol.Interrupt | protocol.KeepAlive | protocol.Listening):
            self._last = None  # speech (or anything else) between: the next one counts again
            return False
        now = self._now()
        if cmd == self._last and now - self._last_at < self.frame_s:
            return True
        self._last, self._last_at = cmd, now
        return False
