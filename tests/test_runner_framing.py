"""How the runner cuts incoming speech into frames (`tests.runner_harness`): the first speaking
frame is published as soon as it is rendered, speech late in a frame starts on the next one, and
speech sent in chunks shorter than a frame (at once, trickled, stalled, after an underrun or
streamed in real time at any phase of the frame clock) plays whole, never padded with silence."""

import asyncio

import numpy as np
import pytest

from agenthuman_local.engine.base import frame_sample_range
from tests.runner_harness import FPS, Harness, tone


async def _idle_then_speak(h, offset_s):
    """10 idle frames, then speech `offset_s` after the last tick; → frames before it."""
    await h.start()
    await h.step(10)
    before = len(h.frames)
    if offset_s:
        h.clock.advance(offset_s)
        await h.clock.settled(2)
    h.runner.speak(tone(4000).tobytes())
    h.runner.speak_end()
    await h.worker.drain()
    for _ in range(10):  # the loop publishes what is ready; the clock does not move
        await asyncio.sleep(0)
    return before


async def test_the_first_speaking_frame_is_published_as_soon_as_it_is_rendered(worker):
    h = Harness(worker)
    before = await _idle_then_speak(h, 0.0)  # the next tick is a whole frame away
    # Published before its tick, as the very next frame, with its own pts and audio.
    assert len(h.frames) == before + 1 and h.frames[-1].speaking
    first = h.frames[-1]
    assert first.frame_index == before and first.pts_ms == before * 1000 // FPS
    assert (first.audio_start, first.audio_end) == frame_sample_range(before, FPS)
    assert not first.late
    started = h.link.of("agent.speak_started")
    assert started and started[0]["pts_ms"] == first.pts_ms
    # The clock is where it was: the early frame's own tick passes with nothing to publish,
    # and each later frame comes at its own tick, on time.
    await h.step()
    assert len(h.frames) == before + 1
    for n in range(1, 6):
        await h.step()
        assert len(h.frames) == before + 1 + n and not h.frames[-1].late
        assert h.frames[-1].frame_index == before + n
    await h.runner.aclose("client_request")


async def test_speech_late_in_a_frame_speaks_from_the_next_one_right_after_its_tick(worker):
    h = Harness(worker)
    before = await _idle_then_speak(h, 0.8 / FPS)  # a fifth of a frame left before the tick
    assert len(h.frames) == before  # that frame keeps its idle image: it is too close
    await h.step()
    # The idle frame at its tick, then the first speaking frame at once, not a tick later.
    assert len(h.frames) == before + 2
    assert [f.speaking for f in h.frames[-2:]] == [False, True]
    assert [f.frame_index for f in h.frames[-2:]] == [before, before + 1]
    whole = np.concatenate([f.samples for f in h.frames])
    assert len(whole) == frame_sample_range(before + 1, FPS)[1]  # no audio lost or doubled
    await h.runner.aclose("client_request")


def _speaking_span(h):
    started = h.link.of("agent.speak_started")
    ended = h.link.of("agent.speak_ended")
    assert len(started) == len(ended) == 1
    return started[0], ended[0]


def _heard_exactly(h, audio):
    """The speaking frames carry `audio` whole, one frame per 40 ms of it, with no silence
    padded in; played_ms is its length and spans speak_started → speak_ended. → the frames."""
    speaking = [f for f in h.frames if f.speaking]
    assert len(speaking) == len(audio) // 640
    assert np.array_equal(np.concatenate([f.samples for f in speaking]), audio)
    started, ended = _speaking_span(h)
    assert started["pts_ms"] == speaking[0].pts_ms
    assert ended["played_ms"] == len(audio) // 16 == ended["pts_ms"] - started["pts_ms"]
    return speaking


