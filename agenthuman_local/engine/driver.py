"""The driver: 16 kHz audio, one video frame at a time → the face parameters of that frame.

Causal with a declared look-ahead of one frame (SPEC §9): the jaw follows the frame's log-RMS
through an attack/release filter, and peeks at the next frame so the mouth starts to open as the
sound starts, which cancels the filter's own delay. Vowel shape comes from the spectral centroid,
lip closures from short dips between loud frames. On top runs the idle layer that never stops:
blinks every 2–6 s, glances, breathing, a slow sway, and the listening pose.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agenthuman_local.engine.base import N_PARAMS, SAMPLE_RATE_HZ, P

_SILENCE_DB = -50.0  # below this a frame counts as silence and the mouth closes
# From "just open" to "fully open", below the tracked speech peak. Speech mostly lies within
# 15 dB of its peak: over 26 dB (and a slower release) the jaw stayed past 0.5 in 88 % of voiced
# frames, a mouth that never closes between syllables.
_OPEN_RANGE_DB = 18.0
_ATTACK = 0.65  # per-frame approach rate while the jaw opens (fast, like real articulators)
_RELEASE = 0.5  # while it closes: ~60 ms at 25 fps, so it closes between syllables (2-7 Hz)
_RELEASE_SILENT = 0.7  # once the sound has stopped, close quickly: silence means a closed mouth
_BLINK_S = 0.2  # one blink, lids down and up
_SPECTRUM_N = 1024
_SWAY_WEIGHTS = np.array([0.45, 0.25, 0.15, 0.1, 0.05])[:, None]


@functools.lru_cache(maxsize=8)
def _hann(size: int) -> np.ndarray:
    window = np.hanning(size)
    window.flags.writeable = False
    return window


@functools.lru_cache(maxsize=8)
def _speech_band(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(which rfft bins of an n-point spectrum lie in 200–4000 Hz, their frequencies)."""
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ)
    band = (freqs >= 200.0) & (freqs <= 4000.0)
    in_band = freqs[band]
    band.flags.writeable = in_band.flags.writeable = False
    return band, in_band


