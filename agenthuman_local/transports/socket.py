"""The session socket as an output: `output` of session.init, frames and audio back (SPEC §8)."""

from __future__ import annotations

from collections.abc import Callable

from agenthuman_local import protocol
from agenthuman_local.audio import SAMPLE_RATE_HZ, StreamResampler, float_to_pcm16
from agenthuman_local.transports.base import PublishedFrame, QueuedSink
from agenthuman_local.transports.jpeg import encode_jpeg_async


class SocketMediaSink(QueuedSink):
    """`output` of session.init: frames (JPEG or raw RGB24) and audio back over the socket
    (SPEC §8).

    A client that reads slowly loses its own oldest frames; JPEG encoding runs on a demoted
    worker thread, never on the loop, and when it falls behind the newest frame wins: the
    pictures of the frames it skips are shed, their audio still sent, in order. Audio goes out
    at the session's `sample_rate`, resampled from 16 kHz with exact cumulative counts.
    """

    def __init__(
        self,
        session_id: str,
        send_media: Callable[[bytes], None],
        *,
        video_jpeg: bool,
        audio: bool,
        sample_rate_hz: int,
        video_rgb24: bool = False,
        jpeg_quality: int = 85,
        max_frames: int = 8,
    ) -> None:
        # Only JPEG costs enough to shed; raw RGB24 is one copy per frame.
        super().__init__(f"{session_id}:socket", max_frames, shed=video_jpeg, output="socket")
        self._send = send_media
        self._video = video_jpeg
        self._rgb24 = video_rgb24
        self._audio = audio
        self._quality = jpeg_quality
        self._resampler = (
            StreamResampler(SAMPLE_RATE_HZ, sample_rate_hz)
            if sample_rate_hz != SAMPLE_RATE_HZ
            else None
        )

    async def _write(self, frame: PublishedFrame) -> None:
        if self._video:
            jpeg = await encode_jpeg_async(frame.rgb, self._quality)
            self._send(
                protocol.pack_media(protocol.KIND_VIDEO_JPEG, frame.pts_ms, frame.frame_index, jpeg)
            )
        elif self._rgb24:
            raw = frame.rgb.tobytes()  # (height, width, 3) uint8, C order
            self._send(
                protocol.pack_media(protocol.KIND_VIDEO_RGB24, frame.pts_ms, frame.frame_index, raw)
            )
        self._send_audio(frame)

    def _shed(self, frame: PublishedFrame) -> None:
        self._send_audio(frame)

    def _send_audio(self, frame: PublishedFrame) -> None:
        if self._audio:
            pcm = frame.pcm
            if self._resampler is not None:
                pcm = float_to_pcm16(self._resampler.process(frame.samples / 32768.0))
            self._send(
                protocol.pack_media(protocol.KIND_AUDIO_PCM, frame.pts_ms, frame.frame_index, pcm)
            )
