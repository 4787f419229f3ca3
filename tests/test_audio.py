"""The audio front-end: exact counts, real filtering, exact frame windows, causal features."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from agenthuman_local.audio import (
    FrameSlicer,
    StreamResampler,
    float_to_pcm16,
    pcm16_to_float,
    to_int16,
)
from agenthuman_local.engine.base import frame_sample_range
from tests.audio_features import FeatureExtractor

SPEECH_WAV = Path(__file__).parent / "data" / "speech.wav"
RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000]


def test_pcm16_round_trip_and_scale() -> None:
    data = np.array([-32768, -1, 0, 1, 32767], dtype="<i2").tobytes()
    x = pcm16_to_float(data + b"\x07")  # odd trailing byte is ignored
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [-1.0, -1 / 32768, 0.0, 1 / 32768, 32767 / 32768])
    assert float_to_pcm16(x) == data


def test_float_to_pcm16_clips_and_rounds_as_to_int16() -> None:
    x = np.array([-2.0, -1.0, 0.5 / 32768, 1.5 / 32768, 32767 / 32768, 1.0, np.inf], np.float32)
    want = [-32768, -32768, 0, 2, 32767, 32767, 32767]  # clipped; halves round to even
    assert to_int16(x).tolist() == want
    assert float_to_pcm16(x) == np.array(want, dtype="<i2").tobytes()


def _split_push(resampler: StreamResampler, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < x.size:
        n = int(rng.integers(0, 2500))
        out.append(resampler.process(x[i : i + n]))
        i += n
    return np.concatenate(out)


@pytest.mark.parametrize("src", RATES)
def test_resampler_counts_are_exact_for_any_split(src: int) -> None:
    rng = np.random.default_rng(src)
    x = rng.standard_normal(src + 1234).astype(np.float32) * 0.1
    r = StreamResampler(src)
    total = 0
    consumed = 0
    for n in rng.integers(0, 900, size=200):
        y = r.process(x[consumed : consumed + n])
        consumed += min(int(n), x.size - consumed)
        total += y.size
        assert total == consumed * 16000 // src
    whole = StreamResampler(src).process(x[:consumed])
    split = _split_push(StreamResampler(src), x[:consumed], seed=src)
    np.testing.assert_array_equal(split, whole)


@pytest.mark.parametrize("src", [8000, 22050, 24000, 44100, 48000])
def test_resampler_keeps_a_tone_with_small_delay(src: int) -> None:
    r = StreamResampler(src)
    assert r.delay_ms <= 2.0
    t = np.arange(src) / src
    y = _split_push(r, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), seed=1)
    ty = np.arange(y.size) / 16000 - r.delay_ms / 1000
    expected = 0.5 * np.sin(2 * np.pi * 440 * ty)
    assert np.abs(y[400:] - expected[400:]).max() < 0.005


@pytest.mark.parametrize("src", [22050, 24000, 44100, 48000])
def test_resampler_rejects_content_above_the_new_nyquist(src: int) -> None:
    # Sample dropping would fold this 10.5 kHz+ tone back into the band at full strength.
    t = np.arange(src) / src
    tone = np.sin(2 * np.pi * (src * 0.45) * t).astype(np.float32)
    y = StreamResampler(src).process(tone)
    assert np.sqrt(np.mean(y[200:] ** 2)) < 0.01


def test_resampler_pass_through_and_bad_rates() -> None:
    x = np.linspace(-1, 1, 999, dtype=np.float32)
    np.testing.assert_array_equal(StreamResampler(16000).process(x), x)
    with pytest.raises(ValueError, match="src_rate_hz"):
        StreamResampler(4000)


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_frame_ranges_tile_an_hour_without_drift(fps: int) -> None:
    n = np.arange(3600 * fps + 1, dtype=np.int64)
    lo = (n * 16000) // fps
    hi = ((n + 1) * 16000) // fps
    # Contiguous, sized floor/ceil of sr/fps, and ending exactly on the hour.
    assert np.array_equal(lo[1:], hi[:-1])
    assert set(np.unique(hi - lo)) <= {16000 // fps, -(-16000 // fps)}
    assert hi[3600 * fps - 1] == 3600 * 16000
    for k in (0, 1, 12345, 3600 * fps - 1):
        assert frame_sample_range(int(k), fps) == (int(lo[k]), int(hi[k]))
    if fps == 25:
        assert frame_sample_range(7, 25) == (7 * 640, 8 * 640)


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_slicer_pops_the_exact_windows(fps: int) -> None:
    x = np.arange(16000 * 3, dtype=np.float32)
    s = FrameSlicer(fps)
    rng = np.random.default_rng(fps)
    popped, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 1500))
        s.push(x[i : i + n])
        i += n
        ahead = s.peek(0)
        while (item := s.pop()) is not None:
            if ahead is not None:
                np.testing.assert_array_equal(ahead, item[1])
                ahead = None
            popped.append(item)
    assert [k for k, _ in popped] == list(range(3 * fps))
    for k, samples in popped:
        lo, hi = frame_sample_range(k, fps)
        np.testing.assert_array_equal(samples, x[lo:hi])
    assert s.pop() is None and s.buffered_samples == 0


def test_slicer_flush_pads_the_last_partial_frame() -> None:
    s = FrameSlicer(25)
    s.push(np.ones(700, dtype=np.float32))
    assert s.pop() is not None
    assert s.pop() is None and s.peek(0) is None
    index, tail = s.flush()  # type: ignore[misc]
    assert index == 1 and tail.size == 640
    assert tail[:60].sum() == 60 and not tail[60:].any()
    assert s.flush() is None


def test_features_are_causal_and_split_invariant() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    whole_mel, whole_rms = FeatureExtractor().push(x)
    assert whole_mel.shape == (1 + (16000 - 400) // 160, 80)
    fe = FeatureExtractor()
    parts = [fe.push(x[i : i + 333]) for i in range(0, x.size, 333)]
    mel = torch.cat([p[0] for p in parts])
    rms = torch.cat([p[1] for p in parts])
    torch.testing.assert_close(mel, whole_mel, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rms, whole_rms)
    # Causal: changing the future never changes an already emitted window.
    y = x.copy()
    y[8000:] = 0.0
    early_mel, _ = FeatureExtractor().push(y)
    done = (8000 - 400) // 160 + 1
    torch.testing.assert_close(early_mel[:done], whole_mel[:done])


def test_features_track_loudness_and_pitch() -> None:
    t = np.arange(16000) / 16000
    low = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    high = (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    mel_low, rms_low = FeatureExtractor().push(low)
    mel_high, _ = FeatureExtractor().push(high)
    _, rms_quiet = FeatureExtractor().push(low * 0.01)
    assert abs(float(rms_low.mean()) - 0.3 / np.sqrt(2)) < 0.01
    assert float(rms_quiet.mean()) < float(rms_low.mean()) / 50
    assert int(mel_low.mean(0).argmax()) < int(mel_high.mean(0).argmax())


def test_speech_fixture_is_16k_mono_s16() -> None:
    with wave.open(str(SPEECH_WAV)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert 6 <= w.getnframes() / 16000 <= 11
