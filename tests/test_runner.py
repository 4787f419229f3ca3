"""The session runner on a virtual clock with the real driver and render worker, a fake renderer
(`tests.runner_harness`): what it publishes — every frame with exactly its own audio and pts, the
speech events once each and in order, exact confirmed counts after resampling, interrupts that
silence the next frame, a slow engine that repeats images while the audio never drifts, two
sessions on one worker that never share audio, and the listening pose."""

import numpy as np
import pytest

from agenthuman_local.engine.base import frame_sample_range
from tests.fakes import FakeRenderer, jaw_level
from tests.runner_harness import FPS, Harness, tone


async def test_every_frame_carries_exactly_its_audio(worker):
    h = Harness(worker)
    await h.start()
    audio = tone(16000)
    h.runner.speak(audio.tobytes())
    h.runner.speak_end()
    await h.step(40)
    frames = h.frames
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    for f in frames:
        assert (f.audio_start, f.audio_end) == frame_sample_range(f.frame_index, FPS)
        assert len(f.samples) == f.audio_end - f.audio_start
        assert f.pts_ms == f.frame_index * 1000 // FPS
    heard = np.concatenate([f.samples for f in frames if f.speaking])
    start = np.flatnonzero(np.concatenate([f.samples for f in frames]))[0]
    whole = np.concatenate([f.samples for f in frames])
    assert np.array_equal(whole[start : start + 16000], audio)
    assert len(heard) >= 16000
    # The face opens its mouth while the tone plays and is closed before it.
    speaking_levels = [int(f.rgb[5, 5, 0]) for f in frames if f.speaking]
    assert max(speaking_levels) > jaw_level(0.2)
    assert int(frames[0].rgb[5, 5, 0]) < jaw_level(0.1)
    await h.runner.aclose("client_request")


async def test_started_and_ended_once_and_confirm_precedes_started(worker):
    h = Harness(worker)
    await h.start()
    h.runner.speak(tone(8000).tobytes())
    h.runner.speak_end()
    await h.step(20)
    kinds = [e["type"] for e in h.link.events]
    assert kinds == ["agent.speak.confirmed", "agent.speak_started", "agent.speak_ended"]
    confirmed, started, ended = h.link.events
    assert confirmed["audio_samples"] == 8000
    assert started["utterance_id"] == ended["utterance_id"] == confirmed["utterance_id"]
    assert ended["played_ms"] == 500 and ended["interrupted"] is False
    stats = await h.runner.aclose("client_request")
    assert stats["audio_ms_received"] == stats["audio_ms_played"] == 500
    assert stats["first_frame_latency_ms"] is not None


@pytest.mark.parametrize("rate", [8000, 24000, 44100, 48000])
async def test_confirmed_counts_are_exact_after_resampling(worker, rate):
    h = Harness(worker)
    await h.start()
    rng = np.random.default_rng(rate)
    sizes = rng.integers(1, 5000, size=12)
    for n in sizes:
        h.runner.speak(tone(int(n)).tobytes(), rate)
    counts = [e["audio_samples"] for e in h.link.of("agent.speak.confirmed")]
    assert sum(counts) == int(sizes.sum()) * 16000 // rate
    assert len({e["utterance_id"] for e in h.link.of("agent.speak.confirmed")}) == 1
    await h.runner.aclose("client_request")


async def test_first_speaking_frame_is_not_stuck_behind_idle_frames(worker):
    h = Harness(worker)
    await h.start()
    await h.step(10)
    before = len(h.frames)
    h.runner.speak(tone(4000).tobytes())
    await h.step(3)
    first = next(i for i, f in enumerate(h.frames) if f.speaking)
    assert first - before <= 1  # the next tick after the one already rendered
    await h.runner.aclose("client_request")


