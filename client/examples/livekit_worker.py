"""A LiveKit Agents worker with our avatar, published by the agent itself (copy and adapt).

    pip install "agenthuman-client[livekit]" "livekit-agents[openai,silero]"
    AGENTHUMAN_KEY=ah_live_... LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... \
        OPENAI_API_KEY=... python livekit_worker.py dev

AgentHuman Local (`python run.py`) renders the face on this machine; the agent's own
participant publishes the video and the synced speech into the room, so no avatar participant
joins and our server needs no LiveKit credentials.
"""

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from livekit.plugins import openai, silero

from agenthuman_client.livekit import AvatarSession

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession(
        vad=silero.VAD.load(),
        stt=openai.STT(),
        llm=openai.LLM(),
        tts=openai.TTS(),
    )
    avatar = AvatarSession(
        api_key=os.environ["AGENTHUMAN_KEY"],
        base_url=os.environ.get("AGENTHUMAN_URL", "http://127.0.0.1:8080/v1"),
        video_width=960,
        video_height=720,
    )
    await avatar.start(session, room=ctx.room)
    await session.start(agent=Agent(instructions="You are a friendly assistant."), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
