"""Pipecat: `AgentHumanVideoService`, our avatar as a video service (extra `[pipecat]`).

Put it between the TTS and the output transport:

    avatar = AgentHumanVideoService(api_key=KEY, transport=transport)
    pipeline = Pipeline([..., tts, avatar, transport.output(), ...])

It creates and starts a session when the pipeline starts (size and fps from the output
transport's params unless given), then:

- `TTSAudioRawFrame`s become speech on the session socket and are not forwarded; a
  `TTSStoppedFrame` becomes `agent.speak_end` and is held back; an `InterruptionFrame` becomes
  `agent.interrupt` and is forwarded.
- The session's frames come back as RGB `OutputImageRawFrame`s of the session's size (raw
  rgb24 from a server on this machine, JPEG decoded with Pillow from elsewhere:
  `output_video="auto"`). Its audio comes back as `TTSAudioRawFrame`s **only inside an
  utterance** (between our `agent.speak_started` and `agent.speak_ended`), and the held
  `TTSStoppedFrame` follows the utterance's last audio, so the output transport's own
  bot-speaking detection says started once, when the avatar really starts to speak, and
  stopped once, after its last sample.
- At an interrupt of a playing utterance its audio that arrives afterwards is dropped, and so
  are the images the server showed before it stopped (below the interrupted
  `agent.speak_ended`'s pts); the first image after that cut is pushed at once, without the
  jitter buffer: within 2 frames of the `InterruptionFrame` (the server stops at its next
  tick). Pipecat's live video queue, which the `InterruptionFrame` restarts, writes it one
  frame later.
- Nothing is pushed before the output transport says it is ready (`OutputTransportReadyFrame`):
  until then the latest idle image is held, and from the first speech on everything (up to
  ten seconds), and pushed when it is. The server publishes frames at their pts in
  real time, so pushing on arrival keeps the transport's video and audio queues in step.
- Captions follow the avatar, not the TTS: a TTS stamps its word frames (`TTSTextFrame` and
  other frames with a `pts`) for audio that would play as soon as it is made, and the output
  transport releases them at that pts; the avatar plays it later (the server's first-frame
  latency and the jitter buffer). Timed frames of an utterance are held until its first speech
  audio goes out and then pushed with their pts moved by that delay; untimed `TTSTextFrame`s
  (services that push a sentence's text with its audio) go out with the utterance's
  `TTSStoppedFrame`, after its last audio. An interrupt drops the held ones.
- `EndFrame` lets queued speech finish (at most `end_timeout_s`), then ends the session;
  `CancelFrame` ends it at once. A dropped socket resumes within the server's grace. Errors
  become `AgentHumanErrorFrame`s (an `ErrorFrame` with our error `code`), except
  `RATE_LIMITED`, a warning in the log: the server only reads the socket more slowly.

Its parts, in `agenthuman_client`: the frames it makes and the captions it holds,
`pipecat_frames`; when its media goes out (pacing, the backlog, latencies), `pipecat_pacing`;
the speech the server has not finished and the held `TTSStoppedFrame`s, `pipecat_speech`; the
REST client, session and socket it opens and closes, `pipecat_link`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    OutputTransportReadyFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from agenthuman_client.events import (
    InterruptConfirmed,
    ServerError,
    SocketClosed,
    SocketResumed,
    SpeakConfirmed,
    SpeakEnded,
    SpeakStarted,
)
from agenthuman_client.media import (
    AudioFrame,
    InterruptCut,
    UtteranceGate,
    VideoFrame,
    video_format_for,
)
from agenthuman_client.pipecat_frames import (
    PTS_KEY,
    UTTERANCE_KEY,
    AgentHumanErrorFrame,
    CaptionHold,
    image_frame,
    mono_pcm,
    speech_frame,
)
from agenthuman_client.pipecat_link import SessionLink
from agenthuman_client.pipecat_pacing import Backlog, Latencies, Pacer
from agenthuman_client.pipecat_speech import SpeechInFlight
from agenthuman_client.rest import DEFAULT_BASE_URL, Session
from agenthuman_client.socket import SessionSocket

__all__ = ["PTS_KEY", "UTTERANCE_KEY", "AgentHumanErrorFrame", "AgentHumanVideoService"]


class AgentHumanVideoService(AIService):
    """AgentHuman Local's avatar as a Pipecat video service (see the module doc)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        avatar_id: str | None = None,
        transport: Any = None,
        video_width: int | None = None,
        video_height: int | None = None,
        fps: int | None = None,
        sample_rate: int | None = None,
        output_video: str = "auto",
        end_timeout_s: float = 10.0,
        resume_for_s: float = 10.0,
        jitter_ms: float = 20.0,
        audio_delay_frames: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("settings", ServiceSettings(model=None))
        super().__init__(**kwargs)
        params = getattr(transport, "_params", None) if transport is not None else None
        self._link = SessionLink(
            api_key,
            base_url,
            avatar_id=avatar_id,
            output_video=video_format_for(base_url, output_video),
            resume_for_s=resume_for_s,
            on_error=self._error,
            owner=self,
        )
        self._width = video_width or getattr(params, "video_out_width", None)
        self._height = video_height or getattr(params, "video_out_height", None)
        self._fps = fps or getattr(params, "video_out_framerate", None)
        self._sample_rate = sample_rate or getattr(params, "audio_out_sample_rate", None)
        self._end_timeout_s = end_timeout_s
        self._audio_delay_frames = audio_delay_frames
        self._pacer = Pacer(jitter_ms / 1000)
        # After an interrupt: its utterances' audio is not pushed, nor, if one was playing, the
        # images the server showed before it stopped.
        self._cut = InterruptCut()
        self._captions = CaptionHold(lambda: self.get_clock().get_time())  # see the module doc
        self._receive_task: asyncio.Task[None] | None = None
        self._gate = UtteranceGate()
        self._ready = False
        self._backlog = Backlog(self._fps)
        self._speech = SpeechInFlight()
        self._context_id: str | None = None
        self._closing = False
        self._latencies = Latencies()
        # The lists it appends to (see `Latencies`), read by tests and measurements.
        self.first_image_latencies_ms = self._latencies.first_image_ms
        self.interrupt_latencies_ms = self._latencies.interrupt_ms

    # --- public ----------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        return self._link.session

    @property
    def socket(self) -> SessionSocket | None:
        return self._link.sock

    def can_generate_metrics(self) -> bool:
        return True

    # --- lifecycle -------------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        if self._sample_rate is None:
            self._sample_rate = setup.audio_out_sample_rate

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        sock = await self._link.open(
            video_width=self._width,
            video_height=self._height,
            fps=self._fps,
            sample_rate=self._sample_rate or 16000,
        )
        if sock is None:
            return
        self._width, self._height = sock.width, sock.height
        self._receive_task = self.create_task(self._receive(), name="agenthuman-receive")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        if self._link.sock is not None and self._link.sock.closed is None:
            if self._speech.ends_utterance():
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await self._link.sock.speak_end()
            await self._speech.drain(self._end_timeout_s)
        # Captions whose audio never came out.
        while (held := self._captions.pop_any()) is not None:
            await self._out(held)
        await self._teardown()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._teardown()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._teardown()

    async def _teardown(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._link.aclose()

    async def _error(self, code: str, message: str, exc: Exception | None = None) -> None:
        logger.error(f"{self}: {message} ({code})")
        await self.push_error_frame(AgentHumanErrorFrame(error=message, exception=exc, code=code))

    # --- pipeline → server -----------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self._captions.tts_audio()
            await self._speak(frame)
        elif isinstance(frame, TTSStoppedFrame):
            if self._link.sock is not None and self._speech.ends_utterance():
                self._speech.hold_stop(frame)
                await self._link.send(self._link.sock.speak_end())
            else:
                await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, OutputTransportReadyFrame):
            await self.push_frame(frame, direction)
            self._ready = True
            while (held := self._backlog.pop()) is not None:
                await self.push_frame(held)
        elif isinstance(frame, TTSStartedFrame):
            self._context_id = frame.context_id
            self._captions.wait_for_audio()  # a new utterance: its captions wait for its audio
            await self.push_frame(frame, direction)
        elif direction == FrameDirection.DOWNSTREAM and self._is_caption(frame):
            await self._caption(frame)
        elif isinstance(frame, UserStartedSpeakingFrame):
            if self._link.sock is not None:
                await self._link.send(self._link.sock.start_listening())
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if self._link.sock is not None:
                await self._link.send(self._link.sock.stop_listening())
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _is_caption(self, frame: Frame) -> bool:
        if isinstance(frame, SystemFrame) or self._link.sock is None:
            return False
        return frame.pts is not None or isinstance(frame, TTSTextFrame)

    async def _caption(self, frame: Frame) -> None:
        """A timed frame (or a TTS text) of the speech: moved to when the avatar says it."""
        if (now := self._captions.take(frame, self._speech.in_utterance())) is not None:
            await self.push_frame(now)

    async def _release_captions(self) -> None:
        """The utterance's first speech audio went out: its timed frames follow, shifted."""
        if not self._captions.speech_out():
            return
        while (frame := self._captions.pop_timed()) is not None:
            await self._out(frame)

    async def _speak(self, frame: TTSAudioRawFrame) -> None:
        if self._link.sock is None:
            return
        pcm = mono_pcm(frame)
        if self._speech.chunk_sending():
            self._latencies.audio_in()
        # As it comes, however short: the server never pads a frame whose audio is still
        # arriving with silence.
        try:
            sent = await self._link.sock.speak(pcm, frame.sample_rate)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            self._speech.chunk_failed()
            await self._error("SOCKET_CLOSED", f"AgentHuman socket unusable: {exc}", exc)
            return
        self._speech.chunk_sent(sent)

    async def _interrupt(self) -> None:
        playing = self._gate.speaking()
        self._speech.interrupt()
        self._latencies.interrupt()
        self._captions.clear()
        self._gate.clear()
        if self._link.sock is not None and self._link.sock.closed is None:
            # Images the server showed before it stopped, still in the jitter buffer or on the
            # way, are not pushed: the output transport restarts its video queue on this
            # InterruptionFrame, and the next image it gets is the first idle one.
            self._cut.interrupt(playing)
            if playing:
                self._latencies.cut()
                self._pacer.wake()
                self._backlog.drop(OutputImageRawFrame)
            self._backlog.drop(TTSAudioRawFrame)
            await self._link.send(self._link.sock.interrupt())

    # --- server → pipeline -----------------------------------------------------------------

    async def _out(self, frame: Frame) -> None:
        if self._ready:
            await self.push_frame(frame)
            return
        self._backlog.hold(frame)  # the transport would drop it (see `Backlog`)

    async def _receive(self) -> None:
        assert self._link.sock is not None
        async for item in self._link.sock:
            if isinstance(item, VideoFrame):
                await self._on_video(item)
            elif isinstance(item, AudioFrame):
                for audio, utterance_id in self._gate.audio(item):
                    await self._on_speech(audio, utterance_id)
                await self._maybe_stop(item.pts_ms + item.duration_ms)
            elif isinstance(item, SpeakConfirmed):
                self._speech.confirmed(item.utterance_id)
            elif isinstance(item, SpeakStarted):
                self._latencies.speak_started(item.pts_ms)
                for audio, utterance_id in self._gate.event(item):
                    await self._on_speech(audio, utterance_id)
            elif isinstance(item, SpeakEnded):
                self._cut.speak_ended(item)
                self._gate.event(item)
                self._latencies.speak_ended()
                self._speech.ended(item)
            elif isinstance(item, InterruptConfirmed):
                self._cut.confirmed()
            elif isinstance(item, ServerError) and item.code == "RATE_LIMITED":
                # The server reads this socket more slowly and drops nothing (SPEC §8): a TTS
                # faster than real time in 10 ms chunks gets here in normal use, no error.
                logger.warning(f"{self}: the server is pacing this socket: {item.error}")
            elif isinstance(item, ServerError):
                await self._error(item.code, f"AgentHuman: {item.error}")
            elif isinstance(item, SocketResumed):
                logger.info(f"{self}: session socket resumed after {item.attempts} attempt(s)")
            elif isinstance(item, SocketClosed):
                if not self._closing:
                    await self._error(
                        "SOCKET_CLOSED", f"AgentHuman session socket closed ({item.code})"
                    )
                self._speech.changed()
                return
            self._speech.changed()

    async def _on_video(self, frame: VideoFrame) -> None:
        if self._cut.shown_before_cut(frame.pts_ms):
            return  # shown by the server before it stopped: never pushed, never waited on
        first_after_cut = self._cut.ends_cut(frame.pts_ms)
        image = await image_frame(frame)
        if not await self._pacer.pace(frame.pts_ms, now_ok=first_after_cut):
            return
        if self._cut.shown_before_cut(frame.pts_ms):
            return  # an interrupt came while it waited
        await self._out(image)
        self._latencies.image_out(frame.pts_ms, first_after_cut)
        await self._maybe_stop(frame.pts_ms)

    async def _on_speech(self, audio: AudioFrame, utterance_id: str) -> None:
        if self._cut.drops_speech(utterance_id):
            return
        out = speech_frame(audio, utterance_id, self._context_id)
        # The live video queue draws an image up to a frame after it is queued, at a phase of
        # its own clock (seen: 0 to 40 ms); the audio device plays at once. Waiting half a frame
        # keeps each chunk within ~20 ms of its image whatever that phase is.
        if not await self._pacer.pace(audio.pts_ms, self._audio_delay_frames / (self._fps or 25)):
            return
        if self._cut.drops_speech(utterance_id):
            return  # interrupted while it waited
        await self._out(out)
        await self._release_captions()

    async def _maybe_stop(self, media_end_ms: float) -> None:
        """Push the held TTSStoppedFrame once the utterance's last audio has gone out."""
        while (stop := self._speech.stop_due(media_end_ms)) is not None:
            while (text := self._captions.pop_text()) is not None:
                await self._out(text)
            await self._out(stop)
            self._captions.wait_for_audio()  # the utterance is over
            self._speech.changed()
