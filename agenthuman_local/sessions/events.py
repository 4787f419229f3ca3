"""EventPath: the one ordered path a session's events leave by (replies and server events alike).

Each event is written to the timeline at the current pts, then sent on the attached socket link
or kept in the outbox that a reconnecting socket drains in order (`sessions.outbox`), then seen
by each event listener (e.g. the viewer's room state), on the loop, as it leaves; a listener
must return at once, and one that raises is logged and skipped. The path also knows since when
no socket has been attached (`detached_at`), which the runner's reconnect grace reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agenthuman_local.clock import Clock
from agenthuman_local.sessions.outbox import EventLink, Outbox
from agenthuman_local.sessions.timeline import Timeline

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]


class EventPath:
    def __init__(
        self, session_id: str, timeline: Timeline, clock: Clock, *, max_outbox_events: int
    ) -> None:
        self._session_id = session_id
        self._timeline = timeline
        self._clock = clock
        self._outbox = Outbox(max_outbox_events)
        self._listeners: list[Listener] = []
        # When the last socket went away; None while one is attached (and before the first).
        self.detached_at: float | None = None

    @property
    def attached(self) -> bool:
        return self._outbox.link is not None

    def attach(self, link: EventLink) -> None:
        """Events missed while detached go to `link` first, in order."""
        self.detached_at = None if self._outbox.attach(link) else self._clock.now()

    def detach(self, link: EventLink, unsent: list[dict[str, Any]] | None = None) -> None:
        """`link` closed; `unsent` are events it took but never sent (they go first)."""
        if self._outbox.detach(link, unsent):
            self.detached_at = self._clock.now()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, pts_ms: int, event: dict[str, Any]) -> None:
        self._timeline.event(pts_ms, event)
        if not self._outbox.send(event):
            self.detached_at = self._clock.now()
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("session %s: an event listener failed", self._session_id)
