"""The OpenAPI document (SPEC §5) matches the router, and its schemas are valid JSON Schema.

That every response the suite receives fits its schema is checked by `ApiClient` in conftest.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from agenthuman_local.api.openapi import OPERATIONS, SCHEMAS, build_document
from agenthuman_local.app import create_app
from agenthuman_local.config import Settings
from tests.conftest import ApiClient, OpenApiChecker


def router_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings, environ={})
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one beside every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        routes.add((route.method, info.get("path") or info["formatter"]))
    return routes


def test_every_route_is_documented_and_every_operation_routed(settings: Settings) -> None:
    documented = {(op.method, op.path) for op in OPERATIONS}
    assert len(documented) == len(OPERATIONS), "an operation is listed twice"
    assert router_routes(settings) == documented


def test_document_paths_match_operations() -> None:
    doc = build_document("http://x")
    assert doc["openapi"].startswith("3.1")
    in_doc = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert in_doc == {(op.method, op.path) for op in OPERATIONS}
    for path, item in doc["paths"].items():
        for operation in item.values():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert all(f"{{{n}}}" in path for n in names)
            assert "default" in operation["responses"]


def all_schemas() -> list[dict[str, object]]:
    doc = build_document("http://x")
    found: list[dict[str, object]] = list(SCHEMAS.values())
    for item in doc["paths"].values():
        for operation in item.values():
            for response in operation["responses"].values():
                for content in response.get("content", {}).values():
                    found.append(content["schema"])
    return found


@pytest.mark.parametrize("schema", all_schemas())
def test_schemas_are_valid_json_schema(schema: dict[str, object]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_checker_rejects_a_wrong_body() -> None:
    checker = OpenApiChecker()
    checker.check("GET", "/healthz", 200, {"status": "ok", "engine": "ready", "devices": []})
    with pytest.raises(jsonschema.ValidationError):
        checker.check("GET", "/healthz", 200, {"status": "ok", "engine": "ready"})
    with pytest.raises(jsonschema.ValidationError):
        checker.check("GET", "/v1/sessions/x", 404, {"success": False, "error": {}})
    with pytest.raises(AssertionError, match="undocumented status"):
        checker.check("GET", "/healthz", 201, {})


async def test_served_without_a_key(api: ApiClient, tmp_path: Path) -> None:
    served = await api.json("GET", "/openapi.json", key=None)
    base = served["servers"][0]["url"]
    assert served == build_document(base)
    assert served["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"