@pytest.mark.parametrize("chunk", [160, 320, 333])
async def test_speech_in_chunks_shorter_than_a_frame_is_never_split_by_silence(worker, chunk):
    """10 ms (or any sub-frame) chunks sent at once: the first speaking frame starts with the
    first sample, no silence is padded into the speech, and played_ms spans exactly the
    speaking frames (the old code scheduled a frame per chunk while idle, each padded with
    silence that played_ms did not count: 3 s played as ≥ 77 frames)."""
    h = Harness(worker)
    await h.start()
    await h.step(3)
    audio = tone(16000 * 3)
    for i in range(0, len(audio), chunk):
        h.runner.speak(audio[i : i + chunk].tobytes())
    h.runner.speak_end()
    await h.step(90)
    speaking = _heard_exactly(h, audio)  # 3 s: 75 frames, not one more
    assert np.array_equal(speaking[0].samples, audio[:640])
    await h.runner.aclose("client_request")


async def test_speech_trickled_faster_than_real_time_in_tiny_chunks_has_no_gaps(worker):
    """A TTS streaming 10 ms chunks at twice real time: every speaking frame is whole speech."""
    h = Harness(worker)
    await h.start()
    await h.step(3)
    audio = tone(16000 * 2)
    chunks = [audio[i : i + 160] for i in range(0, len(audio), 160)]
    while chunks:
        for c in chunks[:8]:  # 80 ms of audio per 40 ms tick
            h.runner.speak(c.tobytes())
        del chunks[:8]
        await h.step(1)
    h.runner.speak_end()
    await h.step(60)
    _heard_exactly(h, audio)
    await h.runner.aclose("client_request")


async def test_a_client_that_stalls_mid_frame_still_gets_its_audio_played(worker):
    """Holding a partial frame never waits forever: once nothing else is scheduled the part
    that came plays (padded), and the silence gap ends the utterance."""
    h = Harness(worker, silence_gap_ms=200)
    await h.start()
    h.runner.speak(tone(16000 + 300).tobytes())  # 1 s and 300 samples, then nothing
    await h.step(50)
    started, ended = _speaking_span(h)
    assert ended["played_ms"] == (16000 + 300) // 16 and not ended["interrupted"]
    await h.runner.aclose("client_request")


async def test_an_utterance_starts_on_a_whole_frame_even_when_a_tick_comes_first(worker):
    """The first 10 ms chunk arrives, a tick comes with no frame left scheduled (an underrun),
    then the rest: the first speaking frame still starts with the whole first frame of audio
    (the old code showed that chunk padded with 30 ms of silence)."""
    h = Harness(worker)
    await h.start()
    await h.step(3)
    audio = tone(16000)
    h.runner.speak(audio[:160].tobytes())
    await h.step(2)
    for i in range(160, len(audio), 160):
        h.runner.speak(audio[i : i + 160].tobytes())
    h.runner.speak_end()
    await h.step(40)
    _heard_exactly(h, audio)
    await h.runner.aclose("client_request")


@pytest.mark.parametrize("phase_s", [0.0, 0.011, 0.025, 0.039])
@pytest.mark.parametrize("rate", [1.0, 1.5])
async def test_speech_streamed_in_real_time_is_never_padded_by_an_early_frame(
    worker, phase_s, rate
):
    """A TTS streaming 10 ms chunks at (or a little above) real time, starting at any phase of
    the frame clock: the early first frame must not leave the frame after it to be scheduled
    before its audio has come (it was padded with 40 ms of silence that played_ms did not
    count: 2 s spanned 2040 ms over 51 speaking frames)."""
    h = Harness(worker)
    await h.start()
    await h.step(5)
    h.clock.advance(phase_s)
    await h.clock.settled(2)
    audio = tone(16000 * 2)
    for i in range(0, len(audio), 160):
        h.runner.speak(audio[i : i + 160].tobytes())
        await h.worker.drain()
        h.clock.advance(0.01 / rate)
        await h.clock.settled(2)
    h.runner.speak_end()
    await h.step(60)
    _heard_exactly(h, audio)
    await h.runner.aclose("client_request")
