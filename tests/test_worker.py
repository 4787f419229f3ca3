"""The per-device render worker: batching across sessions, futures, failure isolation, close."""

import asyncio
import threading
import time

import numpy as np
import pytest

from agenthuman_local.engine.base import N_PARAMS, P
from agenthuman_local.engine.worker import RenderPool, RenderWorker, WorkerClosed, WorkerFull
from tests.fakes import FakeRenderer, jaw_level


def _params(jaw):
    p = np.zeros(N_PARAMS, np.float32)
    p[P.JAW] = jaw
    return p


async def test_results_match_their_jobs_and_run_off_the_loop():
    worker = RenderWorker("cpu")
    r = FakeRenderer()
    jobs = [worker.submit(r, _params(j / 10)) for j in range(10)]
    results = await asyncio.gather(*(j.future for j in jobs))
    assert [int(res.image[5, 5, 0]) for res in results] == [jaw_level(j / 10) for j in range(10)]
    assert results[0].image.shape == (64, 64, 3)
    assert r.thread_names == {"render-worker:cpu"}
    assert threading.current_thread().name not in r.thread_names
    await worker.aclose()


async def test_jobs_from_two_sessions_sharing_a_renderer_are_batched():
    worker = RenderWorker("cpu")
    slow = FakeRenderer(delay_s=0.05)
    shared = FakeRenderer()
    first = worker.submit(slow, _params(0))  # holds the thread while the others queue up
    jobs = [worker.submit(shared, _params(0.5)) for _ in range(8)]
    await asyncio.gather(first.future, *(j.future for j in jobs))
    assert shared.batch_sizes == [8]
    assert {j.future.result().batch_size for j in jobs} == {8}
    await worker.aclose()


async def test_different_renderers_run_back_to_back_in_one_pass():
    worker = RenderWorker("cpu")
    gate = FakeRenderer(delay_s=0.05)
    a, b = FakeRenderer(), FakeRenderer(32, 32)
    worker.submit(gate, _params(0))
    ja = [worker.submit(a, _params(0.1)) for _ in range(3)]
    jb = [worker.submit(b, _params(0.9)) for _ in range(2)]
    await worker.drain()
    assert a.batch_sizes == [3] and b.batch_sizes == [2]
    assert jb[0].future.result().image.shape == (32, 32, 3)
    assert all(j.future.done() for j in ja + jb)
    await worker.aclose()


async def test_the_frame_due_first_goes_first_with_its_tick_mates():
    worker = RenderWorker("cpu", batch_window_s=0.010)
    gate = FakeRenderer(delay_s=0.05)
    r = FakeRenderer()
    worker.submit(gate, _params(0))
    await asyncio.sleep(0.01)  # the thread is busy with the gate
    worker.submit(r, _params(0.3), due=1.160)  # rendered ahead, due later
    worker.submit(r, _params(0.2), due=1.120)
    worker.submit(r, _params(0.1), due=1.040)  # session A's next frame
    worker.submit(r, _params(0.15), due=1.045)  # session B's frame of the same tick
    await worker.drain()
    assert r.jaws == [[0.1, 0.15], [0.2], [0.3]]
    await worker.aclose()


async def test_a_frame_past_its_deadline_is_skipped_and_the_next_one_rendered():
    """A worker behind does not render a frame that can no longer show at its tick (it would be
    repeated anyway): it cancels it and renders the next, which can still make its own."""
    worker = RenderWorker("cpu")
    gate, r = FakeRenderer(), FakeRenderer()
    gate.hold()
    worker.submit(gate, _params(0))
    await asyncio.to_thread(gate.started.wait, 5)  # the thread is busy
    now = time.monotonic()
    doomed = worker.submit(r, _params(0.1), due=1.0, deadline=now + 0.001)
    late_ok = worker.submit(r, _params(0.2), due=1.0, deadline=None)  # no deadline: rendered
    next_one = worker.submit(r, _params(0.3), due=1.04, deadline=now + 30)
    await asyncio.sleep(0.005)  # the doomed frame's deadline passes while the thread is busy
    gate.release()
    await worker.drain()
    assert doomed.future.cancelled()
    assert next_one.future.result().image[5, 5, 0] == jaw_level(0.3)
    assert late_ok.future.result().image[5, 5, 0] == jaw_level(0.2)
    assert r.jaws == [[0.2], [0.3]] and worker.skipped == 1
    await worker.aclose()


