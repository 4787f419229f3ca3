"""Pacing against a virtual clock: due times, late ticks, dropped slots."""

import asyncio

import pytest

from agenthuman_local.clock import WallClock
from agenthuman_local.sessions.clock import Pacer
from tests.fakes import VirtualClock


async def test_ticks_wait_for_their_due_time():
    clock = VirtualClock()
    pacer = Pacer(25, clock)
    t0 = clock.now()
    tick = await pacer.next_tick()  # frame 0 is due at once
    assert (tick.frame_index, tick.pts_ms, tick.pts_end_ms, tick.late) == (0, 0, 40, False)
    task = asyncio.create_task(pacer.next_tick(), name="test:tick")
    await clock.settled()
    assert not task.done()
    clock.advance(0.039)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.001)
    tick = await task
    assert tick.frame_index == 1 and not tick.late
    assert abs(pacer.due(1) - (t0 + 0.04)) < 1e-9


async def test_a_late_wakeup_is_late_and_a_long_stall_drops_slots():
    clock = VirtualClock()
    pacer = Pacer(25, clock, max_behind_frames=4)
    await pacer.next_tick()
    clock.advance(0.04 + 0.03)  # frame 1 wakes 30 ms late
    tick = await pacer.next_tick()
    assert tick.late and round(tick.lateness_ms) == 30
    clock.advance(1.0)  # a one-second stall
    tick = await pacer.next_tick()
    assert tick.frame_index == 2  # indices never skip: audio stays with its frame
    assert tick.dropped_slots == 24
    assert pacer.frames_dropped == 24
    assert pacer.frames_late == 2
    # Re-anchored: the next frame is due one period later, not in a burst.
    task = asyncio.create_task(pacer.next_tick(), name="test:tick")
    await clock.settled()
    assert not task.done()
    clock.advance(0.04)
    assert (await task).frame_index == 3


async def test_settled_fails_with_the_counts_instead_of_hanging():
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep_until(clock.now() + 1), name="test:sleeper")
    await clock.settled(1, timeout_s=1)  # the one sleeper is there
    with pytest.raises(AssertionError, match=r"settled\(2\): 1 of 2 tasks sleep .* after 0.05 s"):
        await clock.settled(2, timeout_s=0.05)
    clock.advance(1)
    await task


async def test_pts_is_exact_for_any_fps():
    pacer = Pacer(30, VirtualClock())
    assert [pacer.pts_ms(n) for n in range(4)] == [0, 33, 66, 100]
    assert pacer.pts_ms(30 * 3600) == 3600 * 1000


async def test_wall_clock_sleeps_until():
    clock = WallClock()
    target = clock.now() + 0.01
    await clock.sleep_until(target)
    assert clock.now() >= target
