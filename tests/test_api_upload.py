"""Uploaded avatars through the API (SPEC §5): upload-face by each input, its refusals, the
images, deletion, and an image as the `avatar` of an era [C] create. Real app, real SQLite,
a real photograph (skimage's astronaut); image URLs are served by a local aiohttp server."""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import skimage.data
from aiohttp import web
from aiohttp.test_utils import TestServer

from agenthuman_local import ids, keys
from agenthuman_local.api.avatars import MAX_UPLOAD_BYTES
from tests import photos
from tests.conftest import ApiClient
from tests.photos import encode
from tests.test_errors import assert_error, second_account_client

UPLOAD = "/v1/avatars/upload-face"


@pytest.fixture(scope="module", name="astronaut")
def astronaut_fixture() -> np.ndarray:
    return photos.astronaut()


@pytest.fixture(scope="module")
def face_jpeg(astronaut: np.ndarray) -> bytes:
    return encode(astronaut)


def two_faces(astronaut: np.ndarray) -> bytes:
    head = astronaut[0:300, 90:360]
    return encode(np.concatenate([head, head], axis=1))


def small_face(astronaut: np.ndarray) -> bytes:
    canvas = np.full((2000, 2000, 3), 205, np.uint8)
    canvas[700:1212, 700:1212] = astronaut
    return encode(canvas)


def file_form(data: bytes, filename: str = "me.jpg", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="image/jpeg")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def avatar_dirs(api: ApiClient) -> list[str]:
    root = api.app[keys.settings_key].data_dir / "avatars"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def decode_image(body: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture
async def image_server(aiohttp_server: Any, face_jpeg: bytes) -> TestServer:
    """A stand-in for a public image host, on 127.0.0.1."""
    big = b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES)

    async def face(request: web.Request) -> web.Response:
        return web.Response(body=face_jpeg, content_type="image/jpeg")

    async def huge(request: web.Request) -> web.StreamResponse:
        # Streamed without a Content-Length, so only the running count can stop it.
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        for start in range(0, len(big), 1 << 20):
            await response.write(big[start : start + (1 << 20)])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/face.jpg", face)
    app.router.add_get("/huge.jpg", huge)
    server: TestServer = await aiohttp_server(app)
    return server


async def upload_ok(api: ApiClient, **kwargs: Any) -> dict[str, Any]:
    body = await api.json("POST", UPLOAD, **kwargs)
    assert set(body) == {"success", "avatar_id", "preview_url", "image_url"}
    assert ids.is_ulid_id(body["avatar_id"], "avat")
    return dict(body)


# -- the three inputs -----------------------------------------------------------------------------


async def test_upload_a_file(api: ApiClient, face_jpeg: bytes) -> None:
    body = await upload_ok(api, data=file_form(face_jpeg, name="Astro"))
    avatar_id = body["avatar_id"]
    assert body["preview_url"].endswith(f"/v1/avatars/{avatar_id}/preview")
    assert body["image_url"].endswith(f"/v1/avatars/{avatar_id}/image")
    avatar = (await api.json("GET", f"/v1/avatars/{avatar_id}"))["avatar"]
    assert avatar["name"] == "Astro"
    assert avatar["tags"] == ["user_exclusive"] and avatar["is_public"] is False
    listed = await api.json("GET", "/v1/avatars")
    assert [a["avatar_id"] for a in listed["my_avatars"]] == [avatar_id]
    assert avatar_dirs(api) == [avatar_id]
    files = api.app[keys.settings_key].data_dir / "avatars" / avatar_id
    assert sorted(p.name for p in files.iterdir()) == ["image.jpg", "preview.jpg", "rig.json"]


async def test_upload_base64_as_json_with_and_without_the_prefix(
    api: ApiClient, astronaut: np.ndarray
) -> None:
    png = encode(astronaut, ".png")
    first = await upload_ok(api, json={"image_base64": data_uri(png, "image/png")})
    second = await upload_ok(api, json={"image_base64": base64.b64encode(png).decode()})
    assert first["avatar_id"] != second["avatar_id"]
    avatar = (await api.json("GET", f"/v1/avatars/{first['avatar_id']}"))["avatar"]
    assert avatar["name"] == "My avatar"


