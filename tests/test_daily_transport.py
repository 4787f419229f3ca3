"""DailyTransport against a fake daily-python that keeps the real threading rules."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest

from agenthuman_local.transports.daily import (
    DailyCallbacks,
    DailyJoinError,
    DailySink,
    DailyTransport,
    is_network_error,
    load_daily,
)
from tests.fakes import VirtualClock
from tests.fakes_daily import HANG, FakeDaily, SinkFrame

W, H, SR = 64, 48, 16_000
NETWORK_ERROR = (
    "Connection(Api(RoomLookup(RoomInfoFetchFailed(Get(hyper_util::client::legacy::Error("
    'Connect, Custom { kind: Uncategorized, error: "failed to lookup address information" })))))'
)
URL_ERROR = 'Failed to parse url: InvalidUrl("not-a-url", RelativeUrlWithoutBase)'


class Recorder:
    """Callbacks that remember what they saw and on which thread."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.threads: set[int] = set()
        self.room_empty = asyncio.Event()
        self.changed = asyncio.Event()

    def _note(self, *event) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(event)
        self.changed.set()

    def callbacks(self) -> DailyCallbacks:
        return DailyCallbacks(
            on_participant_joined=lambda pid, name: self._note("joined", pid, name),
            on_participant_left=lambda pid, reason: self._note("left", pid, reason),
            on_error=lambda message: self._note("error", message),
            on_call_state=lambda state: self._note("state", state),
            on_room_empty=lambda: (self._note("empty"), self.room_empty.set()),
        )

    async def wait_for(self, event: tuple) -> None:
        while event not in self.events:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


