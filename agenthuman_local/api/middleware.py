"""The error middleware: every failure leaves the server in the one JSON shape of SPEC §4.

`AppError`s keep their status, code and headers; aiohttp's own HTTP errors (unknown route 404,
405, 413 body too large) and a body aiohttp cannot parse (400) are mapped onto our codes;
anything else is a 500 `INTERNAL` whose traceback goes to the log, never to the client. It is
the outermost middleware, so it also puts the request's `X-RateLimit-*` headers on every
response, success or not.

A refusal that leaves the request body unread (a bomb refused by its Content-Length or partway,
a 401 or 429 before the body) says `Connection: close`, stops reading the connection and, as
the app's `lingering_time` is 0 (`api.server.handler_args`), is closed after the answer:
aiohttp would otherwise read and drop the rest of the body (up to `max_request_mb`, for up to
10 s) to keep the connection, work on the event loop an attacker sets the size of.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler

from agenthuman_local import keys
from agenthuman_local.errors import (
    AppError,
    BadRequest,
    Internal,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    error_body,
)

log = logging.getLogger(__name__)

_FROM_HTTP: dict[int, type[AppError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def error_response(exc: AppError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    kind = _FROM_HTTP.get(exc.status)
    if kind is None:
        body = error_body(f"HTTP_{exc.status}", exc.reason, "See the HTTP status for details.")
        return web.json_response(body, status=exc.status)
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    if kind is PayloadTooLarge:
        return error_response(PayloadTooLarge(headers=headers))
    message = exc.text if kind is BadRequest and exc.text else None
    return web.json_response(kind(message).body(), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _from_http_exception(exc)
    except AppError as exc:
        response = error_response(exc)
    except BadHttpMessage:
        # Raised while a handler reads the body (e.g. a multipart part with a bad header line).
        response = error_response(BadRequest("The request body is malformed"))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        response = error_response(Internal())
    if not response.prepared:
        rate_headers = request.get(keys.rate_headers_key)
        if rate_headers:
            response.headers.update(rate_headers)
        if response.status >= 400 and not request.content.is_eof():
            response.force_close()
            if request.protocol is not None:
                request.protocol.pause_reading()  # nor read what is already on its way
    return response