async def test_interrupt_silences_the_next_frame_and_accounts_exactly(worker):
    h = Harness(worker)
    await h.start()
    sent = 16000 * 2
    h.runner.speak(tone(sent).tobytes())
    await h.step(10)
    h.runner.interrupt()
    await h.step(1)
    after = h.frames[-1]
    assert not after.speaking and not after.samples.any()
    ended = h.link.of("agent.speak_ended")
    confirmed = h.link.of("agent.interrupt.confirmed")[0]
    assert len(ended) == 1 and ended[0]["interrupted"]
    assert confirmed["played_ms"] == ended[0]["played_ms"] > 0
    assert confirmed["played_ms"] + confirmed["dropped_ms"] == sent // 16
    played = sum(len(f.samples) for f in h.frames if f.speaking)
    assert abs(played // 16 - confirmed["played_ms"]) <= 40
    # The mouth closes over the next frames instead of staying open.
    await h.step(6, drain=True)
    assert int(h.frames[-1].rgb[5, 5, 0]) < jaw_level(0.1)
    await h.runner.aclose("client_request")


async def test_interrupt_with_nothing_playing_is_answered(worker):
    h = Harness(worker)
    await h.start()
    h.runner.interrupt()
    assert h.link.events[-1] == {
        "type": "agent.interrupt.confirmed",
        "utterance_id": None,
        "played_ms": 0,
        "dropped_ms": 0,
        "dropped_samples": 0,
    }
    await h.runner.aclose("client_request")


async def test_an_interrupt_with_nothing_to_stop_renders_nothing_again(worker):
    """No speech queued or playing: the idle frames already scheduled stay as rendered (a
    storm of interrupts must not re-render them each time); with speech, it still rewinds."""
    renderer = FakeRenderer()
    h = Harness(worker, renderer=renderer)
    await h.start()
    await h.step(5)
    await worker.drain()
    rendered = sum(renderer.batch_sizes)
    for _ in range(3):
        h.runner.interrupt()
    await worker.drain()
    assert sum(renderer.batch_sizes) == rendered
    assert len(h.link.of("agent.interrupt.confirmed")) == 3
    h.runner.speak(tone(16000).tobytes())
    await h.step(3)
    await worker.drain()
    rendered = sum(renderer.batch_sizes)
    h.runner.interrupt()  # speech scheduled: those frames are rendered again, silent
    await worker.drain()
    assert sum(renderer.batch_sizes) > rendered
    await h.runner.aclose("client_request")


async def test_a_slow_engine_repeats_images_but_audio_never_drifts(worker):
    h = Harness(worker, renderer=FakeRenderer(delay_s=0.03))
    await h.start()
    h.runner.speak(tone(16000).tobytes())
    for _ in range(30):  # no drain: the ticks come faster than the renderer
        h.clock.advance(1 / FPS)
        await h.clock.settled(2)
    frames = h.frames
    assert any(f.late for f in frames)
    ends = [f.audio_end for f in frames]
    assert [f.audio_start for f in frames[1:]] == ends[:-1]
    stats = h.runner.stats()
    assert stats["frames_late"] == sum(f.late for f in frames) == h.runner.timeline.late
    assert stats["frames_published"] == len(frames) == h.runner.timeline.frames
    assert stats["frames_dropped"] >= 1
    await h.runner.aclose("client_request")


async def test_two_sessions_on_one_worker_never_share_audio(worker):
    a = Harness(worker)
    b = Harness(worker, clock=a.clock)
    await a.start()
    b.runner.start()
    await a.clock.settled(4)
    a.runner.speak(np.full(8000, 1111, np.int16).tobytes())
    b.runner.speak(np.full(8000, -2222, np.int16).tobytes())
    for _ in range(20):
        await worker.drain()
        a.clock.advance(1 / FPS)
        await a.clock.settled(4)
    assert set(np.unique(np.concatenate([f.samples for f in a.frames]))) == {0, 1111}
    assert set(np.unique(np.concatenate([f.samples for f in b.frames]))) == {0, -2222}
    await a.runner.aclose("client_request")
    await b.runner.aclose("client_request")


async def test_listening_pose_reaches_the_frames(worker):
    h = Harness(worker)
    await h.start()
    await h.step(3)
    assert int(h.frames[-1].rgb[0, 5, 1]) < 30
    h.runner.set_listening(True)
    await h.step(30)
    assert int(h.frames[-1].rgb[0, 5, 1]) > 128
    h.runner.set_listening(False)
    await h.step(40)
    assert int(h.frames[-1].rgb[0, 5, 1]) < 30
    await h.runner.aclose("client_request")
