"""The speech `AgentHumanVideoService` has sent that the server has not finished playing:
`SpeechInFlight` counts the speak messages not yet confirmed and the utterances not yet ended,
and holds each utterance's `TTSStoppedFrame` until the server's media reaches that utterance's
end, so the stop goes out after its last audio. An `EndFrame` waits while any of it is pending
(`drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from pipecat.frames.frames import TTSStoppedFrame

from agenthuman_client.events import SpeakEnded


class SpeechInFlight:
    """What was sent and is not played yet, and the stops held until it is."""

    def __init__(self) -> None:
        self._sending = False  # speech sent since the last `agent.speak_end` or interrupt
        self._unconfirmed = 0  # speak messages the server has not confirmed yet
        self._open: set[str] = set()  # confirmed utterances that have not ended
        self._stops: deque[TTSStoppedFrame] = deque()  # held, one per `agent.speak_end` sent
        self._stop_at_ms: deque[int] = deque()  # pts_ms at which an utterance ended
        self._changed = asyncio.Event()

    def chunk_sending(self) -> bool:
        """A speak message is about to go; True when it is the utterance's first."""
        first = not self._sending
        self._sending = True
        self._unconfirmed += 1
        return first

    def chunk_sent(self, messages: int) -> None:
        """The chunk went as `messages` speak messages (none for no audio, several for a long
        one: each gets its own confirmation)."""
        self._unconfirmed += messages - 1

    def chunk_failed(self) -> None:
        """The chunk never went: the socket was unusable."""
        self._unconfirmed -= 1

    def ends_utterance(self) -> bool:
        """The TTS's utterance is over: True when speech went since the last end, so an
        `agent.speak_end` is due."""
        due = self._sending
        self._sending = False
        return due

    def hold_stop(self, frame: TTSStoppedFrame) -> None:
        """Hold the utterance's `TTSStoppedFrame` until its last audio is out (`stop_due`)."""
        self._stops.append(frame)

    def in_utterance(self) -> bool:
        """An utterance is being sent or played: its untimed captions wait for its stop."""
        return bool(self._sending or self._stops or self._stop_at_ms)

    def pending(self) -> bool:
        """Speech the server has not confirmed, not ended, or whose stop is not out yet."""
        return bool(self._unconfirmed or self._open or self._stop_at_ms)

    def changed(self) -> None:
        """Something came from the server or went out: a `drain` looks again."""
        self._changed.set()

    async def drain(self, timeout_s: float) -> None:
        """Wait while speech is `pending`, at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())

    def confirmed(self, utterance_id: str | None) -> None:
        """`agent.speak.confirmed`: one speak message less to wait for."""
        self._unconfirmed = max(0, self._unconfirmed - 1)
        if utterance_id:
            self._open.add(utterance_id)

    def ended(self, event: SpeakEnded) -> None:
        """`agent.speak_ended`: an utterance played to its end is stopped at its pts."""
        self._open.discard(event.utterance_id)
        if not event.interrupted and event.pts_ms is not None:
            self._stop_at_ms.append(event.pts_ms)

    def stop_due(self, media_end_ms: float) -> TTSStoppedFrame | None:
        """The stop of an utterance that ends by `media_end_ms` (its held frame, or a new one
        where none was held); None when none is due."""
        if not self._stop_at_ms or media_end_ms < self._stop_at_ms[0]:
            return None
        self._stop_at_ms.popleft()
        return self._stops.popleft() if self._stops else TTSStoppedFrame()

    def interrupt(self) -> None:
        """An interrupt: nothing is being sent, and no held stop goes out."""
        self._sending = False
        self._stops.clear()
        self._stop_at_ms.clear()
