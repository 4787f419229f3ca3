"""A session's lifecycle: its states, the one function that moves between them, why it ended.

The state is never stored: it is derived from the timestamps, in SPEC §3's order (`ended_at`
set → ended; `started_at` set → started; else created). Pure.
"""

from __future__ import annotations

import enum

from agenthuman_local.errors import Conflict


class SessionState(enum.StrEnum):
    CREATED = "created"
    STARTED = "started"
    ENDED = "ended"


class EndReason(enum.StrEnum):
    CLIENT_REQUEST = "client_request"
    WEBSOCKET_CLOSED = "websocket_closed"
    WEBSOCKET_TIMEOUT = "websocket_timeout"
    EXPIRED = "expired"
    IDLE_TIMEOUT = "idle_timeout"
    ROOM_EMPTY = "room_empty"
    SERVER_SHUTDOWN = "server_shutdown"
    SERVER_RESTART = "server_restart"
    ERROR = "error"


TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.CREATED: frozenset({SessionState.STARTED, SessionState.ENDED}),
    SessionState.STARTED: frozenset({SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
}


class InvalidTransition(Conflict):
    def __init__(self, current: SessionState, target: SessionState) -> None:
        super().__init__(f"A session cannot go from {current.value} to {target.value}")
        self.current = current
        self.target = target


def transition(current: SessionState, target: SessionState) -> SessionState:
    """Return `target` if a session in `current` may move there; raise InvalidTransition if not."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)
    return target


def derive_state(started_at: float | None, ended_at: float | None) -> SessionState:
    if ended_at is not None:
        return SessionState.ENDED
    if started_at is not None:
        return SessionState.STARTED
    return SessionState.CREATED