async def test_a_frame_the_renderer_is_too_slow_for_is_skipped_before_its_deadline():
    """The worker judges by the renderer's recent batch time: a frame due sooner than a batch
    takes is skipped at once; one with time enough is rendered."""
    worker = RenderWorker("cpu")
    slow = FakeRenderer(delay_s=0.2)
    await worker.submit(slow, _params(0)).future  # the worker learns: ~0.2 s a batch
    now = time.monotonic()
    too_soon = worker.submit(slow, _params(0.1), deadline=now + 0.05)
    await asyncio.wait([too_soon.future])
    assert too_soon.future.cancelled()
    in_time = worker.submit(slow, _params(0.2), deadline=time.monotonic() + 5)
    assert (await in_time.future).image[5, 5, 0] == jaw_level(0.2)
    assert slow.jaws == [[0.0], [0.2]]
    await worker.aclose()


async def test_drain_waits_for_cancelled_and_failed_jobs_too():
    worker = RenderWorker("cpu")
    await worker.drain()  # nothing submitted: at once
    bad = FakeRenderer(delay_s=0.02)
    bad.fail = True
    jobs = [worker.submit(bad, _params(0)) for _ in range(3)]
    jobs[2].cancel()
    await worker.drain()
    assert all(j.future.done() for j in jobs)
    await worker.aclose()


async def test_a_failing_renderer_fails_only_its_jobs():
    worker = RenderWorker("cpu")
    gate = FakeRenderer(delay_s=0.05)
    bad, good = FakeRenderer(), FakeRenderer()
    bad.fail = True
    worker.submit(gate, _params(0))
    jbad = worker.submit(bad, _params(0))
    jgood = worker.submit(good, _params(1))
    with pytest.raises(RuntimeError, match="fake renderer failure"):
        await jbad.future
    assert int((await jgood.future).image[1, 1, 0]) == jaw_level(1)
    await worker.aclose()


async def test_cancelled_jobs_are_skipped():
    worker = RenderWorker("cpu")
    gate = FakeRenderer(delay_s=0.05)
    r = FakeRenderer()
    worker.submit(gate, _params(0))
    job = worker.submit(r, _params(0))
    job.cancel()
    await worker.drain()
    assert r.batch_sizes == []
    await worker.aclose()


async def test_full_queue_raises_instead_of_waiting():
    worker = RenderWorker("cpu", max_pending=2)
    gate = FakeRenderer()
    gate.hold()
    worker.submit(gate, _params(0))
    assert await asyncio.to_thread(gate.started.wait, 30)  # the thread has taken the gate job
    worker.submit(gate, _params(0))
    worker.submit(gate, _params(0))
    with pytest.raises(WorkerFull):
        worker.submit(gate, _params(0))
    gate.release()
    await worker.aclose()


async def test_aclose_is_idempotent_and_refuses_new_jobs():
    worker = RenderWorker("cpu")
    await worker.aclose()  # never started
    await worker.aclose()
    with pytest.raises(WorkerClosed):
        worker.submit(FakeRenderer(), _params(0))


async def test_pool_has_one_worker_per_device():
    pool = RenderPool()
    assert pool.get("cpu") is pool.get("cpu")
    assert pool.get("cuda:0") is not pool.get("cpu")
    await pool.get("cpu").drain()
    await pool.aclose()
    await pool.aclose()
    with pytest.raises(WorkerClosed):
        pool.get("cpu")
