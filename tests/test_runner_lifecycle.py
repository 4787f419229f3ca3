"""How a runner's session lives and ends (`tests.runner_harness`): events missed while detached
arrive on attach, the reconnect grace and the idle timeout end it, a full buffer is an error it
lives through, a renderer failure ends only that session, and `aclose` is idempotent and ends
live utterances."""

import asyncio

from tests.fakes import FakeRenderer
from tests.runner_harness import FPS, Harness, ListLink, tone


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
