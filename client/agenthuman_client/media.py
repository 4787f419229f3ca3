"""The output stream's binary messages (SPEC §8) and what the adapters do with them.

Each binary message is a 16-byte little-endian header `kind u8, reserved u8[3], pts_ms u64,
frame_index u32`, then the payload: kind 1 a JPEG, kind 2 PCM s16le mono at the session's
`sample_rate` (the audio that frame shows), kind 3 raw RGB24 (`width·height·3` bytes, rows top
to bottom, the size of `connection.established.video`).

`UtteranceGate` decides which audio is speech: the server sends every frame's audio, silence
included, and only the audio between an utterance's `speak_started` and `speak_ended` may reach
a framework, or its bot-speaking detection would fire on idle silence. `InterruptCut` decides what
an interrupt stops: the interrupted utterances' late audio and the images the server showed
before it stopped.
"""

from __future__ import annotations

import io
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from agenthuman_client.events import Event, SpeakEnded, SpeakStarted

HEADER = struct.Struct("<B3xQI")
HEADER_BYTES = HEADER.size
KIND_VIDEO_JPEG = 1
KIND_AUDIO_PCM = 2
KIND_VIDEO_RGB24 = 3


@dataclass(frozen=True)
class VideoFrame:
    """One rendered frame: `jpeg` bytes or raw `rgb24` bytes (height × width × 3)."""

    pts_ms: int
    frame_index: int
    width: int
    height: int
    jpeg: bytes | None = None
    rgb24: bytes | None = None

    def rgb_bytes(self) -> bytes:
        """Raw RGB24, decoding the JPEG with Pillow (extra `[jpeg]`) where needed."""
        if self.rgb24 is not None:
            return self.rgb24
        assert self.jpeg is not None
        try:
            from PIL import Image
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                'decoding JPEG frames needs Pillow: pip install "agenthuman-client[jpeg]", '
                'or ask for output video "rgb24"'
            ) from exc
        with Image.open(io.BytesIO(self.jpeg)) as image:
            rgb = image.convert("RGB")
            if rgb.size != (self.width, self.height):
                rgb = rgb.resize((self.width, self.height))
            return rgb.tobytes()

    def array(self) -> np.ndarray:
        """(height, width, 3) uint8."""
        return np.frombuffer(self.rgb_bytes(), np.uint8).reshape(self.height, self.width, 3)


@dataclass(frozen=True)
class AudioFrame:
    """The audio one frame shows: PCM s16le mono at `sample_rate`."""

    pts_ms: int
    frame_index: int
    pcm: bytes
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate * 1000

    def samples(self) -> np.ndarray:
        return np.frombuffer(self.pcm, "<i2")


Media = VideoFrame | AudioFrame


def decode_media(message: bytes, *, width: int, height: int, sample_rate: int) -> Media | None:
    """One binary message → a frame; None for a kind this client does not know."""
    if len(message) < HEADER_BYTES:
        return None
    kind, pts_ms, frame_index = HEADER.unpack_from(message)
    payload = bytes(memoryview(message)[HEADER_BYTES:])
    if kind == KIND_VIDEO_JPEG:
        return VideoFrame(pts_ms, frame_index, width, height, jpeg=payload)
    if kind == KIND_VIDEO_RGB24:
        if len(payload) != width * height * 3:
            return None
        return VideoFrame(pts_ms, frame_index, width, height, rgb24=payload)
    if kind == KIND_AUDIO_PCM:
        return AudioFrame(pts_ms, frame_index, payload, sample_rate)
    return None


def video_format_for(base_url: str, requested: str) -> str:
    """`requested`, or for "auto": raw "rgb24" when the server is on this machine (loopback),
    "jpeg" otherwise (a 1280×720 raw frame is 2.7 MB; 25 of them a second suit loopback only)."""
    if requested != "auto":
        return requested
    from urllib.parse import urlsplit

    host = urlsplit(base_url).hostname or ""
    return "rgb24" if host in ("127.0.0.1", "localhost", "::1") else "jpeg"


