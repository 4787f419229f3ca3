"""`AgentHumanVideoService`'s link to the server: the REST client, the session it creates and
starts, and that session's socket, opened when the pipeline starts and closed once at its end.

A failure to open it or to send a command on it is reported through `on_error` with our error
code (what the service's `AgentHumanErrorFrame` carries): the server's own code, or
`SERVER_UNREACHABLE` / `SOCKET_CLOSED` for the client's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from loguru import logger

from agenthuman_client.rest import AgentHuman, ApiError, Session
from agenthuman_client.socket import SessionSocket, SocketRefused

# (code, message, the exception if any)
ErrorReport = Callable[[str, str, Exception | None], Awaitable[None]]


class SessionLink:
    """The REST client, the session and its socket; `aclose` ends the session."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        avatar_id: str | None,
        output_video: str,
        resume_for_s: float,
        on_error: ErrorReport,
        owner: object,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._avatar_id = avatar_id
        self._output_video = output_video
        self._resume_for_s = resume_for_s
        self._on_error = on_error
        self._owner = owner  # named in the log
        self._api: AgentHuman | None = None
        self.session: Session | None = None
        self.sock: SessionSocket | None = None

    async def open(
        self,
        *,
        video_width: int | None,
        video_height: int | None,
        fps: int | None,
        sample_rate: int,
    ) -> SessionSocket | None:
        """Create and start a session and connect its socket; None (reported) on a failure.
        A session created before the failure is still ended by `aclose`."""
        self._api = AgentHuman(self._api_key, self._base_url)
        try:
            self.session = await self._api.create_started(self._avatar_id)
            self.sock = await SessionSocket.connect(
                self.session,
                http=self._api.http,
                video_width=video_width,
                video_height=video_height,
                fps=fps,
                sample_rate=sample_rate,
                output_video=self._output_video,
                output_audio=True,
                resume_for_s=self._resume_for_s,
            )
        except ApiError as exc:
            await self._on_error(exc.code, f"AgentHuman: {exc.message}", exc)
            return None
        except SocketRefused as exc:
            await self._on_error(exc.code, f"AgentHuman socket refused: {exc.message}", exc)
            return None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._on_error("SERVER_UNREACHABLE", f"AgentHuman server unreachable: {exc}", exc)
            return None
        return self.sock

    async def send(self, command: Awaitable[Any]) -> bool:
        """Await a socket command; False (reported) when the socket is unusable."""
        try:
            await command
            return True
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            await self._on_error("SOCKET_CLOSED", f"AgentHuman socket unusable: {exc}", exc)
            return False

    async def aclose(self) -> None:
        """Close the socket, end the session (a failure is only logged), close the client.
        Idempotent."""
        if self.sock is not None:
            await self.sock.aclose()
        api, self._api = self._api, None
        if api is None:
            return
        if self.session is not None:
            try:
                await api.end_session(self.session.session_id)
            except (ApiError, aiohttp.ClientError, OSError) as exc:
                logger.warning(f"{self._owner}: ending session failed: {exc}")
        await api.aclose()
