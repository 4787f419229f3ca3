"""DailyTransport against a fake daily-python that keeps the real threading rules: joining and
its retries, the room's participants and emptiness, start and close. What it sends is
test_daily_transport_media.py."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from agenthuman_local.transports.daily import (
    DailyJoinError,
    DailyTransport,
    is_network_error,
    load_daily,
)
from tests.daily_transport_harness import SR, H, Recorder, W, frame, make, until
from tests.fakes import VirtualClock
from tests.fakes_daily import HANG, FakeDaily

NETWORK_ERROR = (
    "Connection(Api(RoomLookup(RoomInfoFetchFailed(Get(hyper_util::client::legacy::Error("
    'Connect, Custom { kind: Uncategorized, error: "failed to lookup address information" })))))'
)
URL_ERROR = 'Failed to parse url: InvalidUrl("not-a-url", RelativeUrlWithoutBase)'


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
