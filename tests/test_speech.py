"""The speech queue's promises (SPEC §8), by example and over random sequences (hypothesis)."""

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenthuman_local.engine.base import frame_sample_range
from agenthuman_local.sessions.speech import BufferFull, SpeechQueue, samples_to_ms

FPS = 25
FRAME = 640  # 16 kHz samples per frame at 25 fps


class Sim:
    """Drives a SpeechQueue the way the runner does: schedule `ahead` frames, publish one a tick,
    throw scheduled frames away at an interrupt. Pushed samples count up so order is checkable."""

    def __init__(self, ahead=4, gap_ms=500, max_buffer_s=30.0, fps=FPS):
        self.q = SpeechQueue(fps, max_buffer_s=max_buffer_s, silence_gap_ms=gap_ms)
        self.fps = fps
        self.ahead = ahead
        self.next_value = 1
        self.next_schedule = 0
        self.next_publish = 0
        self.scheduled = deque()
        self.events = []
        self.published = []
        self.confirms = []
        self.sent = {}  # utterance_id -> samples pushed

    def push(self, n):
        values = (np.arange(self.next_value, self.next_value + n) % 30000 + 1).astype(np.int16)
        self.next_value += n
        res = self.q.push(values)
        if res.utterance_id:
            self.sent[res.utterance_id] = self.sent.get(res.utterance_id, 0) + n
        self.confirms.append(res)
        self.events += self.q.take_events()
        return res

    def end(self):
        self.q.end_utterance()
        self.events += self.q.take_events()

    def interrupt(self):
        self.scheduled.clear()
        self.next_schedule = self.next_publish
        confirmed = self.q.interrupt()
        self.events += self.q.take_events()
        self.events.append(confirmed)
        return confirmed

    def tick(self):
        while self.next_schedule < self.next_publish + self.ahead:
            self.scheduled.append(self.q.schedule(self.next_schedule))
            self.next_schedule += 1
            self.events += self.q.take_events()
        frame = self.scheduled.popleft()
        n = frame.frame_index
        assert n == self.next_publish
        pts = n * 1000 // self.fps
        self.q.publish(frame, pts, (n + 1) * 1000 // self.fps)
        self.next_publish += 1
        self.published.append(frame)
        self.events += self.q.take_events()
        return frame

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]


def test_one_utterance_started_and_ended_once_with_speak_end():
    sim = Sim()
    res = sim.push(FRAME * 3 + 100)
    assert res.audio_samples == FRAME * 3 + 100
    assert res.buffered_ms == (FRAME * 3 + 100) // 16
    sim.end()
    for _ in range(8):
        sim.tick()
    started, ended = sim.of("agent.speak_started"), sim.of("agent.speak_ended")
    assert [e["utterance_id"] for e in started] == [res.utterance_id]
    assert started[0]["pts_ms"] == 0
    assert ended == [
        {
            "type": "agent.speak_ended",
            "utterance_id": res.utterance_id,
            "played_ms": (FRAME * 3 + 100) // 16,
            "interrupted": False,
            "pts_ms": 160,
        }
    ]


def test_started_only_when_frame_is_published_not_scheduled():
    sim = Sim(ahead=4)
    sim.tick()  # frames 0-3 scheduled as silence
    sim.push(FRAME)
    sim.tick()
    sim.tick()
    sim.tick()
    assert sim.of("agent.speak_started") == []
    sim.tick()  # frame 4 is the first that carries the audio
    assert sim.of("agent.speak_started")[0]["pts_ms"] == 4 * 40


def test_silence_gap_ends_an_utterance_and_next_audio_starts_another():
    sim = Sim(gap_ms=200)
    a = sim.push(FRAME)
    for _ in range(10):
        sim.tick()
    assert [e["utterance_id"] for e in sim.of("agent.speak_ended")] == [a.utterance_id]
    b = sim.push(FRAME)
    assert b.utterance_id != a.utterance_id


