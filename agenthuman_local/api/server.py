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

`Runner` (run.py's, and tests that start the real edge) also splits the two timeouts and caps
the connections, from the app's `http` settings (the `handler_args` above, one timeout for
both, is what a plain AppRunner such as aiohttp's TestServer gets):

- Header timeout vs keep-alive: a new connection gets `http.idle_timeout_s` to send whole
  request headers; an idle keep-alive connection (a response sent, nothing of the next request
  yet) is kept `http.keepalive_timeout_s`, longer than clients keep theirs, so a pooled client
  connection is closed by the client first and never raced; the first byte of a next request
  brings its deadline down to `http.idle_timeout_s` from then (a trickle never extends it).
  The seam: the handler's `_keepalive_timeout` (the keep-alive after a response) and its timer
  re-armed in `connection_made` and `data_received`; aiohttp's `_process_keepalive` still does
  the closing, only while no complete request is in hand.
- Connection cap (`connection_cap`): at most `http.max_connections` open connections, and no
  more than half of what the open-file limit leaves after one listen backlog, so idle or
  half-sent connections can never use up the file descriptors a live session needs (its
  recording, its timeline) or `/healthz` needs to be accepted. A connection over the cap first
  evicts the oldest one that is idle — no request in hand, or a WebSocket still waiting for
  `session.init` (its request marked `keys.waiting_for_init_key` by `ws.py`) — and when none
  is, it is answered a canned 503 UNAVAILABLE and closed, before aiohttp parses a byte.
  Requests in progress (live sessions' sockets, uploads) are never evicted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.errors import AppError, BadRequest, PayloadTooLarge, Unavailable

log = logging.getLogger(__name__)

# How long a WebSocket's close waits for the client's answering close frame (aiohttp's default:
# 10 s). The close frame itself goes at once; a client that is not reading never answers, and
# must not hold a shutdown (or its handler) longer than this. Session and viewer sockets.
CLOSE_ANSWER_WAIT_S = 1.0

LISTEN_BACKLOG = 128  # cli._listen's; one backlog can be accepted in one loop iteration
CAP_WARN_EVERY_S = 10.0

_FULL = Unavailable(
    "The server has too many open connections",
    suggestion="Retry in a moment; close idle connections you keep open.",
)
_FULL_BODY = json.dumps(_FULL.body()).encode()
FULL_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    + f"Content-Length: {len(_FULL_BODY)}\r\n".encode()
    + b"Retry-After: 1\r\nConnection: close\r\n\r\n"
    + _FULL_BODY
)


def connection_cap(max_connections: int, nofile_soft: int | None = None) -> int:
    """`http.max_connections`, lowered to half of what the open-file limit (soft) leaves after
    one listen backlog: the rest stays for the sessions' files, the database, the workers."""
    if nofile_soft is None:
        nofile_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile_soft == resource.RLIM_INFINITY or nofile_soft < 0:
        return max_connections
    return max(1, min(max_connections, (nofile_soft - LISTEN_BACKLOG) // 2))


def handler_args(idle_timeout_s: float) -> dict[str, Any]:
    """The app's `handler_args`: the keyword arguments of every connection's RequestHandler.
    `lingering_time` 0: a request whose body the handler left unread (a refusal, `api.middleware`)
    closes its connection instead of reading and dropping the rest for up to 10 s."""
    return {"keepalive_timeout": idle_timeout_s, "lingering_time": 0.0}


class JsonErrorRequestHandler(web.RequestHandler):
    __slots__ = ()

    # -- the connection cap and the header timeout (Runner's servers only) -----------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        if isinstance(server, _JsonErrorServer) and not server.admit(self):
            # Refused before aiohttp sets anything up: one write, one close.
            self._force_close = True
            transport.write(FULL_RESPONSE)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        if isinstance(server, _JsonErrorServer):
            self._rearm(self._loop.time() + server.header_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        server = self._manager
        if isinstance(server, _JsonErrorServer):
            server.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        server = self._manager
        waiter = self._waiter
        if (
            isinstance(server, _JsonErrorServer)
            and waiter is not None
            and not waiter.done()
            and self._keepalive
            and not self._force_close
        ):
            # Part of a request with no whole headers yet: they get the header timeout, counted
            # from the first byte (min: a trickle never pushes the deadline out).
            deadline = self._loop.time() + server.header_timeout_s
            if deadline < self._next_keepalive_close_time:
                self._rearm(deadline)

    def _rearm(self, close_time: float) -> None:
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        self._next_keepalive_close_time = close_time
        self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def evictable(self) -> bool:
        """Idle (no request in hand: silent, half-sent or kept alive) or a WebSocket that
        still waits for `session.init`; never a request in progress."""
        if self._force_close or self._close or self.transport is None:
            return False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            return True
        request = self._current_request
        return request is not None and request.get(keys.waiting_for_init_key, False)

    # -- parse errors --------------------------------------------------------------------

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
    # Set by Runner._make_server once the class is swapped (web.Server has no __slots__).
    header_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int
    _open: dict[JsonErrorRequestHandler, None]  # admitted, oldest first
    _warned_at: float

    def configure(self, header_timeout_s: float, keepalive_timeout_s: float, cap: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.max_connections = cap
        self._open = {}
        self._warned_at = -CAP_WARN_EVERY_S

    def __call__(self) -> web.RequestHandler:
        handler = super().__call__()
        handler.__class__ = JsonErrorRequestHandler
        # The keep-alive after a response; the first request's headers get header_timeout_s.
        handler._keepalive_timeout = self.keepalive_timeout_s
        return handler

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, handler: JsonErrorRequestHandler) -> bool:
        """Room for `handler`: under the cap, or after evicting the oldest idle connection."""
        if len(self._open) >= self.max_connections:
            victim = next((h for h in self._open if h.evictable()), None)
            self._warn(evicting=victim is not None)
            if victim is None:
                return False
            del self._open[victim]
            victim.force_close()
        self._open[handler] = None
        return True

    def forget(self, handler: JsonErrorRequestHandler) -> None:
        self._open.pop(handler, None)

    def _warn(self, *, evicting: bool) -> None:
        now = self._loop.time()
        if now - self._warned_at < CAP_WARN_EVERY_S:
            return
        self._warned_at = now
        log.warning(
            "%d connections open (http.max_connections, lowered to fit the open-file limit): %s",
            self.max_connections,
            "closing the oldest idle one for each new one"
            if evicting
            else "none idle, refusing new ones with 503",
        )


class Runner(web.AppRunner):
    """An AppRunner whose connections answer parse errors in our JSON shape, get the header
    timeout and the keep-alive from `http.idle_timeout_s` and `http.keepalive_timeout_s`,
    and are capped at `http.max_connections` (module docstring)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        http = self._app[keys.settings_key].http
        cap = connection_cap(http.max_connections)
        if cap < http.max_connections:
            log.info(
                "at most %d connections (http.max_connections %d, lowered for the open-file limit)",
                cap,
                http.max_connections,
            )
        server.configure(http.idle_timeout_s, http.keepalive_timeout_s, cap)
        return server
