"""A Pipecat bot whose voice comes with our avatar's face (copy and adapt).

    pip install "agenthuman-client[pipecat]" "pipecat-ai[webrtc,runner,cartesia]"
    AGENTHUMAN_KEY=ah_live_... CARTESIA_API_KEY=... python pipecat_bot.py

Open the URL the runner prints (Pipecat's prebuilt page over SmallWebRTC, or pass
`--transport daily`). The avatar's frames and speech go out through the bot's own transport;
AgentHuman Local (`python run.py`) renders them and never joins the room.
"""

import os

from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from agenthuman_client.pipecat import AgentHumanVideoService


def params() -> TransportParams:
    return TransportParams(
        audio_out_enabled=True,
        video_out_enabled=True,
        video_out_is_live=True,
        video_out_width=960,
        video_out_height=720,
        video_out_framerate=25,
    )


async def bot(runner_args: RunnerArguments) -> None:
    transport = await create_transport(runner_args, {"webrtc": params, "daily": params})
    tts = CartesiaTTSService(api_key=os.environ["CARTESIA_API_KEY"])
    avatar = AgentHumanVideoService(
        api_key=os.environ["AGENTHUMAN_KEY"],
        base_url=os.environ.get("AGENTHUMAN_URL", "http://127.0.0.1:8080/v1"),
        transport=transport,  # size and fps from its params
    )
    # In a real bot: transport.input(), STT, the LLM and its context aggregators before the TTS.
    worker = PipelineWorker(Pipeline([tts, avatar, transport.output()]), params=PipelineParams())

    @transport.event_handler("on_client_connected")
    async def greet(transport, client):
        await worker.queue_frame(TTSSpeakFrame("Hello! I am your local avatar."))

    await WorkerRunner(handle_sigint=runner_args.handle_sigint).run(worker)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