def to_pcm16(audio: bytes | np.ndarray) -> bytes:
    """PCM s16le bytes from bytes, int16 samples, or floats in [-1, 1]."""
    if isinstance(audio, bytes | bytearray | memoryview):
        data = bytes(audio)
        if len(data) % 2:
            raise ValueError("PCM s16le needs an even byte count")
        return data
    arr = np.asarray(audio)
    if arr.dtype.kind == "f":
        arr = np.clip(np.round(arr * 32767.0), -32768, 32767)
    return arr.astype("<i2").tobytes()


@dataclass
class _Span:
    utterance_id: str
    start_ms: int
    end_ms: int | None = None  # None while it plays

    def holds(self, pts_ms: int) -> bool:
        return self.start_ms <= pts_ms and (self.end_ms is None or pts_ms < self.end_ms)


class UtteranceGate:
    """Audio frames in, speech out: only frames inside an utterance's [started, ended) pts.

    `event(e)` takes the socket's events, `audio(frame)` each audio frame and returns the frames
    (this one, or ones held back) that are speech, each with its utterance id. A frame whose
    `speak_started` has not arrived yet is held for `hold_frames` frames, so an event that
    arrives just after its first frame's audio still lets that audio through.
    """

    def __init__(self, hold_frames: int = 2) -> None:
        self._spans: deque[_Span] = deque(maxlen=8)
        self._held: deque[AudioFrame] = deque(maxlen=max(0, hold_frames))

    def event(self, event: Event) -> list[tuple[AudioFrame, str]]:
        if isinstance(event, SpeakStarted):
            span = _Span(event.utterance_id, event.pts_ms)
            self._spans.append(span)
            released = [(f, span.utterance_id) for f in self._held if span.holds(f.pts_ms)]
            self._held.clear()
            return released
        if isinstance(event, SpeakEnded):
            for span in self._spans:
                if span.utterance_id == event.utterance_id and span.end_ms is None:
                    span.end_ms = event.pts_ms if event.pts_ms is not None else 2**63
        return []

    def audio(self, frame: AudioFrame) -> list[tuple[AudioFrame, str]]:
        for span in reversed(self._spans):
            if span.holds(frame.pts_ms):
                return [(frame, span.utterance_id)]
        if self._held.maxlen:
            self._held.append(frame)
        return []

    def speaking(self) -> bool:
        return any(span.end_ms is None for span in self._spans)

    def clear(self) -> None:
        self._held.clear()


class InterruptCut:
    """What an interrupt stops an adapter passing on, the same for every framework.

    `interrupt(playing)` at the framework's interrupt: from then until the server's
    `interrupt_confirmed` (`confirmed()`) no speech passes, nor ever again the audio of an
    utterance its `speak_ended` said was interrupted (`speak_ended(e)`). If an utterance was
    playing, images below the interrupted `speak_ended`'s pts (where the server stopped) are
    not passed on either: until that event says where, every image is cut (`cut_pts` is inf),
    and a confirmation without one (the utterance had ended first) cuts nothing.
    """

    def __init__(self) -> None:
        self.cut_pts: float | None = None  # None when nothing is cut
        self.dropping = False
        self._dead: set[str] = set()

    def interrupt(self, playing: bool) -> None:
        self.dropping = True
        if playing:
            self.cut_pts = float("inf")

    def speak_ended(self, event: SpeakEnded) -> None:
        if event.interrupted:
            if self.cut_pts == float("inf"):
                self.cut_pts = event.pts_ms if event.pts_ms is not None else None
            self._dead.add(event.utterance_id)

    def confirmed(self) -> None:
        self.dropping = False
        if self.cut_pts == float("inf"):
            self.cut_pts = None  # it had ended before the interrupt: nothing to cut

    def drops_speech(self, utterance_id: str) -> bool:
        return self.dropping or utterance_id in self._dead

    def shown_before_cut(self, pts_ms: float) -> bool:
        """An image the server showed before it stopped: never passed on."""
        return self.cut_pts is not None and pts_ms < self.cut_pts

    def ends_cut(self, pts_ms: float) -> bool:
        """True once, for the first image past the cut (which ends it)."""
        if self.cut_pts is None or pts_ms < self.cut_pts:
            return False
        self.cut_pts = None
        return True
