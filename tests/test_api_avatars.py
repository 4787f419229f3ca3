"""Avatars (SPEC §3, §5): the shipped catalogue, aliases, and private uploaded avatars."""

from __future__ import annotations

from agenthuman_local import keys
from tests.conftest import ApiClient
from tests.test_errors import assert_error, second_account_client

AVATAR_FIELDS = {
    "avatar_id",
    "name",
    "preview_url",
    "preview_img_url",
    "image_url",
    "tags",
    "is_public",
    "created_at",
}


async def test_list_shipped_avatars(api: ApiClient) -> None:
    body = await api.json("GET", "/v1/avatars?parent_id=x&characters_only=true")
    assert set(body) == {"success", "avatars", "public_avatars", "my_avatars"}
    assert [a["avatar_id"] for a in body["public_avatars"]] == ["avat_local_ada", "avat_local_ben"]
    assert body["my_avatars"] == []
    assert body["avatars"] == body["public_avatars"]
    base = api.app[keys.settings_key].base_url
    ada = body["public_avatars"][0]
    assert set(ada) == AVATAR_FIELDS
    assert ada["name"] == "Ada"
    assert ada["preview_url"] == f"{base}/v1/avatars/avat_local_ada/preview"
    assert ada["preview_img_url"] == ada["preview_url"]
    assert ada["image_url"] == f"{base}/v1/avatars/avat_local_ada/image"
    assert "public" in ada["tags"]
    assert ada["is_public"] is True


async def test_public_list(api: ApiClient) -> None:
    body = await api.json("GET", "/v1/avatars/public")
    assert set(body) == {"success", "avatars"}
    assert {a["avatar_id"] for a in body["avatars"]} == {"avat_local_ada", "avat_local_ben"}


async def test_get_one_and_aliases(api: ApiClient) -> None:
    ben = await api.json("GET", "/v1/avatars/avat_local_ben")
    assert ben["avatar"]["name"] == "Ben"
    alias = await api.json("GET", "/v1/avatars/avat_01KMZJ4WE5QCD9G3EK21QW8NJK")
    assert alias["avatar"]["avatar_id"] == "avat_local_ada"


async def test_uploaded_avatars_are_private_to_their_account(api: ApiClient) -> None:
    store = api.app[keys.store_key]
    owner = await store.account_for_key(api.key or "")
    assert owner is not None
    photo = await store.create_avatar(
        account_id=owner, name="Me", image_path="a/image.jpg", preview_path="a/preview.jpg"
    )
    mine = await api.json("GET", "/v1/avatars")
    assert [a["avatar_id"] for a in mine["my_avatars"]] == [photo.avatar_id]
    assert mine["my_avatars"][0]["tags"] == ["user_exclusive"]
    assert mine["my_avatars"][0]["is_public"] is False
    assert mine["avatars"][-1]["avatar_id"] == photo.avatar_id
    session = await api.create_session({"avatar": photo.avatar_id})
    assert session["avatar"]["name"] == "Me"

    other = await second_account_client(api)
    assert (await other.json("GET", "/v1/avatars"))["my_avatars"] == []
    await assert_error(await other.get(f"/v1/avatars/{photo.avatar_id}"), 404, "AVATAR_NOT_FOUND")
    response = await other.post("/v1/sessions", json={"avatar_id": photo.avatar_id})
    await assert_error(response, 404, "AVATAR_NOT_FOUND")

    # Deleting the avatar leaves the session that used it readable.
    assert await store.delete_avatar(photo.avatar_id)
    got = await api.json("GET", f"/v1/sessions/{session['session_id']}")
    assert got["session"]["avatar"]["name"] == "Me"
