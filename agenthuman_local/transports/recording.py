"""A session's recording: fragmented MP4 (H.264 + AAC) written on a worker thread (SPEC §10).

The caller hands over each published frame with its exact audio; `submit` never blocks: frames
wait in a bounded queue. The recorder never drops a frame: when the encoder falls behind (the
queue holds `queue_frames` pictures), a new frame is queued without its picture and recorded as
a repeat of the previous one, with its own audio, so the file's frame count and timing stay
exact (counted in `frames_repeated`); a repeat costs no colour conversion. Only if the encoder
falls more than 4 s behind (stalled, or starved of CPU) are the oldest dropped and counted.
The worker thread owns the PyAV container and runs demoted (`transports.base.demote_thread`):
under CPU contention rendering comes first and the recording repeats pictures instead. The MP4 is
fragmented (`empty_moov`, a fragment per keyframe, a keyframe every second, packets flushed to
the OS as they are muxed), so a process killed at any moment leaves a file that plays up to its
last whole second.

Timing: video timestamps are the frame's first audio sample (SPEC §9: frame n shows samples
[floor(n·sr/fps), floor((n+1)·sr/fps))), in a 1/sample_rate time base, so video and audio share
one exact clock. A gap in the frame indices leaves a gap in the video and silence in the audio,
keeping what follows in sync.

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
from agenthuman_local.transports.base import (
    DROPPED,
    REPEATED,
    LossListener,
    MediaFrame,
    demote_thread,
)

log = logging.getLogger(__name__)

_MUXER_OPTIONS = {
    # A moof per keyframe plus flush_packets: what is written survives a SIGKILL.
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "flush_packets": "1",
}
# Frames (pictures or not) the queue may hold before the oldest are dropped: an encoder this far
# behind has stalled or is starved of CPU. A repeat still costs x264 most of a frame (~6.5 ms
# against ~10 at 1280x720), so a longer backlog would not catch up, and `close` would spend
# minutes encoding it after the session ended.
_MAX_QUEUED_S = 4


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
        qp: int = 18,
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
        self.frames_repeated = 0  # recorded with the previous picture: the encoder was behind
        self.frames_dropped = 0  # only when the encoder is more than _MAX_QUEUED_S behind
        self.error: BaseException | None = None
        self._qp = qp
        self._audio_bitrate_bps = audio_bitrate_bps
        # Pictures queued: one second by default, enough to ride out a hiccup, bounded in
        # memory; past it frames queue without theirs (None: repeat the previous picture).
        self._max_images = max(1, queue_frames or fps)
        self._images = 0
        self._last_rgb: np.ndarray | None = None
        self._queue: collections.deque[tuple[int, np.ndarray | None, bytes]] = collections.deque()
        self._max_queued = max(self._max_images, _MAX_QUEUED_S * fps)
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
        """Queue a frame and its PCM s16le mono; never blocks. False once closed or failed.

        The same picture object as the previous frame's (the session repeating an image) is
        not converted again; with `queue_frames` pictures queued the frame is recorded as a
        repeat of the previous picture (`frames_repeated`)."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"frame is {rgb.shape} {rgb.dtype}, expected ({self.height}, {self.width}, 3) uint8"
            )
        if len(pcm) % 2:
            raise ValueError(f"PCM s16le needs an even byte count, got {len(pcm)}")
        with self._cond:
            if self._closing or self.error is not None:
                return False
            if len(self._queue) >= self._max_queued:
                _, dropped_rgb, _ = self._queue.popleft()
                self._images -= dropped_rgb is not None
                self.frames_dropped += 1
            picture: np.ndarray | None = rgb
            if rgb is self._last_rgb:
                picture = None  # the session's own repeat: the same picture, not converted again
            elif self._images >= self._max_images:
                picture = None  # behind: the previous picture again, with this frame's audio
                self.frames_repeated += 1
            self._last_rgb = rgb
            self._images += picture is not None
            self._queue.append((frame_index, picture, pcm))
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

    def _next(self) -> tuple[int, np.ndarray | None, bytes] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            item = self._queue.popleft()
            self._images -= item[1] is not None
            return item

    def _run(self) -> None:
        demote_thread()
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
                # A constant quantiser, not CRF: x264's rate control estimates each frame's
                # cost first, about a third of its time at 1280x720 (4.1-4.8 -> 2.0-3.0 ms a
                # frame). On talking heads qp 18 is as good as crf 23 (PSNR-Y 54 / 49 dB
                # procedural / photo, worst frame better) in fewer bytes (2.5 / 9 KB a frame).
                "qp": str(self._qp),
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
        vframe: av.VideoFrame | None = None  # the previous picture, for repeats
        while (item := self._next()) is not None:
            frame_index, rgb, pcm = item
            if first_index is None:
                first_index = last_index = frame_index - 1
            if frame_index <= last_index:
                continue  # repeated or out of order: its time has been written already
            last_index = frame_index
            start, _ = frame_sample_range(frame_index - first_index - 1, self.fps, sr)
            if rgb is not None or vframe is None:
                if rgb is None:  # pragma: no cover - the first frame always has its picture
                    rgb = np.zeros((self.height, self.width, 3), np.uint8)
                vframe = i420_frame(_yuv420p(rgb), self.width, self.height)
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
    output = "recording"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._losses: LossListener | None = None

    @property
    def dropped(self) -> int:
        return self.recorder.frames_dropped

    def report_losses_to(self, listener: LossListener) -> None:
        self._losses = listener

    async def publish(self, frame: MediaFrame) -> None:
        rec = self.recorder
        repeated, dropped = rec.frames_repeated, rec.frames_dropped
        rec.submit(frame.frame_index, frame.rgb, frame.pcm)
        if self._losses is not None:
            if rec.frames_repeated > repeated:
                self._losses(self.output, REPEATED, frame.frame_index, frame.pts_ms)
            if rec.frames_dropped > dropped:  # an older frame, more than 4 s behind: no index
                self._losses(self.output, DROPPED, -1, frame.pts_ms)

    async def aclose(self) -> None:
        await self.recorder.aclose()


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] → I420 [H·3/2, W], BT.601 limited range.

    OpenCV's conversion costs about a third of swscale's rgb24 → yuv420p inside `encode`
    (research/profile-2026-12.md); chroma is averaged over each 2×2 block.
    """
    import cv2  # on the recorder's thread: importing the app loads no cv2 (tests/test_imports.py)

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def i420_frame(i420: np.ndarray, width: int, height: int) -> av.VideoFrame:
    """I420 [H·3/2, W] → a yuv420p frame. Copied plane by plane when the frame's rows have no
    padding (5× cheaper than `from_ndarray`, which also holds the GIL while it copies)."""
    frame = av.VideoFrame(width, height, "yuv420p")
    n = width * height
    flat = i420.reshape(-1)
    parts = (flat[:n], flat[n : n + n // 4], flat[n + n // 4 :])
    if any(p.buffer_size != len(part) for p, part in zip(frame.planes, parts, strict=True)):
        return av.VideoFrame.from_ndarray(i420, format="yuv420p")  # padded rows
    for plane, part in zip(frame.planes, parts, strict=True):
        plane.update(part)  # type: ignore[arg-type]  # any buffer; the stub says bytes
    return frame


def tag_bt601_limited(target: av.VideoFrame | av.video.codeccontext.VideoCodecContext) -> None:
    """Tag a frame or an encoder as BT.601 (SMPTE 170M), limited (MPEG) range."""
    target.color_range = ColorRange.MPEG
    target.colorspace = Colorspace.ITU601  # "bt470bg": the BT.601 matrix, as SMPTE 170M's
    target.color_primaries = ColorPrimaries.SMPTE170M
    target.color_trc = ColorTrc.SMPTE170M
