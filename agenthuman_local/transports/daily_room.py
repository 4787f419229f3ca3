"""What a Daily room means to a session, apart from daily-python itself (which it never imports).

- `DailyCallbacks`: the typed bundle through which the transport reports the room, on the loop.
- `DailyJoinError` and `is_network_error`: which join failures are worth another attempt.
- `client_settings`: our custom tracks as camera and microphone, one video layer.
- `RoomPresence`: who else is in the room, and the `empty_room_timeout_s` timer (SPEC §7).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agenthuman_local.clock import Clock, WallClock

log = logging.getLogger(__name__)

# Substrings of daily's join errors that mean "the network failed", worth another attempt. A
# parse error (`InvalidUrl`), a bad token or a missing room fails the same way every time.
_NETWORK_ERROR_MARKERS = (
    "Error(Connect",
    "Elapsed",
    "failed to lookup address",
    "Connection refused",
    "Connection reset",
    "timed out",
)

# The avatar receives no media: it only publishes.
SUBSCRIBE_TO_NOTHING = {
    "base": {"camera": "unsubscribed", "microphone": "unsubscribed", "screenVideo": "unsubscribed"}
}


def is_network_error(message: str) -> bool:
    return any(marker in message for marker in _NETWORK_ERROR_MARKERS)


class DailyJoinError(Exception):
    """The join failed: `network` says whether it was a network error (those were retried)."""

    def __init__(self, message: str, *, attempts: int, network: bool) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.network = network


def _ignore(*_args: Any) -> None:
    return None


@dataclass(frozen=True)
class DailyCallbacks:
    """What the room tells the session, always called on the event loop; keep them quick.

    Nothing is reported before the join completes: a failed join is `start()`'s exception.
    """

    on_participant_joined: Callable[[str, str], None] = _ignore  # (participant_id, user_name)
    on_participant_left: Callable[[str, str], None] = _ignore  # (participant_id, reason)
    on_error: Callable[[str], None] = _ignore
    on_call_state: Callable[[str], None] = _ignore  # daily's states: "left" when thrown out
    on_room_empty: Callable[[], None] = _ignore  # no one else for empty_room_timeout_s


def invoke(callback: Callable[..., None], *args: Any) -> None:
    """Call a session's callback; its failure is logged, never raised into the transport."""
    try:
        callback(*args)
    except Exception:
        log.exception("daily callback %r failed", callback)


def client_settings(
    video_track_id: str, audio_track_id: str, *, fps: int, video_bitrate_bps: int
) -> dict[str, Any]:
    """The join settings: our two custom tracks as camera and microphone, one video layer."""
    return {
        "inputs": {
            "camera": {"isEnabled": True, "settings": {"customTrack": {"id": video_track_id}}},
            "microphone": {"isEnabled": True, "settings": {"customTrack": {"id": audio_track_id}}},
        },
        "publishing": {
            "camera": {
                "isPublishing": True,
                "sendSettings": {
                    "maxQuality": "low",
                    # A lone "high" layer is rejected; one full-size "low" layer is not.
                    "encodings": {
                        "low": {
                            "maxBitrate": video_bitrate_bps,
                            "maxFramerate": float(fps),
                            "scaleResolutionDownBy": 1.0,
                        }
                    },
                },
            },
            "microphone": {
                "isPublishing": True,
                "sendSettings": {"channelConfig": "mono", "bitrate": 64_000},
            },
        },
    }


def _participant_id(participant: Mapping[str, Any]) -> tuple[str, bool]:
    info = participant.get("info") or {}
    return str(participant.get("id", "")), bool(info.get("isLocal", False))


class RoomPresence:
    """The other participants, tracked from the first event; reported once `activate`d.

    Participants already in the room may be announced before the join completes, so they are
    counted from the start; callbacks and the empty-room timer run only while active. Loop-only.
    The timer sleeps on `clock` (the session's injectable clock; the wall clock by default).
    """

    def __init__(
        self,
        callbacks: DailyCallbacks,
        empty_room_timeout_s: float,
        clock: Clock | None = None,
    ) -> None:
        self.ids: set[str] = set()
        self._callbacks = callbacks
        self._timeout_s = empty_room_timeout_s
        self._clock = clock or WallClock()
        self._active = False
        self._timer: asyncio.Task[None] | None = None

    def activate(self, participants: Mapping[str, Any]) -> None:
        """The join completed: merge daily's participant list and start reporting."""
        for key, participant in participants.items():
            pid, is_local = _participant_id(participant)
            if key != "local" and not is_local and pid:
                self.ids.add(pid)
        self._active = True
        self._update_timer()

    def deactivate(self) -> None:
        self._active = False
        self._update_timer()

    def joined(self, participant: Mapping[str, Any]) -> None:
        pid, is_local = _participant_id(participant)
        if is_local or not pid:
            return
        self.ids.add(pid)
        if self._active:
            self._update_timer()
            user_name = str((participant.get("info") or {}).get("userName", ""))
            invoke(self._callbacks.on_participant_joined, pid, user_name)

    def left(self, participant: Mapping[str, Any], reason: str) -> None:
        pid, _ = _participant_id(participant)
        self.ids.discard(pid)
        if self._active:
            self._update_timer()
            invoke(self._callbacks.on_participant_left, pid, reason)

    def _update_timer(self) -> None:
        if not self._active or self.ids:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self._timer is None:
            self._timer = asyncio.create_task(self._wait(), name="daily-empty-room")

    async def _wait(self) -> None:
        await self._clock.sleep_until(self._clock.now() + self._timeout_s)
        self._timer = None
        if self._active and not self.ids:
            invoke(self._callbacks.on_room_empty)
