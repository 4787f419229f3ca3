"""A plug-in drives a real session end to end (SPEC §9): the window probe of `plugin_fixture`
(look-ahead 2, batch 4) found in `engine.models_dir`, listed as a public avatar, selected at
create, fed real speech over the real WebSocket; its frames reach the timeline with exact sample
ranges and carry, in their pixels, the loudness of the audio window each was rendered from."""

from __future__ import annotations

import json
import logging
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

from agenthuman_local import keys, protocol
from agenthuman_local.engine.base import frame_sample_range
from tests.fakes import VirtualClock
from tests.plugin_fixture import (
    PROBE_FPS,
    SOURCE_URL,
    probe_level,
    write_manifest,
    write_window_probe,
)
from tests.test_ws_helpers import Live, wait_for

SPEECH = Path(__file__).parent / "data" / "speech.wav"
PROBE_AVATAR = "avat_plugin_window_probe"
# A flat JPEG decodes within a couple of levels of the painted colour.
JPEG_TOLERANCE = 3.0


def _clock_ctx(clock: VirtualClock) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.clock_key] = clock
        yield

    return ctx


def _speech() -> np.ndarray:
    with wave.open(str(SPEECH)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


def _write_broken_plugin(models_dir: Path) -> Path:
    folder = models_dir / "half-there"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 16)
    write_manifest(folder, "torch.export:weights.bin", ["weights.bin"])
    (folder / "weights.bin").unlink()  # listed, never placed
    return folder


@pytest.fixture
async def plugin_live(make_client: Any, tmp_path: Path) -> Live:
    models_dir = tmp_path / "models"
    write_window_probe(models_dir)
    _write_broken_plugin(models_dir)
    clock = VirtualClock()
    api = await make_client(contexts=[_clock_ctx(clock)], engine__models_dir=str(models_dir))
    # The plug-ins are verified when the engine is built, after the server listens.
    await wait_for(lambda: api.app[keys.engine_key].engine is not None, limit_s=60)
    return Live(api, clock)


async def test_plugins_are_public_avatars_and_a_broken_one_is_skipped(plugin_live: Live) -> None:
    api = plugin_live.api
    listed = await api.json("GET", "/v1/avatars/public")
    ids = json.dumps(listed)
    assert PROBE_AVATAR in ids and "avat_plugin_half_there" not in ids
    avatar = (await api.json("GET", f"/v1/avatars/{PROBE_AVATAR}"))["avatar"]
    assert avatar["name"] == "window-probe" and "plugin" in avatar["tags"]
    preview = await api.get(f"/v1/avatars/{PROBE_AVATAR}/preview", key=None)
    assert preview.status == 200 and preview.content_type == "image/png"
    # The shipped avatars are untouched by a broken plug-in.
    assert "avat_local_ada" in ids


def test_a_broken_plugin_is_logged_with_its_path_and_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agenthuman_local.engine.engine import find_plugins

    folder = _write_broken_plugin(tmp_path)
    write_window_probe(tmp_path)
    with caplog.at_level(logging.ERROR, logger="agenthuman_local.engine.engine"):
        found = find_plugins(tmp_path)
    assert list(found) == [PROBE_AVATAR]
    assert found[PROBE_AVATAR] == (tmp_path / "window-probe", "window-probe")
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert str(folder / "weights.bin") in message and SOURCE_URL in message


@pytest.mark.parametrize("streamed", [False, True], ids=["sent-ahead", "streamed"])
async def test_the_plugin_drives_a_session_with_its_lookahead_window(
    plugin_live: Live, streamed: bool
) -> None:
    """Sent ahead: the whole utterance is queued before the first speech frame. Streamed: the
    client stays only a window ahead (3 frames, then one more a tick), so the runner must hold
    each frame until its look-ahead has arrived instead of rendering 4 frames ahead."""
    live, api = plugin_live, plugin_live.api
    session = await api.create_session({"avatar_id": PROBE_AVATAR})
    sid = session["session_id"]
    await api.start_session(sid)
    conn = await live.connect(
        sid,
        session["access_token"],
        video_width=128,
        video_height=128,
        fps=PROBE_FPS,
        output={"video": "jpeg", "audio": True},
    )
    await live.settle()
    speech = _speech()
    speech[speech == 0] = 1  # every speech sample audible, so the stream shows where it lies
    frame = 16000 // PROBE_FPS
    chunks = (
        [speech[: 3 * frame]]
        + [speech[s : s + frame] for s in range(3 * frame, len(speech), frame)]
        if streamed
        else [speech[s : s + 8000] for s in range(0, len(speech), 8000)]
    )
    sent = 1 if streamed else len(chunks)
    for chunk in chunks[:sent]:
        await conn.speak(chunk.tobytes())
    n_frames = len(speech) // frame + 12
    for i in range(n_frames):
        if sent == len(chunks):
            await conn.ws.send_json({"type": "agent.speak_end"})
            sent += 1
        await conn.barrier()
        await live.tick(1)
        # Each tick's two messages before the next: the socket sink never has to drop one.
        await conn.media_count(2 * (i + 1))
        if sent < len(chunks):
            await conn.speak(chunks[sent].tobytes())
            sent += 1
    await conn.barrier()
    assert [e["interrupted"] for e in conn.of("agent.speak_ended")] == [False]

    response = await api.get(f"/v1/sessions/{sid}/timeline")
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    frames = [x for x in lines if x["t"] == "frame"]
    await conn.media_count(2 * len(frames))
    # Contiguous frames with exactly their own samples, whatever the look-ahead.
    assert [f["frame_index"] for f in frames] == list(range(len(frames)))
    for f in frames:
        assert (f["audio_start"], f["audio_end"]) == frame_sample_range(f["frame_index"], 25)
        assert not f["late"]

    video: dict[int, np.ndarray] = {}
    audio: dict[int, np.ndarray] = {}
    for m in conn.media:
        kind, _, index, payload = protocol.unpack_media(m)
        if kind == protocol.KIND_VIDEO_JPEG:
            video[index] = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        else:
            audio[index] = np.frombuffer(payload, "<i2")
    assert sorted(video) == sorted(audio) == [f["frame_index"] for f in frames]
    stream = np.concatenate([audio[f["frame_index"]] for f in frames])
    first = int(np.flatnonzero(stream)[0])
    assert np.array_equal(stream[first : first + len(speech)], speech)

    # Frame n's pixels: red from its own samples, green from n+1's, blue from n+2's (BGR here).
    last = frames[-1]["frame_index"]
    errors: list[float] = []
    off_by_one: list[float] = []
    speaking = [i for i in sorted(video) if np.any(audio[i]) and i + 3 <= last]
    assert len(speaking) > 200
    for n in speaking:
        b, g, r = (float(c) for c in video[n][64, 64])
        expected = [probe_level(audio[n + k]) for k in range(3)]
        errors.extend(abs(v - e) for v, e in zip((r, g, b), expected, strict=True))
        off_by_one.append(abs(b - probe_level(audio[n + 3])))
    assert max(errors) <= JPEG_TOLERANCE, max(errors)
    # The check can tell a window one frame off: it would miss by more for many frames.
    assert sum(e > JPEG_TOLERANCE for e in off_by_one) > len(speaking) // 4
    # Idle frames render a silent window: black.
    assert int(video[0].max()) <= JPEG_TOLERANCE