async def test_upload_base64_as_a_form(api: ApiClient, astronaut: np.ndarray) -> None:
    webp = encode(astronaut, ".webp")
    body = await upload_ok(api, data={"image_base64": base64.b64encode(webp).decode()})
    preview = await api.get(f"/v1/avatars/{body['avatar_id']}/preview", key=None)
    assert preview.status == 200


async def test_upload_from_a_url(api: ApiClient, image_server: TestServer) -> None:
    url = str(image_server.make_url("/face.jpg"))
    body = await upload_ok(api, json={"image_url": url})
    assert avatar_dirs(api) == [body["avatar_id"]]


async def test_unreachable_or_failing_urls_are_400(
    api: ApiClient, image_server: TestServer
) -> None:
    cases = {
        "http://127.0.0.1:1/face.jpg": "unreachable",
        str(image_server.make_url("/missing.jpg")): "HTTP 404",
        "ftp://127.0.0.1/face.jpg": "http(s)",
        "not a url": "http(s)",
    }
    for url, words in cases.items():
        error = await assert_error(
            await api.post(UPLOAD, json={"image_url": url}), 400, "VALIDATION_ERROR"
        )
        assert error["message"].startswith("image_url ") and words in error["message"], url
    assert avatar_dirs(api) == []


# -- refusals -------------------------------------------------------------------------------------


async def test_exactly_one_input(api: ApiClient, face_jpeg: bytes) -> None:
    for kwargs in ({"json": {}}, {"json": {"name": "x"}}, {"data": {"name": "x"}}):
        error = await assert_error(await api.post(UPLOAD, **kwargs), 400, "VALIDATION_ERROR")
        assert "exactly one of" in error["message"]
    both = file_form(face_jpeg, image_url="http://127.0.0.1:1/x.jpg")
    error = await assert_error(await api.post(UPLOAD, data=both), 400, "VALIDATION_ERROR")
    assert error["details"] == {"fields": ["file", "image_url"]}
    two = {"image_base64": data_uri(face_jpeg), "image_url": "http://127.0.0.1:1/x.jpg"}
    await assert_error(await api.post(UPLOAD, json=two), 400, "VALIDATION_ERROR")
    assert avatar_dirs(api) == []


async def test_each_face_rule_has_its_code(api: ApiClient, astronaut: np.ndarray) -> None:
    cases = [
        (b"hello, this is text", "NOT_AN_IMAGE"),
        (encode(astronaut, ".bmp"), "NOT_AN_IMAGE"),  # decodable, but not jpeg/png/webp
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "NOT_AN_IMAGE"),
        (encode(skimage.data.coffee()), "NO_FACE"),
        (two_faces(astronaut), "MULTIPLE_FACES"),
        (small_face(astronaut), "FACE_TOO_SMALL"),
    ]
    for data, code in cases:
        await assert_error(await api.post(UPLOAD, data=file_form(data)), 400, code)
    bad_base64 = {"image_base64": "data:image/png;base64,@@@"}
    await assert_error(await api.post(UPLOAD, json=bad_base64), 400, "NOT_AN_IMAGE")
    assert avatar_dirs(api) == []
    assert (await api.json("GET", "/v1/avatars"))["my_avatars"] == []


async def test_over_10_mb_is_413(api: ApiClient, image_server: TestServer) -> None:
    big = b"\xff\xd8\xff" + bytes(MAX_UPLOAD_BYTES)
    await assert_error(await api.post(UPLOAD, data=file_form(big)), 413, "PAYLOAD_TOO_LARGE")
    as_json = {"image_base64": base64.b64encode(big).decode()}
    await assert_error(await api.post(UPLOAD, json=as_json), 413, "PAYLOAD_TOO_LARGE")
    url = str(image_server.make_url("/huge.jpg"))
    await assert_error(await api.post(UPLOAD, json={"image_url": url}), 413, "PAYLOAD_TOO_LARGE")
    assert avatar_dirs(api) == []


async def test_upload_needs_a_key(api: ApiClient, face_jpeg: bytes) -> None:
    response = await api.post(UPLOAD, data=file_form(face_jpeg), key=None)
    await assert_error(response, 401, "UNAUTHORIZED")


