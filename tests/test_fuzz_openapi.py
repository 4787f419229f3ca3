"""Schemathesis against `/openapi.json` of a real `python run.py` on 127.0.0.1 (aiohttp is neither
ASGI nor WSGI, so it runs against a live server): for every operation, generated requests never
get a 5xx, and every response has a documented status, content type and body schema.

Whether the server accepts every schema-valid body is not checked here: the document cannot say
every rule (a `daily` room needs `url` and `token`, capacity runs out), so a valid body may get a
documented 4xx. `room.platform` is an open string whose description names what is accepted, so
`livekit` and `proxy` reach the handler for its 400 UNSUPPORTED_PLATFORM; `test_openapi.py`
checks the named values against the handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bench.server import Server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 12


def _fuzz(base_url: str, api_key: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                response = case.call(
                    base_url=base_url, session=http, headers={"x-api-key": api_key}, timeout=30
                )
                case.validate_response(response, checks=CHECKS)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # keep going: report every operation
                failures.append(f"{operation.label}: {str(exc)[:1500]}")
    return failures


async def test_every_operation_answers_as_documented(tmp_path) -> None:
    server = Server({"devices.use_cuda": "false"}, data_dir=tmp_path / "data")
    try:
        await server.start()
        failures = await asyncio.to_thread(_fuzz, server.base_url, server.api_key)
        await server.stop()
        log = server.log_tail(6000)
    finally:
        server.cleanup()
    assert not failures, "\n\n".join([*failures, "server log:", log])


async def test_a_multipart_part_with_a_malformed_header_is_400_not_500(api) -> None:
    # Found by the test above: aiohttp's parser raises while the handler reads the parts.
    body = b'--b\r\nContent-Disposition: form-data; name="\xf1\x17x"\r\n\r\nnull\r\n--b--\r\n'
    response = await api.post(
        "/v1/avatars/upload-face",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "VALIDATION_ERROR"
