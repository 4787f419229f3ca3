"""The Pipecat frames `AgentHumanVideoService` makes and holds: its error frame, its images
(decoded from JPEG off the event loop) and speech (with our metadata keys), the mono PCM it
sends, and the captions it holds back.

Captions follow the avatar, not the TTS (`CaptionHold`): a TTS stamps its word frames for audio
that would play as soon as it is made, and the avatar plays it later. Timed frames of an
utterance wait for its first speech audio to go out, then move by that delay; untimed
`TTSTextFrame`s wait for the utterance's `TTSStoppedFrame`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, OutputImageRawFrame, TTSAudioRawFrame

from agenthuman_client.media import AudioFrame, VideoFrame

PTS_KEY = "agenthuman_pts_ms"
UTTERANCE_KEY = "agenthuman_utterance_id"


@dataclass
class AgentHumanErrorFrame(ErrorFrame):
    """An `ErrorFrame` from the avatar: `code` is the server's error code (SPEC §4 / §8), or
    `SERVER_UNREACHABLE` / `SOCKET_CLOSED` for the client's own failures."""

    code: str = ""


async def image_frame(frame: VideoFrame) -> OutputImageRawFrame:
    """The session's image as an RGB `OutputImageRawFrame`, its pts in the metadata. A JPEG is
    decoded on a worker thread: Pillow would block the event loop."""
    if frame.jpeg is not None:
        rgb = await asyncio.to_thread(frame.rgb_bytes)
    else:
        rgb = frame.rgb_bytes()
    image = OutputImageRawFrame(rgb, (frame.width, frame.height), "RGB")
    image.metadata[PTS_KEY] = frame.pts_ms
    return image


def speech_frame(audio: AudioFrame, utterance_id: str, context_id: str | None) -> TTSAudioRawFrame:
    """The session's speech audio as a mono `TTSAudioRawFrame` of the TTS context."""
    out = TTSAudioRawFrame(audio.pcm, audio.sample_rate, 1, context_id=context_id)
    out.metadata[PTS_KEY] = audio.pts_ms
    out.metadata[UTTERANCE_KEY] = utterance_id
    return out


def mono_pcm(frame: TTSAudioRawFrame) -> bytes:
    """The TTS audio as mono PCM s16le (channels averaged), what the session socket takes."""
    pcm = frame.audio
    if frame.num_channels > 1:
        samples = np.frombuffer(pcm, "<i2").reshape(-1, frame.num_channels)
        pcm = samples.mean(axis=1).astype("<i2").tobytes()
    return pcm


class CaptionHold:
    """Timed frames (and TTS texts) of the speech, held until the avatar says them.

    `clock_ns` is the pipeline clock. It keeps the pipeline-clock time the utterance's first TTS
    audio came in, the shift of its timed frames once its first speech audio went out, and what
    waits for either."""

    def __init__(self, clock_ns: Callable[[], int]) -> None:
        self._clock_ns = clock_ns
        self._tts_in_ns: int | None = None
        self._shift_ns: int | None = None
        self._timed: deque[Frame] = deque()
        self._text: deque[Frame] = deque()

    def tts_audio(self) -> None:
        """TTS audio came in: the first of an utterance starts the delay its captions get."""
        if self._tts_in_ns is None and self._shift_ns is None:
            self._tts_in_ns = self._clock_ns()

    def wait_for_audio(self) -> None:
        """From now on timed frames wait for the next utterance's speech audio."""
        self._shift_ns = None

    def take(self, frame: Frame, in_utterance: bool) -> Frame | None:
        """`frame` to push now (its pts moved), or None: held. An untimed one waits while an
        utterance is being spoken, for its `TTSStoppedFrame`."""
        if frame.pts is None:
            if in_utterance:
                self._text.append(frame)
                return None
            return frame
        if self._shift_ns is not None:
            frame.pts += self._shift_ns
            return frame
        self._timed.append(frame)
        return None

    def speech_out(self) -> bool:
        """The utterance's first speech audio went out: True when its timed frames may follow
        (`pop_timed`), shifted by the delay."""
        if self._tts_in_ns is None:
            return False
        self._shift_ns = max(0, self._clock_ns() - self._tts_in_ns)
        self._tts_in_ns = None
        return True

    def pop_timed(self) -> Frame | None:
        """The next held timed frame, its pts shifted; None when none is held, or while the
        delay is not known (before the utterance's first speech audio went out)."""
        if not self._timed or self._shift_ns is None:
            return None
        frame = self._timed.popleft()
        frame.pts = (frame.pts or 0) + self._shift_ns  # held frames are timed (`take`)
        return frame

    def pop_text(self) -> Frame | None:
        """The next held untimed text; None when none is held."""
        return self._text.popleft() if self._text else None

    def pop_any(self) -> Frame | None:
        """The next held frame as it is (timed ones first), for an end whose audio never came."""
        if self._timed:
            return self._timed.popleft()
        return self.pop_text()

    def clear(self) -> None:
        """An interrupt: what is held is never said."""
        self._tts_in_ns = None
        self._shift_ns = None
        self._timed.clear()
        self._text.clear()
