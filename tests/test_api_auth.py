"""Keys and accounts (SPEC §2): the first key, the key file, isolation, the rate limit."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from agenthuman_local import ids, keys
from agenthuman_local.paths import API_KEY_FILE, DB_FILE
from tests.conftest import ApiClient, MakeClient, rate_limit_at
from tests.test_errors import second_account_client


async def test_first_start_creates_and_saves_a_key(api: ApiClient, tmp_path: Path) -> None:
    first = api.app[keys.first_key_key]
    assert first.created
    assert first.key is not None and re.fullmatch(r"ah_live_[A-Za-z0-9]{32}", first.key)
    path = tmp_path / "data" / API_KEY_FILE
    assert first.path == path
    assert path.read_text().strip() == first.key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (await api.get("/v1/sessions")).status == 200


async def test_the_database_keeps_only_a_hash_and_a_prefix(api: ApiClient, tmp_path: Path) -> None:
    assert api.key is not None
    await api.client.close()  # checkpoint and close, so every byte is in the main file
    raw = (tmp_path / "data" / DB_FILE).read_bytes()
    assert api.key.encode() not in raw
    assert api.key[: ids.KEY_PREFIX_LEN].encode() in raw
    assert api.key[: ids.KEY_PREFIX_LEN + 1].encode() not in raw


async def test_agenthuman_api_key_is_used_at_first_start(make_client: MakeClient) -> None:
    api = await make_client(environ={"AGENTHUMAN_API_KEY": "ah_test_" + "k" * 32})
    assert api.key == "ah_test_" + "k" * 32
    assert (await api.get("/v1/sessions")).status == 200


async def test_later_starts_read_the_key_file(make_client: MakeClient, tmp_path: Path) -> None:
    first = await make_client()
    await first.client.close()
    again = await make_client(environ={"AGENTHUMAN_API_KEY": "ignored-after-first-start"})
    info = again.app[keys.first_key_key]
    assert not info.created
    assert again.key == first.key
    await again.client.close()
    (tmp_path / "data" / API_KEY_FILE).unlink()
    third = await make_client()
    assert third.app[keys.first_key_key].key is None
    assert not (tmp_path / "data" / API_KEY_FILE).exists()


async def test_public_routes_need_no_key(api: ApiClient) -> None:
    assert (await api.get("/healthz", key=None)).status == 200
    assert (await api.get("/openapi.json", key=None)).status == 200


async def test_accounts_do_not_see_each_others_sessions(api: ApiClient) -> None:
    mine = (await api.create_session())["session_id"]
    other = await second_account_client(api)
    theirs = (await other.create_session())["session_id"]
    assert [s["session_id"] for s in (await api.json("GET", "/v1/sessions"))["sessions"]] == [mine]
    listed = (await other.json("GET", "/v1/sessions"))["sessions"]
    assert [s["session_id"] for s in listed] == [theirs]


async def test_rate_limit_headers(make_client: MakeClient) -> None:
    api = await make_client(rate_limit_per_minute=3, contexts=[rate_limit_at(3, now=90.0)])
    remaining = []
    for path in ("/v1/sessions", "/v1/sessions/sess_nope", "/v1/avatars"):
        response = await api.get(path)
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Reset"] == "120"  # the end of the clock's minute
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]  # errors (the 404) count and carry the headers too
    limited = await api.get("/v1/sessions")
    assert limited.status == 429
    assert limited.headers["X-RateLimit-Limit"] == "3"
    # The limit is per key: another key is not affected.
    other = await second_account_client(api)
    assert (await other.get("/v1/sessions")).status == 200


async def test_rate_limit_off(api: ApiClient) -> None:
    response = await api.get("/v1/sessions")  # test.yaml sets rate_limit_per_minute: 0
    assert "X-RateLimit-Limit" not in response.headers
    for _ in range(50):
        assert (await api.get("/v1/avatars")).status == 200
