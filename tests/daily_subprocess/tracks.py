"""Custom tracks and frame-size checks on the real library; our join settings validated offline."""

import json
import threading

import numpy as np

from agenthuman_local.transports.daily import (
    SUBSCRIBE_TO_NOTHING,
    DailyTransport,
    ensure_initialized,
    load_daily,
)

W, H = 96, 64
lib = load_daily()
ensure_initialized(lib)
video = lib.CustomVideoSource(W, H, "RGB")
video_track = lib.CustomVideoTrack(video)
audio = lib.CustomAudioSource(16000, 1)
audio_track = lib.CustomAudioTrack(audio)
out = {"video_track_id": bool(video_track.id), "audio_track_id": bool(audio_track.id)}
video.write_frame(np.zeros((H, W, 3), np.uint8).tobytes())
for name, buf in [("short", b"\0" * 100), ("rgba", np.zeros((H, W, 4), np.uint8).tobytes())]:
    try:
        video.write_frame(buf)
        out[name] = "accepted"
    except ValueError as exc:
        out[name] = f"ValueError: {exc}"

transport = DailyTransport("https://example.daily.co/x", None, "t", W, H, 16000, fps=25)
settings = transport.client_settings(video_track.id, audio_track.id)
client = lib.CallClient()
results = {}


def settle(key: str, call, value) -> None:
    done = threading.Event()
    call(value, completion=lambda err: (results.__setitem__(key, err), done.set()))
    done.wait(10)


settle("inputs", client.update_inputs, settings["inputs"])
settle("publishing", client.update_publishing, settings["publishing"])
settle("subscriptions", client.update_subscription_profiles, SUBSCRIBE_TO_NOTHING)
settle("bad_inputs", client.update_inputs, {"camera": {"isEnabled": "yes"}})
out["settings"] = results
client.release()
print(json.dumps(out))
