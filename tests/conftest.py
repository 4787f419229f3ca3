"""Shared fixtures: test settings over `tmp_path`, the real app on a real test server, an API
client that sends the key and checks every response against the OpenAPI document, and a CPU
render worker (`worker`) for the session-runner tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from agenthuman_local import keys
from agenthuman_local.api.auth import RateLimiter
from agenthuman_local.api.openapi import build_document
from agenthuman_local.app import CleanupContext, create_app
from agenthuman_local.config import Settings
from agenthuman_local.config_sources import load_settings
from agenthuman_local.engine.worker import RenderWorker

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = ROOT / "config" / "test.yaml"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """config/test.yaml with data under `tmp_path`; `overrides` are dotted keys (`ws.x=...`)."""
    flat = {"data_dir": str(tmp_path / "data")}
    flat.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_settings(TEST_CONFIG, environ={}, overrides=flat)


class OpenApiChecker:
    """Validates a response body against the schema the document gives its route and status."""

    def __init__(self) -> None:
        self.document = build_document("http://test")
        self._components = self.document["components"]
        self._paths = [
            (re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", path) + "$"), item)
            for path, item in self.document["paths"].items()
        ]

    def _schema(self, method: str, path: str, status: int) -> dict[str, Any] | None:
        error = {"$ref": "#/components/schemas/Error"}
        for pattern, item in self._paths:
            if pattern.match(path):
                operation = item.get(method.lower())
                if operation is None:
                    return error if status >= 400 else None
                spec = operation["responses"].get(str(status))
                if spec is None:
                    assert status >= 400, f"{method} {path}: undocumented status {status}"
                    spec = operation["responses"]["default"]
                content = spec.get("content", {})
                return content.get("application/json", {}).get("schema")
        assert status >= 400, f"{method} {path}: no OpenAPI operation for a {status}"
        return error

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        schema = self._schema(method, path, status)
        if schema is None:
            return
        jsonschema.Draft202012Validator({**schema, "components": self._components}).validate(body)


_CHECKER = OpenApiChecker()
_DEFAULT_KEY = object()


class ApiClient:
    """The test client plus the API key; every JSON response is checked against OpenAPI."""

    def __init__(self, client: TestClient[web.Request, web.Application], key: str | None) -> None:
        self.client = client
        self.key = key

    @property
    def app(self) -> web.Application:
        app = self.client.app
        assert app is not None
        return app

    async def request(
        self, method: str, path: str, *, key: Any = _DEFAULT_KEY, **kwargs: Any
    ) -> ClientResponse:
        headers = dict(kwargs.pop("headers", None) or {})
        api_key = self.key if key is _DEFAULT_KEY else key
        if api_key is not None:
            headers.setdefault("x-api-key", api_key)
        response = await self.client.request(method, path, headers=headers, **kwargs)
        await response.read()
        if method != "HEAD" and response.content_type == "application/json":
            _CHECKER.check(method, path.split("?", 1)[0], response.status, await response.json())
        return response

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("DELETE", path, **kwargs)

    async def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """Request, assert the status, return the body."""
        response = await self.request(method, path, **kwargs)
        body = await response.json()
        assert response.status == status, body
        return body

    async def create_session(self, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        created = await self.json("POST", "/v1/sessions", 201, json=dict(body or {}))
        return dict(created["session"])

    async def start_session(self, session_id: str) -> dict[str, Any]:
        return dict(await self.json("PUT", f"/v1/sessions/{session_id}/start"))


MakeClient = Callable[..., Awaitable[ApiClient]]


@pytest.fixture(autouse=True)
async def fail_on_leaked_tasks() -> AsyncIterator[None]:
    """Every task a test starts must be finished by the time its fixtures are torn down."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"leaked tasks: {[t.get_name() for t in leaked]}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def worker() -> AsyncIterator[RenderWorker]:
    w = RenderWorker("cpu")
    yield w
    await w.aclose()


def rate_limit_at(per_minute: int, now: float = 90.0) -> CleanupContext:
    """A cleanup context that gives the app a rate limiter on a stopped clock (`now`, mid
    minute): on the wall clock a minute boundary mid-test resets the window."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[keys.rate_limiter_key] = RateLimiter(per_minute, clock=lambda: now)
        yield

    return context


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path) -> MakeClient:
    """`await make_client(**config overrides, environ=..., contexts=...)` → a started app's client.

    Config overrides use `__` for the dot: `ws__connect_timeout_s=0.2`."""

    async def make(
        *,
        environ: Mapping[str, str] | None = None,
        contexts: Iterable[CleanupContext] = (),
        **overrides: Any,
    ) -> ApiClient:
        app = create_app(
            make_settings(tmp_path, **overrides), environ=environ or {}, contexts=contexts
        )
        client = await aiohttp_client(app)
        return ApiClient(client, app[keys.first_key_key].key)

    return make


@pytest.fixture
async def api(make_client: MakeClient) -> ApiClient:
    return await make_client()
