"""A session's recording: fragmented MP4 (H.264 + AAC) written on a worker thread (SPEC §10).

The caller hands over each published frame with its exact audio; `submit` never blocks: frames
wait in a bounded queue and, when the encoder falls behind, the oldest are dropped and counted.
The worker thread owns the PyAV container. The MP4 is fragmented (`empty_moov`, a fragment per
keyframe, a keyframe every second, packets flushed to the OS as they are muxed), so a process
killed at any moment leaves a file that plays up to its last whole second.

Timing: video timestamps are the frame's first audio sample (SPEC §9: frame n shows samples
[floor(n·sr/fps), floor((n+1)·sr/fps))), in a 1/sample_rate time base, so video and audio share
one exact clock. A dropped frame leaves a gap in the video and silence in the audio, keeping
what follows in sync.

As a session Sink: `RecorderSink(Recorder(recording_path(data_dir, session_id), 960, 720, 25,
16000))`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from agenthuman_local.audio import frame_sample_range
from agenthuman_local.transports.base import MediaFrame

log = logging.getLogger(__name__)

_MUXER_OPTIONS = {
    # A moof per keyframe plus flush_packets: what is written survives a SIGKILL.
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "flush_packets": "1",
}


class Recorder:
    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: int,
        sample_rate_hz: int,
        *,
        queue_frames: int | None = None,
        crf: int = 23,
        audio_bitrate_bps: int = 64_000,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 in yuv420p needs even sizes, got {width}x{height}")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = fps
        self.sample_rate_hz = sample_rate_hz
        self.frames_written = 0
        self.frames_dropped = 0
        self.error: BaseException | None = None
        self._crf = crf
        self._audio_bitrate_bps = audio_bitrate_bps
        # One second of frames by default: enough to ride out a hiccup, bounded in memory.
        self._queue: collections.deque[tuple[int, np.ndarray, bytes]] = collections.deque(
            maxlen=queue_frames or fps
        )
        self._cond = threading.Condition()
        self._closing = False
        self._close_lock = threading.Lock()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._run, name=f"recorder:{self.path.name}", daemon=True
        )
        self._thread.start()

    def submit(self, frame_index: int, rgb: np.ndarray, pcm: bytes) -> bool:
        """Queue a frame and its PCM s16le mono; never blocks. False once closed or failed."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"frame is {rgb.shape} {rgb.dtype}, expected ({self.height}, {self.width}, 3) uint8"
            )
        if len(pcm) % 2:
            raise ValueError(f"PCM s16le needs an even byte count, got {len(pcm)}")
        with self._cond:
            if self._closing or self.error is not None:
                return False
            if len(self._queue) == self._queue.maxlen:
                self.frames_dropped += 1
            self._queue.append((frame_index, rgb, pcm))
            self._cond.notify()
        return True

    def close(self) -> None:
        """Encode what is queued, finalise the file, stop the thread. Idempotent; blocks."""
        with self._close_lock:
            if self._closed:
                return
            with self._cond:
                self._closing = True
                self._cond.notify()
            self._thread.join()
            self._closed = True

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _next(self) -> tuple[int, np.ndarray, bytes] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _run(self) -> None:
        try:
            container = av.open(str(self.path), "w", format="mp4", options=_MUXER_OPTIONS)
        except Exception as exc:
            self._fail(exc)
            return
        try:
            self._encode_all(container)
        except Exception as exc:
            self._fail(exc)
        finally:
            try:
                container.close()
            except Exception as exc:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        log.error("recording %s failed: %s", self.path, exc)
        with self._cond:
            if self.error is None:
                self.error = exc
            self._queue.clear()

    def _encode_all(self, container: av.container.OutputContainer) -> None:
        sr = self.sample_rate_hz
        video = container.add_stream(
            "libx264",
            rate=self.fps,
            options={
                "preset": "ultrafast",
                "tune": "zerolatency",
                "crf": str(self._crf),
                "g": str(self.fps),  # a keyframe, hence a fragment, every second
                "keyint_min": str(self.fps),
            },
        )
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.codec_context.time_base = Fraction(1, sr)
        # Frames arrive as BT.601 limited-range I420 (`_yuv420p`); say so in the stream, so
        # players do not guess (and 720p players guess BT.709).
        tag_bt601_limited(video.codec_context)
        # One encoder thread: the renderer owns the cores.
        video.codec_context.thread_count = 1
        audio = container.add_stream("aac", rate=sr)
        audio.layout = "mono"
        audio.bit_rate = self._audio_bitrate_bps
        # Writes the header now: the file exists and a bad path fails before any frame.
        container.start_encoding()
        first_index: int | None = None
        last_index = -1
        samples_out = 0
        while (item := self._next()) is not None:
            frame_index, rgb, pcm = item
            if first_index is None:
                first_index = last_index = frame_index - 1
            if frame_index <= last_index:
                continue  # repeated or out of order: its time has been written already
            last_index = frame_index
            start, _ = frame_sample_range(frame_index - first_index - 1, self.fps, sr)
            vframe = av.VideoFrame.from_ndarray(_yuv420p(rgb), format="yuv420p")
            tag_bt601_limited(vframe)
            vframe.pts = start
            vframe.time_base = Fraction(1, sr)
            for packet in video.encode(vframe):
                container.mux(packet)
            gap = max(0, start - samples_out)
            samples = np.frombuffer(pcm, dtype="<i2")
            if gap:
                samples = np.concatenate([np.zeros(gap, np.int16), samples])
            if samples.size:
                aframe = av.AudioFrame.from_ndarray(
                    samples.reshape(1, -1), format="s16", layout="mono"
                )
                aframe.sample_rate = sr
                aframe.pts = samples_out
                for packet in audio.encode(aframe):
                    container.mux(packet)
                samples_out += samples.size
            self.frames_written += 1
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


class RecorderSink:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @property
    def dropped(self) -> int:
        return self.recorder.frames_dropped

    async def publish(self, frame: MediaFrame) -> None:
        self.recorder.submit(frame.frame_index, frame.rgb, frame.pcm)

    async def aclose(self) -> None:
        await self.recorder.aclose()


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] → I420 [H·3/2, W], BT.601 limited range.

    OpenCV's conversion costs about a third of swscale's rgb24 → yuv420p inside `encode`
    (research/profile-2026-12.md); chroma is averaged over each 2×2 block.
    """
    import cv2  # on the recorder's thread: importing the app loads no cv2 (tests/test_imports.py)

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def tag_bt601_limited(target: av.VideoFrame | av.video.codeccontext.VideoCodecContext) -> None:
    """Tag a frame or an encoder as BT.601 (SMPTE 170M), limited (MPEG) range."""
    target.color_range = ColorRange.MPEG
    target.colorspace = Colorspace.ITU601  # "bt470bg": the BT.601 matrix, as SMPTE 170M's
    target.color_primaries = ColorPrimaries.SMPTE170M
    target.color_trc = ColorTrc.SMPTE170M
