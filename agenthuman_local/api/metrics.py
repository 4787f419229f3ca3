"""`GET /metrics`: the app's Prometheus registry in the text exposition format (no API key).

The app puts its `Metrics` at `app[keys.metrics_key]` and routes
`web.get("/metrics", metrics_handler)`.
"""

from __future__ import annotations

from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.metrics import CONTENT_TYPE


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[keys.metrics_key]
    await metrics.refresh()
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