def make(daily: FakeDaily, rec: Recorder | None = None, **kw) -> DailyTransport:
    kw.setdefault("join_backoff_s", 0.01)
    return DailyTransport(
        "https://example.daily.co/room",
        "tok",
        "AI Avatar (AH)",
        W,
        H,
        SR,
        (rec or Recorder()).callbacks(),
        lib=daily.lib,
        **kw,
    )


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait for something another thread does (the fake's threads cannot set asyncio events)."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def frame(value: int) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def test_network_errors_are_told_apart_from_bad_urls() -> None:
    assert is_network_error(NETWORK_ERROR)
    assert is_network_error("…Error(Connect, Elapsed(()))…")
    assert not is_network_error(URL_ERROR)
    assert not is_network_error("Authentication failed: invalid meeting token")


@pytest.mark.parametrize("sync_completions", [False, True])
async def test_join_success_publishes_two_custom_tracks(sync_completions: bool) -> None:
    daily = FakeDaily(sync_completions=sync_completions, already_in_room=[("p1", "Ana")])
    rec = Recorder()
    t = make(daily, rec)
    await t.start()
    try:
        assert t.joined
        client = daily.client
        assert client.user_name == "AI Avatar (AH)"
        settings = client.join_settings
        video_id = settings["inputs"]["camera"]["settings"]["customTrack"]["id"]
        audio_id = settings["inputs"]["microphone"]["settings"]["customTrack"]["id"]
        assert video_id != audio_id
        assert settings["publishing"]["camera"]["isPublishing"] is True
        assert daily.video_sources[0].color_format == "RGB"
        assert (daily.audio_sources[0].sample_rate, daily.audio_sources[0].channels) == (SR, 1)
        # Someone already in the room is known without waiting for a later event.
        assert t.participant_ids == {"p1"}
        assert "update_subscription_profiles" in daily.calls
        assert all(name.startswith("fake-daily") for name in daily.event_threads)
    finally:
        await t.aclose()
    assert rec.threads <= {threading.get_ident()}


async def test_join_failure_on_a_bad_url_is_not_retried() -> None:
    daily = FakeDaily(join_results=[URL_ERROR, None])
    rec = Recorder()
    t = make(daily, rec)
    with pytest.raises(DailyJoinError) as info:
        await t.start()
    assert info.value.network is False
    assert info.value.attempts == 1
    assert "InvalidUrl" in str(info.value)
    assert daily.calls.count("join") == 1
    assert not t.joined
    await t.aclose()
    # The join's own on_error events belong to the exception, not to the callbacks.
    assert not [e for e in rec.events if e[0] == "error"]
    assert daily.calls[-3:] == ["leave", "release:start", "release"]


async def test_network_errors_are_retried_until_the_join_succeeds() -> None:
    daily = FakeDaily(join_results=[NETWORK_ERROR, NETWORK_ERROR, None])
    t = make(daily, join_attempts=3)
    await t.start()
    assert t.joined
    assert daily.calls.count("join") == 3
    assert len(daily.clients) == 1  # the same client is reused, as daily allows
    await t.aclose()


async def test_retries_stop_after_the_last_attempt() -> None:
    daily = FakeDaily(join_results=[NETWORK_ERROR] * 5)
    t = make(daily, join_attempts=2)
    with pytest.raises(DailyJoinError) as info:
        await t.start()
    assert (info.value.network, info.value.attempts) == (True, 2)
    assert daily.calls.count("join") == 2
    await t.aclose()


async def test_a_hung_join_times_out_and_close_leaves_after_it() -> None:
    daily = FakeDaily(join_results=[HANG], hang_s=0.5)
    t = make(daily, join_timeout_s=0.05, join_attempts=3)
    with pytest.raises(DailyJoinError, match="timed out") as info:
        await t.start()
    assert info.value.attempts == 1
    assert daily.calls.count("join") == 1  # a second join would only queue behind the first
    await t.aclose()
    assert daily.calls == [
        "update_subscription_profiles",
        "join",
        "leave",
        "release:start",
        "release",
    ]


async def test_close_during_a_pending_join_ends_start_and_releases() -> None:
    daily = FakeDaily(join_delay_s=0.3)
    t = make(daily)
    start = asyncio.create_task(t.start(), name="test:start")
    await until(lambda: "join" in daily.calls)
    await t.aclose()
    with pytest.raises(DailyJoinError, match="closed"):
        await start
    assert daily.calls[-3:] == ["leave", "release:start", "release"]
    assert not t.joined


async def test_participants_are_reported_on_the_loop() -> None:
    daily = FakeDaily()
    rec = Recorder()
    t = make(daily, rec)
    await t.start()
    daily.client.remote_joins("p2", "Bo")
    await rec.wait_for(("joined", "p2", "Bo"))
    assert t.participant_ids == {"p2"}
    daily.client.remote_leaves("p2", "hidden")
    await rec.wait_for(("left", "p2", "hidden"))
    assert t.participant_ids == set()
    daily.client.error_event("network blip")
    await rec.wait_for(("error", "network blip"))
    await t.aclose()
    assert rec.threads == {threading.get_ident()}


async def test_room_empty_fires_once_everyone_has_been_gone_long_enough() -> None:
    daily = FakeDaily(already_in_room=[("p1", "Ana")])
    rec = Recorder()
    clock = VirtualClock()
    t = make(daily, rec, empty_room_timeout_s=0.2, clock=clock)
    await t.start()
    daily.client.remote_leaves("p1")
    await rec.wait_for(("left", "p1", "leftCall"))
    await asyncio.wait_for(clock.settled(1), 5)  # the empty-room timer, on the virtual clock
    clock.advance(0.19)
    await asyncio.sleep(0)
    assert not rec.room_empty.is_set()  # not before the timeout
    clock.advance(0.01)
    await asyncio.wait_for(rec.room_empty.wait(), 5)
    assert [e for e in rec.events if e[0] in ("left", "empty")] == [
        ("left", "p1", "leftCall"),
        ("empty",),
    ]
    await t.aclose()


async def test_room_empty_is_called_off_when_someone_comes_back() -> None:
    daily = FakeDaily(already_in_room=[("p1", "Ana")])
    rec = Recorder()
    clock = VirtualClock()
    t = make(daily, rec, empty_room_timeout_s=0.5, clock=clock)
    await t.start()
    daily.client.remote_leaves("p1")
    daily.client.remote_joins("p1", "Ana")
    await rec.wait_for(("joined", "p1", "Ana"))
    assert clock.sleeping == 0  # the timer was called off
    clock.advance(0.8)
    await asyncio.sleep(0)
    assert not rec.room_empty.is_set()
    await t.aclose()


async def test_an_empty_room_at_join_counts_as_empty() -> None:
    daily = FakeDaily()
    rec = Recorder()
    t = make(daily, rec, empty_room_timeout_s=0.1)
    await t.start()
    await asyncio.wait_for(rec.room_empty.wait(), 5)
    await t.aclose()


async def test_being_thrown_out_is_reported_and_stops_publishing() -> None:
    daily = FakeDaily(already_in_room=[("p1", "Ana")])
    rec = Recorder()
    t = make(daily, rec)
    await t.start()
    daily.client.kicked_out()
    await rec.wait_for(("state", "left"))
    assert not t.joined
    assert t.write_video(frame(1)) is False
    await t.aclose()


async def test_audio_is_paced_through_completions_in_small_chunks() -> None:
    daily = FakeDaily()
    t = make(daily, audio_chunk_ms=40)
    await t.start()
    pcm = np.arange(int(SR * 0.21), dtype=np.int16).tobytes()  # 210 ms: five 40 ms + one 10 ms
    written = await t.write_audio(pcm)
    source = daily.audio_sources[0]
    assert written == len(pcm) // 2
    assert [len(c) for c in source.chunks] == [1280] * 5 + [320]
    assert b"".join(source.chunks) == pcm
    assert set(source.completion_threads) == {"fake-daily-audio"}
    assert source.pending == 0
    with pytest.raises(ValueError, match="even"):
        await t.write_audio(b"\x00")
    await t.aclose()


async def test_nothing_is_sent_before_the_join() -> None:
    daily = FakeDaily()
    t = make(daily)
    assert t.write_video(frame(0)) is False
    assert await t.write_audio(b"\x00\x00" * 320) == 0
    t.publish(frame(0), b"")
    await t.aclose()
    assert daily.calls == []


async def test_frame_size_is_checked_before_any_write() -> None:
    daily = FakeDaily()
    t = make(daily)
    await t.start()
    with pytest.raises(ValueError, match="expected"):
        t.write_video(np.zeros((H, W, 4), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        t.publish(np.zeros((H, W, 3), np.float32), b"")
    assert t.write_video(frame(7)) is True
    assert daily.video_sources[0].frames == [frame(7).tobytes()]
    await t.aclose()


async def test_publish_never_blocks_and_drops_the_oldest_frames() -> None:
    daily = FakeDaily()
    t = make(daily, queue_frames=4)
    await t.start()
    pcm_per_frame = b"\x00\x00" * (SR // 25)
    for i in range(20):
        t.publish(frame(i), pcm_per_frame)  # no await: the pump cannot run in between
    assert t.frames_dropped == 16
    source = daily.audio_sources[0]
    await until(lambda: len(source.chunks) == 4 and not source.pending)
    assert daily.video_sources[0].frames == [frame(i).tobytes() for i in range(16, 20)]
    # Each frame's video goes out just before its audio.
    writes = [c for c in daily.calls if c == "write_frame"]
    assert len(writes) == 4
    await t.aclose()


async def test_close_awaits_the_last_audio_completion_then_leaves_then_releases() -> None:
    daily = FakeDaily()
    t = make(daily)
    await t.start()
    writer = asyncio.create_task(t.write_audio(b"\x00\x00" * SR), name="test:audio")  # 1 s
    await until(lambda: daily.audio_sources[0].chunks)
    writer.cancel()
    await t.aclose()
    source = daily.audio_sources[0]
    assert source.pending == 0
    assert len(source.chunks) < 25  # the cancelled writer stopped queuing
    assert daily.calls[-3:] == ["leave", "release:start", "release"]
    assert daily.release_threads and daily.release_threads[0] != threading.current_thread().name
    with pytest.raises(asyncio.CancelledError):
        await writer


async def test_close_is_idempotent_and_concurrent_calls_share_one_shutdown() -> None:
    daily = FakeDaily()
    t = make(daily)
    await t.start()
    await asyncio.gather(t.aclose(), t.aclose())
    await t.aclose()
    assert daily.calls.count("leave") == 1
    assert daily.calls.count("release") == 1
    assert daily.violations == []


async def test_close_before_start_touches_nothing() -> None:
    daily = FakeDaily()
    t = make(daily)
    await t.aclose()
    await t.aclose()
    assert daily.calls == [] and daily.init_calls == 0


async def test_daily_is_initialised_once_for_many_transports() -> None:
    daily = FakeDaily()
    first, second = make(daily), make(daily)
    await first.start()
    await second.start()
    assert daily.init_calls == 1
    await asyncio.gather(first.aclose(), second.aclose())
    with pytest.raises(RuntimeError, match="start"):
        await first.start()


async def test_as_a_sink_frames_reach_the_room_and_close_closes_the_transport() -> None:
    daily = FakeDaily()
    t = make(daily)
    await t.start()
    sink = DailySink(t)
    samples = np.zeros(SR // 25, np.int16)
    await sink.publish(SinkFrame("s", 0, 0, frame(5), samples, SR))
    with pytest.raises(ValueError, match="24000 Hz"):
        await sink.publish(SinkFrame("s", 1, 40, frame(6), samples, 24_000))
    await until(lambda: daily.video_sources[0].frames and not daily.audio_sources[0].pending)
    assert daily.video_sources[0].frames == [frame(5).tobytes()]
    assert sink.dropped == 0
    await sink.aclose()
    await sink.aclose()
    assert not t.joined and daily.calls.count("release") == 1


async def test_a_cancelled_start_still_closes_cleanly() -> None:
    daily = FakeDaily(join_delay_s=0.3)
    t = make(daily)
    start = asyncio.create_task(t.start(), name="test:start")
    await until(lambda: "join" in daily.calls)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    await t.aclose()
    assert daily.calls[-3:] == ["leave", "release:start", "release"]


async def test_without_daily_python_start_is_a_join_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "daily", None)  # what an absent package looks like
    load_daily.cache_clear()
    try:
        t = DailyTransport("https://example.daily.co/x", None, "AI", W, H, SR)
        with pytest.raises(DailyJoinError, match="not installed") as info:
            await t.start()
        assert info.value.network is False
        await t.aclose()
    finally:
        load_daily.cache_clear()