def test_pause_in_sending_shorter_than_gap_keeps_one_utterance():
    sim = Sim(gap_ms=500)
    a = sim.push(FRAME * 2)
    for _ in range(8):  # 4 frames starved < 500 ms
        sim.tick()
    b = sim.push(FRAME)
    assert a.utterance_id == b.utterance_id


def test_frames_spanning_two_utterances_end_first_then_start_second():
    sim = Sim()
    a = sim.push(FRAME // 2)
    sim.end()
    b = sim.push(FRAME)
    sim.end()
    sim.tick()
    kinds = [(e["type"], e["utterance_id"]) for e in sim.events]
    assert kinds == [
        ("agent.speak_started", a.utterance_id),
        ("agent.speak_ended", a.utterance_id),
        ("agent.speak_started", b.utterance_id),
    ]
    frame = sim.published[0]
    assert frame.segments == ((a.utterance_id, FRAME // 2), (b.utterance_id, FRAME // 2))


def test_interrupt_mid_utterance_reports_exactly_what_was_heard():
    sim = Sim()
    a = sim.push(FRAME * 10)
    sim.push(FRAME * 2)
    sim.end()
    c = sim.push(FRAME * 3)
    for _ in range(3):
        sim.tick()
    confirmed = sim.interrupt()
    ended = sim.of("agent.speak_ended")
    assert [e["utterance_id"] for e in ended] == [a.utterance_id, c.utterance_id]
    assert all(e["interrupted"] for e in ended)
    assert ended[0]["played_ms"] == 3 * 40
    assert ended[1]["played_ms"] == 0
    assert [e["utterance_id"] for e in sim.of("agent.speak_started")] == [a.utterance_id]
    assert confirmed["utterance_id"] == a.utterance_id
    assert confirmed["played_ms"] == 120
    assert confirmed["played_ms"] + confirmed["dropped_ms"] == FRAME * 15 // 16
    assert sim.events[-1] is confirmed
    # Nothing plays after the interrupt: the next frame is silence.
    assert not sim.tick().speaking


def test_interrupt_with_nothing_playing_is_still_answered():
    sim = Sim()
    confirmed = sim.interrupt()
    assert confirmed["utterance_id"] is None
    assert (confirmed["played_ms"], confirmed["dropped_ms"]) == (0, 0)


def test_interrupt_before_first_frame_drops_all_and_never_starts():
    sim = Sim()
    a = sim.push(FRAME * 2)
    confirmed = sim.interrupt()
    assert confirmed["utterance_id"] is None
    assert confirmed["dropped_ms"] == FRAME * 2 // 16
    assert sim.of("agent.speak_started") == []
    assert sim.of("agent.speak_ended")[0]["utterance_id"] == a.utterance_id


def test_buffer_full_drops_the_chunk_and_keeps_the_rest():
    sim = Sim(max_buffer_s=1.0)
    sim.push(16000 - 10)
    with pytest.raises(BufferFull):
        sim.push(11)
    assert sim.q.buffered_samples == 16000 - 10
    sim.tick()
    sim.push(11)  # room again once a frame is heard


def test_underrun_plays_silence_and_does_not_count():
    sim = Sim(ahead=1)
    sim.push(FRAME + 100)
    assert sim.tick().segments[0][1] == FRAME
    frame = sim.tick()
    assert frame.segments[0][1] == 100
    assert not frame.samples[100:].any()
    assert sim.q.played_samples == FRAME + 100


def test_an_open_utterance_starts_on_a_frame_its_own_audio_fills():
    """Less than a frame of a new, open utterance: the frame waits for it (silence, not
    speaking) rather than padding its start; a whole frame, speak_end or the silence gap
    lets it start."""
    sim = Sim(ahead=1, gap_ms=200)
    sim.push(100)
    frame = sim.tick()
    assert not frame.speaking and sim.q.played_samples == 0
    sim.push(FRAME - 100)
    frame = sim.tick()
    assert frame.segments[0][1] == FRAME and frame.samples.all()
    sim.end()
    sim.tick()
    sim.push(100)
    sim.end()  # closed: it plays at once, padded
    assert sim.tick().segments[0][1] == 100
    sim.push(100)  # open and never completed: it plays once the gap has passed
    frames = [sim.tick() for _ in range(8)]
    assert [f.speaking for f in frames].index(True) == 200 // 40
    assert sim.q.played_samples == FRAME + 200


@pytest.mark.parametrize("fps", [10, 24, 25, 29, 30, 60])
def test_scheduled_ranges_are_spec_ranges(fps):
    q = SpeechQueue(fps, max_buffer_s=30, silence_gap_ms=500)
    for n in (0, 1, 7, 12345):
        f = q.schedule(n)
        assert (f.audio_start, f.audio_end) == frame_sample_range(n, fps)
        assert len(f.samples) == f.audio_end - f.audio_start


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 3000)),
        st.tuples(st.just("end")),
        st.tuples(st.just("interrupt")),
        st.tuples(st.just("tick"), st.integers(1, 12)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, ahead=st.integers(1, 4), gap_ms=st.sampled_from([40, 120, 500]))
def test_random_sequences_keep_every_promise(ops, ahead, gap_ms):
    sim = Sim(ahead=ahead, gap_ms=gap_ms, fps=30)
    for op in ops:
        if op[0] == "push":
            sim.push(op[1])
        elif op[0] == "end":
            sim.end()
        elif op[0] == "interrupt":
            sim.interrupt()
        else:
            for _ in range(op[1]):
                sim.tick()
    sim.end()
    for _ in range(2000):
        if not sim.q._live:
            break
        sim.tick()
    assert not sim.q._live

    # Exactly one started (iff anything was heard) and one ended per utterance, in order.
    seen: dict[str, list[str]] = {}
    played: dict[str, int] = {}
    for e in sim.events:
        if e["type"] in ("agent.speak_started", "agent.speak_ended"):
            seen.setdefault(e["utterance_id"], []).append(e["type"])
        if e["type"] == "agent.speak_ended":
            played[e["utterance_id"]] = e["played_ms"]
    assert set(seen) == set(sim.sent)
    for uid, kinds in seen.items():
        if played[uid] > 0:
            assert kinds == ["agent.speak_started", "agent.speak_ended"], uid
        else:
            assert kinds[-1] == "agent.speak_ended" and kinds.count("agent.speak_ended") == 1
            assert kinds.count("agent.speak_started") <= 1

    # Utterances start in creation order and never overlap.
    order = [e["utterance_id"] for e in sim.events if e["type"] == "agent.speak_started"]
    assert order == sorted(order)
    live = None
    for e in sim.events:
        if e["type"] == "agent.speak_started":
            assert live is None
            live = e["utterance_id"]
        elif e["type"] == "agent.speak_ended" and e["utterance_id"] == live:
            live = None

    # Each interrupt's confirmation matches its speak_ended; played + dropped == what was sent.
    for i, e in enumerate(sim.events):
        if e["type"] != "agent.interrupt.confirmed":
            continue
        ended = []
        j = i - 1
        while j >= 0 and sim.events[j]["type"] == "agent.speak_ended":
            ended.insert(0, sim.events[j])
            j -= 1
        ended = [x for x in ended if x["interrupted"]]
        if e["utterance_id"] is None:
            assert e["played_ms"] == 0
        else:
            assert ended[0]["utterance_id"] == e["utterance_id"]
            assert ended[0]["played_ms"] == e["played_ms"]
        total = sum(sim.sent[x["utterance_id"]] for x in ended)
        assert e["played_ms"] + e["dropped_ms"] == samples_to_ms(total)

    # Published speech is the pushed audio, in order, with no sample twice.
    heard = []
    for f in sim.published:
        n = sum(k for _, k in f.segments)
        heard.append(f.samples[:n])
        assert not f.samples[n:].any()
    heard_all = np.concatenate(heard) if heard else np.zeros(0, np.int16)
    assert len(heard_all) == sim.q.played_samples
    # Values count up (mod the wrap) except across dropped audio, where they jump forward.
    diffs = np.diff(heard_all.astype(np.int64)) % 30000
    assert (diffs > 0).all()
