"""Health, usage and the OpenAPI document."""

from __future__ import annotations

import time

from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.api.objects import session_json
from agenthuman_local.api.openapi import build_document
from agenthuman_local.sessions.state import SessionState


async def healthz(request: web.Request) -> web.Response:
    manager = request.app[keys.manager_key]
    body = {
        "status": "ok",
        "engine": "ready" if manager.ready else "loading",
        "devices": [d.snapshot() for d in request.app[keys.devices_key].devices],
    }
    error = request.app[keys.engine_status_key].error
    if error is not None:
        body["engine_error"] = error
    return web.json_response(body)


async def usage(request: web.Request) -> web.Response:
    app = request.app
    manager = app[keys.manager_key]
    base = app[keys.settings_key].base_url
    secret = app[keys.viewer_secret_key]
    active, _ = await manager.list_sessions(
        request[keys.account_key], status=SessionState.STARTED, limit=500, cursor=None
    )
    now = time.time()
    return web.json_response(
        {
            "success": True,
            "usage": {
                **manager.usage(),
                "active_sessions": [session_json(s, base, now, secret) for s in active],
                "devices": [d.snapshot() for d in app[keys.devices_key].devices],
            },
        }
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_document(request.app[keys.settings_key].base_url))