async def test_a_failed_row_write_leaves_no_files(api: ApiClient, face_jpeg: bytes) -> None:
    db = api.app[keys.store_key].path
    with sqlite3.connect(db) as conn:  # a second connection: the server's store is untouched
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON avatars BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    response = await api.post(UPLOAD, data=file_form(face_jpeg))
    assert response.status == 500
    assert avatar_dirs(api) == []


# -- images ---------------------------------------------------------------------------------------


async def test_uploaded_images(api: ApiClient, astronaut: np.ndarray) -> None:
    wide = cv2.resize(astronaut, (1600, 1600), interpolation=cv2.INTER_CUBIC)
    body = await upload_ok(api, data=file_form(encode(wide)))
    preview = await api.get(f"/v1/avatars/{body['avatar_id']}/preview", key=None)
    assert preview.status == 200 and preview.content_type == "image/jpeg"
    assert decode_image(await preview.read()).shape == (500, 500, 3)
    image = await api.get(f"/v1/avatars/{body['avatar_id']}/image", key=None)
    assert image.status == 200 and image.content_type == "image/jpeg"
    assert decode_image(await image.read()).shape[:2] == (1200, 1200)


async def test_shipped_avatar_images(api: ApiClient) -> None:
    for path in ("preview", "image"):
        response = await api.get(f"/v1/avatars/avat_local_ben/{path}", key=None)
        assert response.status == 200 and response.content_type == "image/png"
        picture = decode_image(await response.read())
        assert picture.shape == (500, 500, 3)
        assert picture.std() > 10  # a drawn character, not a blank square
    # An alias (a client's default id) shows the default avatar.
    alias = await api.get("/v1/avatars/avat_01KMZJ4WE5QCD9G3EK21QW8NJK/preview", key=None)
    ada = await api.get("/v1/avatars/avat_local_ada/preview", key=None)
    assert await alias.read() == await ada.read()


async def test_unknown_avatar_images_are_404_json(api: ApiClient) -> None:
    for path in ("preview", "image"):
        response = await api.get(f"/v1/avatars/avat_nope/{path}", key=None)
        await assert_error(response, 404, "AVATAR_NOT_FOUND")


# -- using, hiding and deleting -------------------------------------------------------------------


async def test_usable_at_once_and_private(api: ApiClient, face_jpeg: bytes) -> None:
    body = await upload_ok(api, data=file_form(face_jpeg, name="Astro"))
    avatar_id = body["avatar_id"]
    session = await api.create_session({"avatar_id": avatar_id})
    assert session["avatar"] == {
        "avatar_id": avatar_id,
        "name": "Astro",
        "url": body["preview_url"],
    }
    other = await second_account_client(api)
    await assert_error(await other.get(f"/v1/avatars/{avatar_id}"), 404, "AVATAR_NOT_FOUND")
    response = await other.post("/v1/sessions", json={"avatar_id": avatar_id})
    await assert_error(response, 404, "AVATAR_NOT_FOUND")
    assert (await other.json("GET", "/v1/avatars"))["my_avatars"] == []
    await assert_error(await other.delete(f"/v1/avatars/{avatar_id}"), 404, "AVATAR_NOT_FOUND")
    # The images need no key: whoever holds the URL can show them.
    assert (await other.get(f"/v1/avatars/{avatar_id}/preview", key=None)).status == 200


async def test_delete(api: ApiClient, face_jpeg: bytes) -> None:
    body = await upload_ok(api, data=file_form(face_jpeg, name="Astro"))
    avatar_id = body["avatar_id"]
    session = await api.create_session({"avatar_id": avatar_id})
    deleted = await api.json("DELETE", f"/v1/avatars/{avatar_id}")
    assert deleted["success"] is True and deleted["avatar_id"] == avatar_id
    assert avatar_dirs(api) == []
    await assert_error(await api.get(f"/v1/avatars/{avatar_id}"), 404, "AVATAR_NOT_FOUND")
    response = await api.get(f"/v1/avatars/{avatar_id}/preview", key=None)
    await assert_error(response, 404, "AVATAR_NOT_FOUND")
    await assert_error(await api.delete(f"/v1/avatars/{avatar_id}"), 404, "AVATAR_NOT_FOUND")
    # The session that used it keeps its avatar's name.
    kept = (await api.json("GET", f"/v1/sessions/{session['session_id']}"))["session"]
    assert kept["avatar"]["name"] == "Astro"


