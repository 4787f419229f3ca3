"""The viewer page in a real headless Chromium, against the real app and engine (SPEC §10): a
client speaks into a live session and the page's mouth moves, its audio plays, and it says
`speaking`. Skipped where Chromium is not installed (`make test` installs it).

The page is driven over the DevTools protocol. Its audio level is read from an AnalyserNode
tapped onto whatever the page connects to its speakers (a script added before the page loads),
so the page itself is unchanged. A screenshot goes to test-artifacts/viewer-speaking.png.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.server import speech_pcm
from tests.chromium import CHROMIUM, DevTools, chromium
from tests.conftest import ApiClient

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
W, H = 320, 240
# The procedural avatar's mouth, with room for the head's idle sway.
MOUTH = (int(W * 0.40), int(H * 0.44), int(W * 0.20), int(H * 0.20))  # x, y, w, h

# Taps every connection to the speakers: window.__audioLevel() is the peak of the last 2048
# samples the page sent there (0 when it sends silence).
LEVEL_TAP = """
(() => {
  const connect = AudioNode.prototype.connect;
  const taps = [];
  AudioNode.prototype.connect = function (dest, ...rest) {
    if (dest instanceof AudioDestinationNode) {
      const tap = this.context.createAnalyser();
      tap.fftSize = 2048;
      connect.call(this, tap);
      taps.push(tap);
    }
    return connect.call(this, dest, ...rest);
  };
  window.__audioLevel = () => {
    let peak = 0;
    const buf = new Float32Array(2048);
    for (const tap of taps) {
      tap.getFloatTimeDomainData(buf);
      for (const v of buf) peak = Math.max(peak, Math.abs(v));
    }
    return peak;
  };
})();
"""
# The mean change of the mouth region from one shown frame to the next (`gap` frames later),
# measured inside the page so that how fast the test can poll does not matter.
MOUTH_JS = """
(async () => {
  const c = document.getElementById('video').getContext('2d');
  const grab = () => c.getImageData(X, Y, W, H).data;
  const shown = () => (window.agenthumanViewer.stats().shown || {}).frameIndex;
  const first = shown(), a = grab();
  while (shown() === first) await new Promise((r) => requestAnimationFrame(r));
  const gap = shown() - first, b = grab();
  let sum = 0;
  for (let i = 0; i < a.length; i += 4) {
    sum += Math.abs(a[i] + a[i + 1] + a[i + 2] - b[i] - b[i + 1] - b[i + 2]) / 3;
  }
  return { change: sum / (a.length / 4), gap };
})()
""".replace("X, Y, W, H", ", ".join(map(str, MOUTH)))
STATS_JS = "window.agenthumanViewer && window.agenthumanViewer.stats()"
STATE_JS = "document.getElementById('state').textContent"


async def sample(devtools: DevTools, seconds: float) -> tuple[float, float]:
    """(the mouth region's mean change from a shown frame to the next, peak audio level)."""
    changes, peak = [], 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        step = await devtools.eval(MOUTH_JS)
        if step["gap"] == 1:
            changes.append(step["change"])
        peak = max(peak, float(await devtools.eval("window.__audioLevel()")))
    return float(np.mean(changes)), peak


async def wait_until(devtools: DevTools, expression: str, limit_s: float = 20) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = await devtools.eval(expression)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"never true: {expression}")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
async def test_the_viewer_shows_a_real_session_talking(api: ApiClient, tmp_path: Path) -> None:
    session = await api.create_session()
    sid = session["session_id"]
    await api.start_session(sid)
    ws = await api.client.ws_connect(f"/v1/sessions/{sid}/ws")
    init = {"session_id": sid, "access_token": session["access_token"]}
    await ws.send_json(
        {"type": "session.init", "config": {**init, "video_width": W, "video_height": H}}
    )
    await ws.send_json({"type": "session.keep_alive"})
    viewer_path = session["viewer_url"].split("/v1/", 1)[1]
    try:
        async with chromium(tmp_path / "profile") as devtools:
            await devtools.call("Page.enable")
            await devtools.call("Page.addScriptToEvaluateOnNewDocument", source=LEVEL_TAP)
            await devtools.call("Page.navigate", url=str(api.client.make_url("/v1/" + viewer_path)))
            await wait_until(devtools, f"({STATS_JS}) && ({STATS_JS}).audio && ({STATS_JS}).shown")
            await asyncio.sleep(0.5)  # the jitter buffer fills; idle frames play
            idle_change, idle_level = await sample(devtools, 1.5)

            speech = speech_pcm()[: 4 * 16000]
            await ws.send_json(
                {"type": "agent.speak", "audio": base64.b64encode(speech.tobytes()).decode()}
            )
            await ws.send_json({"type": "agent.speak_end"})
            while json.loads((await ws.receive(timeout=20)).data)["type"] != "agent.speak_started":
                pass
            await asyncio.sleep(0.3)  # what the page buffers before it plays
            speech_change, speech_level = await sample(devtools, 2.0)
            state = await devtools.eval(STATE_JS)
            shot = await devtools.call("Page.captureScreenshot", format="png")
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "viewer-speaking.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        await api.json("PUT", f"/v1/sessions/{sid}/end")
        await ws.close()
    assert idle_level == 0.0, "the page played sound before anyone spoke"
    assert speech_level > 0.01, "the page played no sound during speech"
    assert speech_change >= 3 * idle_change, (speech_change, idle_change)
    assert state == "speaking"
