"""The session runner on a virtual clock with the real driver and render worker, a fake renderer."""

import asyncio

import numpy as np
import pytest

from agenthuman_local.engine.base import frame_sample_range
from agenthuman_local.engine.driver import Driver
from agenthuman_local.engine.worker import RenderWorker
from agenthuman_local.sessions.runner import RunnerOptions, SessionRunner
from tests.fakes import FakeRenderer, MemorySink, VirtualClock, jaw_level

FPS = 25


class ListLink:
    def __init__(self):
        self.events = []
        self.alive = True

    def send_event(self, event):
        if not self.alive:
            return False
        self.events.append(event)
        return True

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]


class Harness:
    def __init__(self, worker, renderer=None, clock=None, **options):
        self.clock = clock or VirtualClock()
        self.worker = worker
        self.sink = MemorySink()
        self.link = ListLink()
        self.ended = []
        opts = {"session_id": "sess_test", "fps": FPS, **options}
        self.runner = SessionRunner(
            RunnerOptions(**opts),
            renderer=renderer or FakeRenderer(),
            worker=worker,
            driver=Driver(opts["fps"], seed=1, deterministic=True),
            clock=self.clock,
            on_end=self.ended.append,
        )
        self.runner.add_sink(self.sink)
        self.runner.attach(self.link)
        self.fps = opts["fps"]

    async def start(self):
        self.runner.start()
        await self.clock.settled(2)

    async def step(self, n=1, *, drain=True):
        for _ in range(n):
            if drain:
                await self.worker.drain()
            self.clock.advance(1 / self.fps)
            await self.clock.settled(2)

    @property
    def frames(self):
        return list(self.sink.frames)


@pytest.fixture
async def worker():
    w = RenderWorker("cpu")
    yield w
    await w.aclose()


def tone(n, value_start=1):
    """Loud audio whose sample values count up, so order and gaps can be checked."""
    t = np.arange(n)
    wave = (np.sin(2 * np.pi * 220 * t / 16000) * 12000).astype(np.int16)
    wave[::2] = (np.arange(value_start, value_start + (n + 1) // 2) % 30000).astype(np.int16)
    return wave


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


async def test_events_missed_while_detached_arrive_in_order_on_attach(worker):
    h = Harness(worker)
    await h.start()
    h.runner.detach(h.link)
    h.runner.speak(tone(4000).tobytes())
    h.runner.speak_end()
    await h.step(15)
    assert h.link.events == []
    second = ListLink()
    h.runner.attach(second)
    kinds = [e["type"] for e in second.events]
    assert kinds == ["agent.speak.confirmed", "agent.speak_started", "agent.speak_ended"]
    assert h.ended == []
    await h.runner.aclose("client_request")


async def test_grace_ends_a_detached_session_unless_it_reattaches(worker):
    h = Harness(worker, reconnect_grace_s=1.0)
    await h.start()
    h.runner.detach(h.link)
    await h.step(20)  # 0.8 s
    second = ListLink()
    h.runner.attach(second)
    await h.step(30)
    assert h.ended == []
    h.runner.detach(second)
    await h.step(30)
    assert h.ended == ["websocket_closed"]
    await h.runner.aclose("websocket_closed")


async def test_idle_timeout(worker):
    h = Harness(worker, idle_timeout_s=0.6)
    await h.start()
    await h.step(10)
    h.runner.keep_alive()
    await h.step(10)
    assert h.ended == []
    await h.step(10)
    assert h.ended == ["idle_timeout"]
    assert h.link.of("session.keep_alive.ack")
    await h.runner.aclose("idle_timeout")


async def test_buffer_full_is_an_error_and_the_session_lives_on(worker):
    h = Harness(worker, max_buffer_s=1.0)
    await h.start()
    h.runner.speak(tone(15000).tobytes())
    h.runner.speak(tone(2000).tobytes())
    assert h.link.events[-1]["type"] == "error"
    assert h.link.events[-1]["code"] == "BUFFER_FULL"
    await h.step(5)
    h.runner.speak(tone(1000).tobytes())
    assert h.link.events[-1]["type"] == "agent.speak.confirmed"
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


async def test_renderer_failure_ends_only_that_session(worker):
    bad = FakeRenderer()
    h = Harness(worker, renderer=bad)
    await h.start()
    bad.fail = True
    for _ in range(50):
        await worker.drain()
        h.clock.advance(1 / FPS)
        await asyncio.sleep(0.01)
        if h.ended:
            break
    assert h.ended == ["error"]
    assert h.link.of("error")[0]["code"] == "RENDER_FAILED"
    await h.runner.aclose("error")


async def test_aclose_is_idempotent_and_ends_live_utterances(worker):
    h = Harness(worker)
    never_started = Harness(worker)
    await never_started.runner.aclose("client_request")
    await h.start()
    h.runner.speak(tone(16000).tobytes())
    await h.step(5)
    stats = await h.runner.aclose("client_request")
    assert await h.runner.aclose("client_request") == stats
    assert [e["interrupted"] for e in h.link.of("agent.speak_ended")] == [True]
    assert h.sink.closed
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not any(n.startswith("session:") for n in names)


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
