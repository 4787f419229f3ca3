"""Audio facts and PCM helpers every layer shares: the 16 kHz rate, frame n's samples, PCM16 <->
float, the streaming resampler and slicer, and `AudioIn` (a session's binary PCM at any rate →
16 kHz int16). Pure numpy (L0).

Everything here is streaming and accepts any push size: the transport hands us whatever chunk it
got, and the counts must come out exact no matter how the stream was split (SPEC §9).
"""

from __future__ import annotations

import math
from math import gcd

import numpy as np

# The rate of every sample inside the server: the speech queue, the published frames, the outputs.
SAMPLE_RATE_HZ = 16_000
# What a client may send and ask for (SPEC §8 `sample_rate`).
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 48_000


def frame_sample_range(
    frame_index: int, fps: int, sample_rate_hz: int = SAMPLE_RATE_HZ
) -> tuple[int, int]:
    """The samples frame n shows (SPEC §9): [floor(n·sr/fps), floor((n+1)·sr/fps)), no drift."""
    return (frame_index * sample_rate_hz) // fps, ((frame_index + 1) * sample_rate_hz) // fps


# Zero crossings of the sinc on each side of the centre, at the narrower of the two rates. Twelve
# keeps the stop band near -60 dB while the delay stays under 2 ms even from 8 kHz.
_ZERO_CROSSINGS = 12
_KAISER_BETA = 6.0


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit mono PCM → float32 in [-1, 1). A trailing odd byte is dropped."""
    usable = len(data) - (len(data) % 2)
    ints = np.frombuffer(data[:usable], dtype="<i2")
    return ints.astype(np.float32) / 32768.0


def to_int16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] → int16 samples, rounded (half to even) and clipped."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] → little-endian s16 bytes: `to_int16` of the float32 samples."""
    return to_int16(np.asarray(samples, dtype=np.float32)).astype("<i2").tobytes()


