"""Recorder: what is written decodes back with PyAV, in sync, and survives a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from agenthuman_local.engine.base import frame_sample_range
from agenthuman_local.paths import recording_path
from agenthuman_local.transports.recording import Recorder, RecorderSink, i420_frame
from tests.fakes_daily import SinkFrame

W, H, FPS, SR = 160, 120, 25, 16_000
AAC_FRAME = 1024  # samples per AAC frame; the encoder also primes with one
ROOT = Path(__file__).resolve().parent.parent


def frame_audio(n: int, click_frame: int | None = None) -> bytes:
    start, end = frame_sample_range(n, FPS, SR)
    t = np.arange(start, end)
    pcm = (np.sin(2 * np.pi * 220 * t / SR) * 3000).astype(np.int16)
    if n == click_frame:
        pcm[:80] = 30000
    return pcm.tobytes()


def frame_image(n: int, white_frame: int | None = None) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : (n * 3) % W] = 60  # some motion for the encoder
    if n == white_frame:
        img[:] = 255
    return img


def decode(path: Path) -> tuple[list[tuple[float, float]], np.ndarray, float]:
    """→ [(time_s, mean luma)] per video frame, all audio samples, first audio time."""
    with av.open(str(path)) as c:
        video = [
            (float(f.time), float(f.to_ndarray(format="gray").mean())) for f in c.decode(video=0)
        ]
    chunks, first_audio = [], None
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            first_audio = float(f.time) if first_audio is None else first_audio
            chunks.append(f.to_ndarray()[0])  # float samples in [-1, 1]
    return video, np.concatenate(chunks), first_audio or 0.0


def test_recording_path_is_under_data_dir() -> None:
    assert recording_path(Path("d"), "sess_1") == Path("d/recordings/sess_1/recording.mp4")


async def test_frames_duration_audio_and_sync_survive_the_round_trip(tmp_path: Path) -> None:
    n_frames, marker = 60, 30
    rec = Recorder(tmp_path / "r.mp4", W, H, FPS, SR)
    written_samples = 0
    for n in range(n_frames):
        pcm = frame_audio(n, click_frame=marker)
        written_samples += len(pcm) // 2
        assert rec.submit(n, frame_image(n, white_frame=marker), pcm)
        if n % 10 == 9:
            await asyncio.sleep(0.05)  # let the worker keep up: this is about content, not drops
    await rec.aclose()
    assert rec.error is None and rec.frames_dropped == 0 and rec.frames_written == n_frames

    video, audio, first_audio = decode(tmp_path / "r.mp4")
    assert len(video) == n_frames
    span_s = video[-1][0] - video[1][0]
    assert abs(span_s - (n_frames - 2) / FPS) < 1 / FPS
    # Decoded audio = what we wrote + the encoder's priming, padded to whole AAC frames.
    assert written_samples + AAC_FRAME <= audio.size < written_samples + 2 * AAC_FRAME
    # Lip sync: the click and the white frame were the same frame's; they still are.
    white_s = next(t for t, luma in video if luma > 200)
    click_s = first_audio + int(np.argmax(np.abs(audio) > 0.6)) / SR
    assert abs(click_s - white_s) < 1 / FPS


COLOURS = np.array(
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (243, 201, 168),
     (128, 64, 200), (20, 200, 180)],
    np.uint8,
)  # fmt: skip
BLOCK = 40  # W × H holds 4 × 3 blocks, whole macroblocks apart from the last row


def colour_blocks(n: int) -> np.ndarray:
    """Flat blocks of known colours, shuffled by frame so every frame differs."""
    ids = (np.arange(12) * 5 + n) % len(COLOURS)
    return np.kron(COLOURS[ids].reshape(3, 4, 3), np.ones((BLOCK, BLOCK, 1), np.uint8))


def bt601_limited(rgb: np.ndarray) -> np.ndarray:
    """The textbook BT.601 limited-range Y, Cb, Cr of 8-bit RGB."""
    r, g, b = (rgb.astype(np.float64) / 255.0).T
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([16 + 219 * y, 128 + 224 * (b - y) / 1.772, 128 + 224 * (r - y) / 1.402], -1)


async def test_colours_survive_as_tagged_bt601_limited_range(tmp_path: Path) -> None:
    n_frames = 30
    rec = Recorder(tmp_path / "c.mp4", W, H, FPS, SR, queue_frames=n_frames)
    sent = [colour_blocks(n) for n in range(n_frames)]
    for n, img in enumerate(sent):
        assert rec.submit(n, img, frame_audio(n))
    await rec.aclose()
    assert rec.error is None and rec.frames_written == n_frames

    with av.open(str(tmp_path / "c.mp4")) as c:
        cc = c.streams.video[0].codec_context
        assert cc.color_range == av.video.reformatter.ColorRange.MPEG
        assert cc.colorspace == av.video.reformatter.Colorspace.ITU601
        assert cc.color_primaries == av.video.reformatter.ColorPrimaries.SMPTE170M
        assert cc.color_trc == av.video.reformatter.ColorTrc.SMPTE170M
        frames = list(c.decode(video=0))
    assert len(frames) == n_frames
    for n, (frame, img) in enumerate(zip(frames, sent, strict=True)):
        assert frame.format.name == "yuv420p" and frame.color_range == 1  # MPEG
        got = frame.to_ndarray(format="rgb24")  # converted as the tags say, like a player
        planes = frame.to_ndarray()  # I420: Y rows, then the U and V quarter planes
        y = planes[:H]
        u = planes[H : H + H // 4].reshape(H // 2, W // 2)
        v = planes[H + H // 4 :].reshape(H // 2, W // 2)
        for by in range(0, H, BLOCK):
            for bx in range(0, W, BLOCK):
                want = img[by, bx]
                y0, x0 = by + 8, bx + 8  # block centres: clear of chroma and DCT edges
                y1, x1 = y0 + BLOCK - 16, x0 + BLOCK - 16
                mean = got[y0:y1, x0:x1].reshape(-1, 3).mean(0)  # x264 noise averages out
                assert np.abs(mean - want).max() <= 3, (n, by, bx)
                chroma = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
                ycc = bt601_limited(want)
                assert abs(float(y[y0:y1, x0:x1].mean()) - ycc[0]) <= 2
                assert abs(float(u[chroma].mean()) - ycc[1]) <= 2
                assert abs(float(v[chroma].mean()) - ycc[2]) <= 2


async def test_a_gap_in_frame_indices_stays_a_gap_in_time(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "gap.mp4", W, H, FPS, SR)
    for n in [*range(10), *range(20, 30)]:
        rec.submit(100 + n, frame_image(n), frame_audio(n))  # indices need not start at 0
    rec.submit(105, frame_image(5), frame_audio(5))  # a repeat is ignored
    await rec.aclose()
    video, audio, _ = decode(tmp_path / "gap.mp4")
    assert len(video) == 20
    assert abs(video[-1][0] - video[10][0] - 9 / FPS) < 1 / FPS
    assert abs(video[10][0] - video[9][0] - 11 / FPS) < 1 / FPS
    # The ten missing frames' audio is silence, so the audio still spans all 30 frames.
    assert 30 * SR // FPS + AAC_FRAME <= audio.size < 30 * SR // FPS + 2 * AAC_FRAME


async def test_submit_never_blocks_and_every_frame_is_written(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "burst.mp4", 640, 480, FPS, SR, queue_frames=3)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(4)]
    for n in range(100):
        assert rec.submit(n, images[n % 4], frame_audio(n))
    await rec.aclose()
    # Behind, the recorder repeats pictures (tests/test_overload.py); it never drops a frame.
    assert rec.frames_written == 100 and rec.frames_dropped == 0
    video, _, _ = decode(tmp_path / "burst.mp4")
    assert len(video) == 100


async def test_close_is_idempotent_and_later_frames_are_refused(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "x.mp4", W, H, FPS, SR)
    rec.submit(0, frame_image(0), frame_audio(0))
    await rec.aclose()
    await rec.aclose()
    rec.close()
    assert rec.submit(1, frame_image(1), frame_audio(1)) is False
    assert rec.frames_written == 1


def test_bad_input_is_refused_at_the_door(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        Recorder(tmp_path / "odd.mp4", 161, 120, FPS, SR)
    rec = Recorder(tmp_path / "y.mp4", W, H, FPS, SR)
    with pytest.raises(ValueError, match="expected"):
        rec.submit(0, np.zeros((H, W, 4), np.uint8), b"")
    with pytest.raises(ValueError, match="even byte count"):
        rec.submit(0, frame_image(0), b"\x00")
    rec.close()


def test_an_unwritable_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "taken.mp4").mkdir()
    rec = Recorder(tmp_path / "taken.mp4", W, H, FPS, SR)
    rec.close()
    assert rec.error is not None
    assert rec.submit(0, frame_image(0), frame_audio(0)) is False


async def test_as_a_sink_every_published_frame_is_recorded(tmp_path: Path) -> None:
    sink = RecorderSink(Recorder(recording_path(tmp_path, "sess_1"), W, H, FPS, SR))
    for n in range(20):
        pcm = np.frombuffer(frame_audio(n), "<i2")
        await sink.publish(SinkFrame("sess_1", n, n * 40, frame_image(n), pcm, SR))
        await asyncio.sleep(0.005)
    await sink.aclose()
    await sink.aclose()
    video, _, _ = decode(tmp_path / "recordings" / "sess_1" / "recording.mp4")
    assert len(video) + sink.dropped == 20


KILLED_WRITER = """
import sys, time
import numpy as np
from pathlib import Path
from agenthuman_local.transports.recording import Recorder
from agenthuman_local.engine.base import frame_sample_range
W, H, FPS, SR = 320, 240, 25, 16000
rec = Recorder(Path(sys.argv[1]), W, H, FPS, SR)
rng = np.random.default_rng(1)
for n in range(100000):
    img = np.full((H, W, 3), n % 250, np.uint8)
    img[::7] = rng.integers(0, 255, (len(img[::7]), W, 3), np.uint8)
    s0, s1 = frame_sample_range(n, FPS, SR)
    rec.submit(n, img, (np.sin(np.arange(s0, s1) / 9) * 4000).astype(np.int16).tobytes())
    print(rec.frames_written, flush=True)
    time.sleep(1 / FPS / 2)
"""


def test_a_killed_writer_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if int(line) >= 3 * 25:  # three seconds encoded: a few fragments on disk
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    frames = samples = 0
    with av.open(str(path)) as c:
        try:
            for packet in c.demux():
                for f in packet.decode():
                    if isinstance(f, av.VideoFrame):
                        frames += 1
                    else:
                        samples += f.samples
        except av.error.InvalidDataError:
            pass  # the fragment being written at the kill is cut short
    assert frames >= 25  # at least one whole second, as SPEC §10 promises
    assert samples >= SR


@pytest.mark.parametrize("size", [(1280, 720), (962, 720), (130, 128)])  # rows padded or not
def test_an_i420_picture_reaches_the_encoder_unchanged(size: tuple[int, int]) -> None:
    width, height = size
    i420 = np.random.default_rng(1).integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
    frame = i420_frame(i420, width, height)
    assert (frame.width, frame.height, frame.format.name) == (width, height, "yuv420p")
    assert np.array_equal(frame.to_ndarray(), i420)
