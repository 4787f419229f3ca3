"""The HTTP edge before a request reaches the app (issue 12): connection timeouts, and our JSON
error shape for requests aiohttp's parser refuses.

- Idle and half-sent connections: aiohttp (3.14) arms its keep-alive timer when a connection
  opens and again after each response, and closes the connection when it fires while no
  complete request has arrived, so `keepalive_timeout` (from `http.idle_timeout_s`, passed as
  the app's `handler_args` by `create_app`) is also the request-header timeout. A handler that
  is running (a WebSocket, an upload being read) is never closed by it; a body that stops
  arriving is the handlers' own `http.body_timeout_s` (`api.parsing`).
- Parse errors (a request line or header over 8190 bytes, a malformed line) never reach the
  app's middlewares: aiohttp answers them from `RequestHandler.handle_error` with plain text
  and logs a traceback at ERROR. `Runner` (an AppRunner) makes its connections' handlers
  `JsonErrorRequestHandler`, which answers in SPEC §4's shape and logs one warning line.
  The seam is a class swap on the objects aiohttp builds (`RequestHandler` keeps `__slots__`,
  so the subclass adds none): aiohttp offers no public hook for its parse errors.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from agenthuman_local.errors import AppError, BadRequest, PayloadTooLarge

log = logging.getLogger(__name__)


def handler_args(idle_timeout_s: float) -> dict[str, Any]:
    """The app's `handler_args`: the keyword arguments of every connection's RequestHandler."""
    return {"keepalive_timeout": idle_timeout_s}


class JsonErrorRequestHandler(web.RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason = (message or (str(exc) if exc else "") or "bad request")[:200]
        log.warning("refused a request from %s before routing: %r", request.remote, reason)
        error: AppError
        if status == 413:
            error = PayloadTooLarge()
        else:
            error = BadRequest(
                "The request line or a header is malformed or too long",
                suggestion="Keep the request line and each header under 8 KB.",
            )
        response = web.json_response(error.body(), status=status)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        handler = super().__call__()
        handler.__class__ = JsonErrorRequestHandler
        return handler


class Runner(web.AppRunner):
    """An AppRunner whose connections answer parse errors in our JSON shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
