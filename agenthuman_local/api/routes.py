"""The whole URL table, and nothing else. Each route also has an entry in `api/openapi.py`."""

from __future__ import annotations

from aiohttp import web

from agenthuman_local.api import avatars, metrics, misc, sessions, viewer, ws


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", misc.healthz),
            web.get("/openapi.json", misc.openapi_json),
            web.get("/metrics", metrics.metrics_handler),
            web.post("/v1/sessions", sessions.create_session),
            web.get("/v1/sessions", sessions.list_sessions),
            web.get("/v1/sessions/{session_id}", sessions.get_session),
            web.put("/v1/sessions/{session_id}/start", sessions.start_session),
            web.post("/v1/sessions/{session_id}/start", sessions.start_session),
            web.put("/v1/sessions/{session_id}/end", sessions.end_session),
            web.post("/v1/sessions/{session_id}/end", sessions.end_session),
            web.get("/v1/sessions/{session_id}/ws", ws.session_ws),
            web.get("/v1/ws", ws.session_ws),
            web.get("/v1/sessions/{session_id}/timeline", sessions.get_timeline),
            web.get("/v1/sessions/{session_id}/recording", sessions.get_recording),
            web.get("/v1/sessions/{session_id}/viewer", viewer.viewer_page),
            web.get("/v1/sessions/{session_id}/viewer/ws", viewer.viewer_socket),
            web.get("/viewer/{name}", viewer.viewer_asset),
            web.get("/v1/avatars", avatars.list_avatars),
            # Before /v1/avatars/{avatar_id}: the router tries routes in order.
            web.get("/v1/avatars/public", avatars.list_public_avatars),
            web.post("/v1/avatars/upload-face", avatars.upload_face),
            web.get("/v1/avatars/{avatar_id}", avatars.get_avatar),
            web.delete("/v1/avatars/{avatar_id}", avatars.delete_avatar),
            web.get("/v1/avatars/{avatar_id}/preview", avatars.avatar_preview),
            web.get("/v1/avatars/{avatar_id}/image", avatars.avatar_image),
            web.get("/v1/usage", misc.usage),
        ]
    )
