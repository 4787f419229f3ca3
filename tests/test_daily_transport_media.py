"""DailyTransport against a fake daily-python: what it sends. Audio paced through completions,
video checked and queued without blocking, nothing before the join, the last audio awaited
before leaving, and the transport as a session's sink."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from agenthuman_local.transports.daily import DailySink
from tests.daily_transport_harness import SR, H, W, frame, make, until
from tests.fakes_daily import FakeDaily, SinkFrame


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