class StreamResampler:
    """Rational-ratio polyphase resampler with a Kaiser-windowed sinc, stateful across pushes.

    Output j sits at input time j·src/dst, delayed by a constant `delay_samples` (half the filter)
    so that it only ever needs inputs that have already arrived. That is what makes the output
    count after N inputs exactly floor(N·dst/src), however the N samples were split into pushes.
    """

    def __init__(self, src_rate_hz: int, dst_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        for name, rate in (("src_rate_hz", src_rate_hz), ("dst_rate_hz", dst_rate_hz)):
            if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
                raise ValueError(f"{name} must be {MIN_RATE_HZ}..{MAX_RATE_HZ}, got {rate}")
        self.src_rate_hz = src_rate_hz
        self.dst_rate_hz = dst_rate_hz
        g = gcd(src_rate_hz, dst_rate_hz)
        self._up = dst_rate_hz // g  # L
        self._down = src_rate_hz // g  # M
        self._in_count = 0
        self._out_count = 0
        if self._up == self._down:
            self._taps = 0
            self.delay_samples = 0.0
            return
        # The cutoff sits at the lower Nyquist, in units of the input rate; downsampling widens
        # the sinc by the ratio so the filter spans the same number of zero crossings.
        cutoff = min(1.0, self._up / self._down)
        taps = 2 * math.ceil(_ZERO_CROSSINGS / cutoff)
        self._taps = taps
        self.delay_samples = taps / 2  # in input samples
        phases = np.arange(self._up, dtype=np.float64)[:, None] / self._up
        offsets = np.arange(taps, dtype=np.float64)[None, :]
        # Distance from tap i to the (delayed) output time, for each fractional phase.
        dist = offsets - (taps - 1) - phases + self.delay_samples
        edge = np.clip(1.0 - (dist / (self.delay_samples + 1.0)) ** 2, 0.0, 1.0)
        window = np.i0(_KAISER_BETA * np.sqrt(edge)) / np.i0(_KAISER_BETA)
        weights = cutoff * np.sinc(cutoff * dist) * window
        weights /= weights.sum(axis=1, keepdims=True)  # unity gain at DC for every phase
        self._weights = weights.astype(np.float32)
        # History of past inputs; zeros stand for the time before the stream began. The first
        # output still owed can sit up to down/up inputs before the newest one, hence the extra.
        self._keep = taps + self._down // self._up + 1
        self._history = np.zeros(self._keep, dtype=np.float32)

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.delay_samples / self.src_rate_hz

    def process(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._taps == 0:
            self._in_count += x.size
            self._out_count += x.size
            return x.copy()
        base = self._in_count - self._history.size  # absolute index of buffer[0]
        buffer = np.concatenate([self._history, x])
        self._in_count += x.size
        end = (self._in_count * self._up) // self._down
        j = np.arange(self._out_count, end, dtype=np.int64)
        self._out_count = end
        self._history = buffer[-self._keep :].copy()
        if j.size == 0:
            return np.zeros(0, dtype=np.float32)
        floor_t = (j * self._down) // self._up
        phase = (j * self._down) % self._up
        start = floor_t - (self._taps - 1) - base
        idx = start[:, None] + np.arange(self._taps)[None, :]
        # A plain row sum, not einsum/BLAS: its order is fixed per row, so the result does not
        # depend on how the stream was split (deterministic mode needs bit-identical audio).
        return (buffer[idx] * self._weights[phase]).sum(axis=1, dtype=np.float64).astype(np.float32)


class AudioIn:
    """Binary PCM at any rate → int16 at 16 kHz; one resampler per utterance and rate."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None

    def samples(self, raw: np.ndarray, rate: int, new_utterance: bool) -> np.ndarray:
        if rate == SAMPLE_RATE_HZ:
            return raw.astype(np.int16)
        if new_utterance or self._resampler is None or self._resampler.src_rate_hz != rate:
            self._resampler = StreamResampler(rate, SAMPLE_RATE_HZ)
        return to_int16(self._resampler.process(raw.astype(np.float32) / 32768.0))

    def reset(self) -> None:
        """The utterance ended or was interrupted: the next chunk starts a fresh resampler."""
        self._resampler = None


class FrameSlicer:
    """A 16 kHz stream → the exact window each video frame shows (SPEC §9), in order.

    Frame n covers [floor(n·sr/fps), floor((n+1)·sr/fps)); with integer arithmetic there is no
    drift however long the stream runs.
    """

    def __init__(self, fps: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.sample_rate_hz = sample_rate_hz
        self.next_frame_index = 0
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0]

    @property
    def buffered_samples(self) -> int:
        return self._buffer.size

    def push(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, x]) if self._buffer.size else x.copy()

    def frames_ready(self) -> int:
        """How many whole frames can be popped now."""
        end = self._buffer_start + self._buffer.size
        # The largest n with floor((n+1)·sr/fps) <= end, counted from next_frame_index.
        last_complete = (end * self.fps) // self.sample_rate_hz
        return max(0, last_complete - self.next_frame_index)

    def peek(self, ahead: int) -> np.ndarray | None:
        """Samples of frame next_frame_index + ahead if they are all here, without consuming."""
        n = self.next_frame_index + ahead
        if ahead < 0 or ahead >= self.frames_ready():
            return None
        lo, hi = frame_sample_range(n, self.fps, self.sample_rate_hz)
        return self._buffer[lo - self._buffer_start : hi - self._buffer_start]

    def pop(self) -> tuple[int, np.ndarray] | None:
        """The next whole frame as (frame_index, samples), or None until enough has arrived."""
        if self.frames_ready() == 0:
            return None
        n = self.next_frame_index
        lo, hi = frame_sample_range(n, self.fps, self.sample_rate_hz)
        out = self._buffer[lo - self._buffer_start : hi - self._buffer_start].copy()
        self._buffer = self._buffer[hi - self._buffer_start :]
        self._buffer_start = hi
        self.next_frame_index = n + 1
        return n, out

    def flush(self) -> tuple[int, np.ndarray] | None:
        """At the end of a stream: the partial last frame, zero-padded to its full length."""
        if self._buffer.size == 0:
            return None
        n = self.next_frame_index
        lo, hi = frame_sample_range(n, self.fps, self.sample_rate_hz)
        out = np.zeros(hi - lo, dtype=np.float32)
        part = self._buffer[: hi - lo]
        out[: part.size] = part
        self._buffer = self._buffer[part.size :]
        self._buffer_start += part.size
        self.next_frame_index = n + 1
        return n, out