async def test_public_avatars_cannot_be_deleted(api: ApiClient) -> None:
    for avatar_id in ("avat_local_ada", "avat_local_ben", "avat_01KMZHXFPBVCXA5ATK85HCP8G1"):
        response = await api.delete(f"/v1/avatars/{avatar_id}")
        await assert_error(response, 409, "INVALID_STATE")
    await assert_error(await api.delete("/v1/avatars/avat_nope"), 404, "AVATAR_NOT_FOUND")
    assert (await api.json("GET", "/v1/avatars/avat_local_ada"))["success"] is True


# -- an image as the avatar of an era [C] create --------------------------------------------------


async def test_era_c_create_with_a_data_uri_avatar(api: ApiClient, face_jpeg: bytes) -> None:
    body = {"avatar": data_uri(face_jpeg), "room": {"platform": "local"}}
    created = await api.json("POST", "/v1/sessions", 201, json=body)
    session = created["session"]
    assert session["status"] == "started"
    avatar_id = session["avatar"]["avatar_id"]
    assert ids.is_ulid_id(avatar_id, "avat")
    mine = (await api.json("GET", "/v1/avatars"))["my_avatars"]
    assert [a["avatar_id"] for a in mine] == [avatar_id]
    assert session["avatar"]["url"].endswith(f"/v1/avatars/{avatar_id}/preview")
    await api.json("PUT", f"/v1/sessions/{session['session_id']}/end")


async def test_era_c_create_with_an_avatar_url(api: ApiClient, image_server: TestServer) -> None:
    url = str(image_server.make_url("/face.jpg"))
    created = await api.json(
        "POST", "/v1/sessions", 201, json={"avatar": url, "room": {"platform": "local"}}
    )
    session = created["session"]
    assert session["avatar"]["avatar_id"].startswith("avat_")
    await api.json("PUT", f"/v1/sessions/{session['session_id']}/end")


async def test_era_c_create_surfaces_upload_errors(api: ApiClient, astronaut: np.ndarray) -> None:
    room = {"platform": "local"}
    cases = [
        (data_uri(encode(skimage.data.coffee())), "NO_FACE"),
        (data_uri(two_faces(astronaut)), "MULTIPLE_FACES"),
        ("data:image/png;base64,AAAA", "NOT_AN_IMAGE"),
        ("http://127.0.0.1:1/face.jpg", "VALIDATION_ERROR"),
    ]
    for avatar, code in cases:
        response = await api.post("/v1/sessions", json={"avatar": avatar, "room": room})
        error = await assert_error(response, 400, code)
        if code == "VALIDATION_ERROR":
            assert error["message"].startswith("avatar is unreachable")
    assert avatar_dirs(api) == []
    assert (await api.json("GET", "/v1/sessions"))["sessions"] == []


async def test_a_refused_create_removes_the_avatar_it_uploaded(
    make_client: Any, face_jpeg: bytes
) -> None:
    api = await make_client(devices__cpu_sessions=0)
    body = {"avatar": data_uri(face_jpeg), "room": {"platform": "local"}}
    await assert_error(await api.post("/v1/sessions", json=body), 503, "NO_CAPACITY")
    assert avatar_dirs(api) == []
    assert (await api.json("GET", "/v1/avatars"))["my_avatars"] == []


async def test_a_broken_multipart_body_is_400(api: ApiClient) -> None:
    for content_type, raw in (
        ("multipart/form-data", b"file=x"),  # no boundary
        ("multipart/form-data; boundary=b", b"not the boundary at all"),
    ):
        response = await api.post(UPLOAD, data=raw, headers={"Content-Type": content_type})
        error = await assert_error(response, 400, "VALIDATION_ERROR")
        assert error["message"] == "body is not a valid multipart form"


async def test_the_file_name_names_the_avatar_unless_name_is_given(
    api: ApiClient, face_jpeg: bytes
) -> None:
    named_by_file = await upload_ok(api, data=file_form(face_jpeg, filename="Grace Hopper.jpg"))
    named = await upload_ok(api, data=file_form(face_jpeg, filename="x.jpg", name="Astro"))
    names = {
        a["avatar_id"]: a["name"] for a in (await api.json("GET", "/v1/avatars"))["my_avatars"]
    }
    assert names == {named_by_file["avatar_id"]: "Grace Hopper", named["avatar_id"]: "Astro"}