def _level_db(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -120.0
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(max(rms, 1e-6))


class Driver:
    """One per session; `step` is called once per frame, in frame order."""

    lookahead_frames: int = 1

    def __init__(self, fps: int = 25, *, seed: int = 0, deterministic: bool = False) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self._rng = np.random.default_rng(seed if deterministic else None)
        self._frame = 0
        # Slow sway: a few incommensurate sines per axis with random phases reads as 1/f drift.
        self._sway_freq_hz = self._rng.uniform(0.05, 0.35, size=(5, 3))
        self._sway_phase = self._rng.uniform(0.0, 2 * math.pi, size=(5, 3))
        self._breath_period_s = float(self._rng.uniform(3.6, 4.6))
        self._next_blink_s = float(self._rng.uniform(0.8, 3.0))
        self._blink_start_s = -10.0
        self._gaze = np.zeros(2)
        self._gaze_target = np.zeros(2)
        self._next_glance_s = float(self._rng.uniform(0.5, 2.0))
        # Per-frame approach rate for an eye movement: a saccade lands in ~60 ms at any fps.
        self._saccade_rate = 1.0 - 0.35 ** (25.0 / fps)
        self._listen = 0.0
        # Speech emphasis drives nods and brows; it decays on its own so reset() never jumps pose.
        self._emphasis = 0.0
        self.reset()

    def __deepcopy__(self, memo: dict[int, Any]) -> Driver:
        """A session copies the driver before every frame (to rewind it): its plain state, the
        two arrays it changes in place, and its random generator at the same state (a deep copy
        of a numpy Generator re-seeds one from the OS first: most of the cost)."""
        twin = copy.copy(self)
        twin._gaze = self._gaze.copy()
        twin._gaze_target = self._gaze_target.copy()
        bits = self._rng.bit_generator
        twin_bits = type(bits)(0)
        twin_bits.state = bits.state
        twin._rng = np.random.Generator(twin_bits)
        return twin

    def reset(self) -> None:
        """Interruption: the mouth is back at rest on the next frame; pose and blinks carry on."""
        self._jaw = 0.0
        self._spread = 0.0
        self._round = 0.0
        self._closure = 0.0
        self._prev_db = -120.0
        self._peak_db = -20.0

    def step(
        self,
        current: np.ndarray | None,
        lookahead: Sequence[np.ndarray] = (),
        *,
        listening: bool = False,
    ) -> np.ndarray:
        t = self._frame / self.fps
        self._frame += 1
        out = np.zeros(N_PARAMS, dtype=np.float64)
        self._mouth(current, lookahead, out)
        self._idle(t, listening, out)
        return out.astype(np.float32)

    def _open_target(self, db: float) -> float:
        if db < _SILENCE_DB:
            return 0.0
        x = (db - (self._peak_db - _OPEN_RANGE_DB)) / _OPEN_RANGE_DB
        x = min(max(x, 0.0), 1.0)
        return x * x * (3.0 - 2.0 * x)  # smoothstep: small sounds barely part the lips

    def _mouth(
        self, current: np.ndarray | None, lookahead: Sequence[np.ndarray], out: np.ndarray
    ) -> None:
        db = _level_db(current) if current is not None else -120.0
        if db > _SILENCE_DB:
            # Automatic gain: follow the loudest recent speech, forget it slowly (~20 s / 10 dB).
            self._peak_db = max(db, self._peak_db - 0.5 / self.fps)
            self._peak_db = min(max(self._peak_db, -40.0), -6.0)
        target = self._open_target(db)
        next_db = _level_db(lookahead[0]) if lookahead else -120.0
        # Anticipate an onset: lips part slightly before the sound, as real speakers do.
        target = max(target, 0.5 * self._open_target(next_db))
        if target > self._jaw:
            rate = _ATTACK
        else:
            rate = _RELEASE_SILENT if db < _SILENCE_DB else _RELEASE
        self._jaw += rate * (target - self._jaw)
        if self._jaw < 0.05 and target == 0.0:
            self._jaw = 0.0

        spread, rnd = self._vowel(current, db)
        voiced = 1.0 if db > _SILENCE_DB else 0.0
        self._spread += 0.5 * (voiced * spread - self._spread)
        self._round += 0.5 * (voiced * rnd - self._round)

        # A dip between loud frames is a stop or a nasal: press the lips together for it.
        dip = db > _SILENCE_DB and next_db > db + 6.0 and self._prev_db > db + 4.0
        self._closure = 1.0 if dip else self._closure * 0.4
        self._emphasis += 0.15 * (max(0.0, (db - self._peak_db + 8.0) / 8.0) - self._emphasis)
        self._prev_db = db

        out[P.JAW] = self._jaw
        out[P.SPREAD] = self._spread
        out[P.ROUND] = self._round
        out[P.CLOSURE] = self._closure

    def _vowel(self, current: np.ndarray | None, db: float) -> tuple[float, float]:
        """Spread (ee) rises with the spectral centroid, round (oo) with a low one."""
        if current is None or db < _SILENCE_DB:
            return 0.0, 0.0
        x = current.astype(np.float64)
        n = max(_SPECTRUM_N, x.size)
        spectrum = np.abs(np.fft.rfft(x * _hann(x.size), n=n))
        band, freqs = _speech_band(n)
        power = spectrum[band] ** 2
        centroid = float((freqs * power).sum() / max(power.sum(), 1e-12))
        spread = min(max((centroid - 950.0) / 600.0, 0.0), 1.0)
        rnd = min(max((700.0 - centroid) / 300.0, 0.0), 1.0)
        return spread, rnd

    def _idle(self, t: float, listening: bool, out: np.ndarray) -> None:
        self._listen += 0.12 * ((1.0 if listening else 0.0) - self._listen)
        listen = self._listen

        if t >= self._next_blink_s:
            self._blink_start_s = t
            gap = float(self._rng.uniform(2.0, 6.0))
            # Now and then a quick double blink, as people do.
            if self._rng.uniform() < 0.12:
                gap = 0.35
            self._next_blink_s = t + gap
        phase = (t - self._blink_start_s) / _BLINK_S
        if 0.0 <= phase < 1.0:
            # Lids fall faster than they rise.
            out[P.BLINK] = min(1.0, phase / 0.4) if phase < 0.4 else 1.0 - (phase - 0.4) / 0.6
        sway = np.sin(2 * math.pi * self._sway_freq_hz * t + self._sway_phase)
        yaw, pitch, roll = (_SWAY_WEIGHTS * sway).sum(axis=0)
        talk = self._emphasis
        out[P.YAW] = 0.5 * yaw * (1.0 - 0.5 * listen)
        out[P.PITCH] = 0.4 * pitch - 0.25 * listen + 0.25 * talk * math.sin(2 * math.pi * 1.7 * t)
        out[P.ROLL] = 0.35 * roll + 0.45 * listen
        out[P.TX] = 0.6 * out[P.YAW]
        out[P.TY] = 0.4 * out[P.PITCH]
        out[P.BREATH] = math.sin(2 * math.pi * t / self._breath_period_s)
        out[P.BROW] = min(1.0, 0.35 * listen + 0.5 * talk)
        out[P.LISTEN] = listen
        self._glance(t, listen, out)

    def _glance(self, t: float, listen: float, out: np.ndarray) -> None:
        """Eyes: small glances every 0.6–2.8 s, mostly back at the camera while listening."""
        if t >= self._next_glance_s:
            if self._rng.uniform() < 0.45 + 0.4 * listen:
                self._gaze_target = np.zeros(2)
            else:
                self._gaze_target = self._rng.uniform((-0.6, -0.35), (0.6, 0.35))
            self._next_glance_s = t + float(self._rng.uniform(0.6, 2.8))
        self._gaze += self._saccade_rate * (self._gaze_target - self._gaze)
        # The eyes hold the camera while the head turns, so they counter the yaw a little.
        out[P.GAZE_X] = np.clip(self._gaze[0] - 0.6 * out[P.YAW], -1.0, 1.0)
        out[P.GAZE_Y] = np.clip(self._gaze[1] + 0.4 * out[P.PITCH], -1.0, 1.0)
