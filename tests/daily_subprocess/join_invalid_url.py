"""DailyTransport on the real library: the fast join-failure path, then leave and release."""

import asyncio
import json
import time

from agenthuman_local.transports.daily import DailyCallbacks, DailyJoinError, DailyTransport


async def main() -> dict:
    events: list[str] = []
    callbacks = DailyCallbacks(on_error=events.append, on_call_state=events.append)
    transport = DailyTransport("not-a-url", None, "AI Avatar (AH)", 64, 48, 16000, callbacks)
    started = time.monotonic()
    out: dict = {}
    try:
        await transport.start()
        out["joined"] = True
    except DailyJoinError as exc:
        out.update(error=str(exc), network=exc.network, attempts=exc.attempts)
    out["join_s"] = round(time.monotonic() - started, 3)
    started = time.monotonic()
    await transport.aclose()
    await transport.aclose()
    out["close_s"] = round(time.monotonic() - started, 3)
    await asyncio.sleep(0.2)  # late daily events must not reach the callbacks after a failure
    out["events"] = events
    return out


print(json.dumps(asyncio.run(main())))
