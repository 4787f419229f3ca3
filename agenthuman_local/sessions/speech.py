"""The speech queue of one session: audio in, frame-sized audio out, and utterance accounting.

Pure (numpy only). Owns the exactness promises of SPEC §8: every utterance gets exactly one
`agent.speak_started` (when the first frame carrying its audio is *published*) and exactly one
`agent.speak_ended` (after its last frame, or at an interrupt), in order; `played_ms` counts
only published samples; an interrupt reports exactly what was heard and what was dropped.

Audio is held at 16 kHz as int16. Frames take audio in two steps because rendering runs ahead of
the clock: `schedule(n)` hands frame n its samples (SPEC §9's range) when its render job is made,
`publish(frame)` records them as heard when the clock shows the frame. Anything scheduled but not
published when an interrupt comes was never heard and counts as dropped.

An utterance ends at `agent.speak_end`, or when the playhead has waited `silence_gap_ms` for
more of it (measured in frames scheduled without its audio, so a client that pauses sending
while plenty is still queued does not split its own sentence).
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agenthuman_local import protocol
from agenthuman_local.audio import SAMPLE_RATE_HZ, frame_sample_range

SAMPLES_PER_MS = SAMPLE_RATE_HZ // 1000


def samples_to_ms(samples: int) -> int:
    return samples // SAMPLES_PER_MS


class BufferFull(Exception):
    """Queued, unplayed audio would pass `speech.max_buffer_s`; the chunk is dropped."""


@dataclass(frozen=True)
class FrameAudio:
    """The 16 kHz samples frame `frame_index` shows, and whose utterances they belong to."""

    frame_index: int
    audio_start: int
    audio_end: int
    samples: np.ndarray  # int16, exactly audio_end - audio_start long; silence where underrun
    segments: tuple[tuple[str, int], ...]  # (utterance_id, samples) in order

    @property
    def speaking(self) -> bool:
        return bool(self.segments)


@dataclass
class _Utterance:
    utterance_id: str
    chunks: deque[np.ndarray] = field(default_factory=deque)
    received: int = 0
    played: int = 0
    closed: bool = False
    started: bool = False
    # Samples of frames scheduled while this (open) utterance had nothing left to give.
    starved: int = 0

    @property
    def pending(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True)
class PushResult:
    utterance_id: str | None
    audio_samples: int
    buffered_ms: int


def _default_ids() -> Callable[[], str]:
    # Unique across sessions (a per-queue random part), ordered within one (the counter).
    prefix = secrets.token_hex(4)
    counter = itertools.count(1)
    return lambda: f"utt_{prefix}{next(counter):06d}"


class SpeechQueue:
    def __init__(
        self,
        fps: int,
        *,
        max_buffer_s: float,
        silence_gap_ms: int,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.fps = fps
        self.max_buffer_samples = int(max_buffer_s * SAMPLE_RATE_HZ)
        self.gap_samples = silence_gap_ms * SAMPLES_PER_MS
        self._new_id = new_id or _default_ids()
        self._live: deque[_Utterance] = deque()  # not yet ended, oldest first
        self._events: list[dict[str, Any]] = []
        self._pts_ms = 0  # end of the last published frame
        self.received_samples = 0
        self.played_samples = 0

    # --- input ---------------------------------------------------------------------------

    @property
    def buffered_samples(self) -> int:
        """Queued and not yet heard (scheduled frames count until they are published)."""
        return sum(u.received - u.played for u in self._live)

    def _open(self) -> _Utterance | None:
        tail = self._live[-1] if self._live else None
        return tail if tail is not None and not tail.closed else None

    def push(self, samples: np.ndarray) -> PushResult:
        """Queue 16 kHz int16 audio onto the open utterance, or a new one. Raises BufferFull."""
        n = len(samples)
        if self.buffered_samples + n > self.max_buffer_samples:
            raise BufferFull(
                f"More than {self.max_buffer_samples // SAMPLE_RATE_HZ} s of audio queued"
            )
        utt = self._open()
        if n and utt is None:
            utt = _Utterance(self._new_id())
            self._live.append(utt)
        if n and utt is not None:
            utt.chunks.append(np.asarray(samples, dtype=np.int16))
            utt.received += n
            utt.starved = 0
            self.received_samples += n
        return PushResult(
            utt.utterance_id if utt else None, n, samples_to_ms(self.buffered_samples)
        )

    def end_utterance(self) -> None:
        """`agent.speak_end`: the open utterance gets no more audio."""
        utt = self._open()
        if utt is not None:
            self._close(utt)

    def _close(self, utt: _Utterance) -> None:
        utt.closed = True
        if utt.played == utt.received:
            self._end(utt, interrupted=False)

    def _end(self, utt: _Utterance, *, interrupted: bool, pts_ms: int | None = None) -> None:
        self._live.remove(utt)
        self._events.append(
            protocol.speak_ended(
                utt.utterance_id,
                samples_to_ms(utt.played),
                interrupted=interrupted,
                pts_ms=self._pts_ms if pts_ms is None else pts_ms,
            )
        )

    # --- frames --------------------------------------------------------------------------

    def schedule(self, frame_index: int) -> FrameAudio:
        """Take frame `frame_index`'s samples off the queue (silence where none has arrived)."""
        start, end = frame_sample_range(frame_index, self.fps)
        need = end - start
        out = np.zeros(need, dtype=np.int16)
        pos = 0
        segments: list[tuple[str, int]] = []
        for utt in list(self._live):
            if not utt.closed and utt.pending == utt.received and utt.pending < need - pos:
                # An open utterance none of which is scheduled yet starts on a frame that its
                # own audio fills: with chunks shorter than a frame (10 ms from a TTS), taking
                # what has come would pad its first frame with silence that `played_ms` never
                # counts. The frame waits for it instead, as for an open utterance that is dry.
                utt.starved += need - pos
                if utt.starved >= self.gap_samples:
                    self._close(utt)
                break
            taken = 0
            while pos < need and utt.chunks:
                chunk = utt.chunks[0]
                k = min(need - pos, len(chunk))
                out[pos : pos + k] = chunk[:k]
                if k == len(chunk):
                    utt.chunks.popleft()
                else:
                    utt.chunks[0] = chunk[k:]
                pos += k
                taken += k
            if taken:
                segments.append((utt.utterance_id, taken))
            if pos == need:
                break
            if not utt.closed:
                # The playhead waits for the rest of an open utterance; it cannot skip past it.
                utt.starved += need - pos
                if utt.starved >= self.gap_samples:
                    self._close(utt)
                break
        return FrameAudio(frame_index, start, end, out, tuple(segments))

    def publish(self, frame: FrameAudio, pts_ms: int, pts_end_ms: int) -> None:
        """Frame `frame` is shown now: its samples are heard."""
        by_id = {u.utterance_id: u for u in self._live}
        for utterance_id, n in frame.segments:
            utt = by_id.get(utterance_id)
            if utt is None:
                continue  # ended by an interrupt after this frame was scheduled
            if not utt.started:
                utt.started = True
                self._events.append(protocol.speak_started(utterance_id, pts_ms))
            utt.played += n
            self.played_samples += n
            if utt.closed and utt.played == utt.received:
                self._end(utt, interrupted=False, pts_ms=pts_end_ms)
        self._pts_ms = pts_end_ms

    def interrupt(self) -> dict[str, Any]:
        """Drop every unheard sample; end each live utterance, the playing one first.

        Returns the `agent.interrupt.confirmed` event; the `speak_ended` events precede it in
        `take_events()`. Frames scheduled but not published must be thrown away by the caller.
        """
        playing = self._live[0] if self._live and self._live[0].started else None
        dropped = sum(u.received - u.played for u in self._live)
        for utt in list(self._live):
            utt.chunks.clear()
            self._end(utt, interrupted=True)
        played = playing.played if playing else 0
        played_ms = samples_to_ms(played)
        # Derived from the total so played_ms + dropped_ms is exactly the affected audio's ms.
        dropped_ms = samples_to_ms(played + dropped) - played_ms
        event = protocol.interrupt_confirmed(
            playing.utterance_id if playing else None, played_ms, dropped_ms
        )
        event["dropped_samples"] = dropped
        return event

    def take_events(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    @property
    def unscheduled_samples(self) -> int:
        return sum(u.pending for u in self._live)

    @property
    def open_utterance_id(self) -> str | None:
        utt = self._open()
        return utt.utterance_id if utt else None

    def peek(self, n_samples: int) -> np.ndarray:
        """Up to `n_samples` of the audio the next frames will take, without taking it."""
        parts: list[np.ndarray] = []
        got = 0
        for utt in self._live:
            for chunk in utt.chunks:
                if got >= n_samples:
                    break
                part = chunk[: n_samples - got]
                parts.append(part)
                got += len(part)
            if got >= n_samples or not utt.closed:
                break
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def abandon(self) -> None:
        """The session ends: every live utterance gets its `speak_ended {interrupted}`."""
        self.interrupt()
