"""A live session whose session.init names a Daily room daily-python cannot parse, through the
app's Daily output and the real library: room_error, the other outputs going on, a clean end."""

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from agenthuman_local import keys
from agenthuman_local.app import create_app
from agenthuman_local.config_sources import load_settings
from tests.test_ws_helpers import fake_renderer_ctx

ROOT = Path(__file__).resolve().parent.parent.parent


async def main(tmp: str) -> dict:
    settings = load_settings(
        ROOT / "config" / "test.yaml", environ={}, overrides={"data_dir": f"{tmp}/data"}
    )
    app = create_app(settings, environ={}, contexts=[fake_renderer_ctx(None)])
    out: dict = {"states": [], "frames": 0}
    async with TestClient(TestServer(app)) as client:
        headers = {"x-api-key": app[keys.first_key_key].key}
        created = await (await client.post("/v1/sessions", json={}, headers=headers)).json()
        sid = created["session"]["session_id"]
        await client.put(f"/v1/sessions/{sid}/start", headers=headers)
        ws = await client.ws_connect(f"/v1/sessions/{sid}/ws")
        room = {"platform": "daily", "url": "not-a-url", "token": "x"}
        config = {
            "session_id": sid,
            "access_token": created["session"]["access_token"],
            "room": room,
            "video_width": 160,
            "video_height": 128,
            "output": {"video": "jpeg"},
        }
        await ws.send_json({"type": "session.init", "config": config})
        while len(out["states"]) < 2 or out["frames"] < 3:
            msg = await ws.receive(timeout=20)
            if msg.type is WSMsgType.TEXT:
                event = json.loads(msg.data)
                if event["type"] == "session.state":
                    out["states"].append([event["state"], event["reason"]])
            elif msg.type is WSMsgType.BINARY:
                out["frames"] += 1
            else:
                raise RuntimeError(f"socket closed: {msg}")
        got = await (await client.get(f"/v1/sessions/{sid}", headers=headers)).json()
        out["daily_room"] = got["session"]["daily_room"]
        out["status_after"] = got["session"]["status"]
        ended = await (await client.put(f"/v1/sessions/{sid}/end", headers=headers)).json()
        out["end_reason"] = ended["session"]["end_reason"]
        await ws.close()
    return out


print(json.dumps(asyncio.run(main(sys.argv[1]))))
