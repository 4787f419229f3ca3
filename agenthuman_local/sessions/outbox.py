"""Where a session's events go: the current socket link, or an ordered outbox until one attaches.

Events are never reordered: a socket that attaches first gets what waited in the outbox, and a
socket that goes away hands back what it took but never sent, which goes to the front.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol


class EventLink(Protocol):
    """The socket side: takes one event for sending; False when it can no longer send."""

    def send_event(self, event: dict[str, Any]) -> bool: ...


class Outbox:
    def __init__(self, max_events: int = 4096) -> None:
        self.link: EventLink | None = None
        self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._max_events = max_events

    def attach(self, link: EventLink) -> bool:
        """Make `link` current and send it what waited; False if it failed part-way."""
        self.link = link
        while self._queue:
            event = self._queue.popleft()
            if not link.send_event(event):
                self._queue.appendleft(event)
                self.link = None
                return False
        return True

    def detach(self, link: EventLink, unsent: list[dict[str, Any]] | None = None) -> bool:
        """`link` went away; True if it was the current one."""
        if unsent:
            self._queue.extendleft(reversed(unsent))
        if self.link is not link:
            return False
        self.link = None
        return True

    def send(self, event: dict[str, Any]) -> bool:
        """Deliver or keep `event`; False if the current link just failed (it is detached)."""
        ok = True
        if self.link is not None:
            if self.link.send_event(event):
                return True
            self.link = None
            ok = False
        if len(self._queue) >= self._max_events:
            # Bounded like every queue; a client gone this long has lost the oldest events.
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        return ok
