"""Avatar routes: the catalogue an account can use (public avatars, then its own), uploads,
their images, and deletion (SPEC §3, §5).

An upload becomes `data_dir/avatars/<avatar_id>/` (image.jpg, preview.jpg, rig.json) plus one
row, or nothing at all: the files are written under a temporary name and renamed, and removed
again if the row cannot be written; rig.json and the row hold the same rig. The photo work
(`engine/faces.py`: the face mesh, then the version-2 rig) runs on a worker thread and is
imported there, so this module stays free of heavy imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from agenthuman_local import errors, ids, keys
from agenthuman_local.api.auth import public
from agenthuman_local.api.fetch import fetch_image
from agenthuman_local.api.objects import avatar_image_url, avatar_json, avatar_preview_url
from agenthuman_local.api.parsing import (
    json_object,
    multipart_fields,
    optional_str,
    urlencoded_fields,
)
from agenthuman_local.avatars import resolve_alias
from agenthuman_local.errors import (
    AvatarNotFound,
    BadRequest,
    Conflict,
    NotAnImage,
    PayloadTooLarge,
    StorageUnavailable,
    ValidationError,
)
from agenthuman_local.paths import AVATARS_DIR, staging_dir
from agenthuman_local.records import Avatar

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_UPLOAD_NAME = "My avatar"
MAX_NAME_CHARS = 200  # an avatar's name (a file's name is cut to it)
INPUTS = ("file", "image_base64", "image_url")
_FACE_ERRORS: dict[str, type[errors.BadRequest]] = {
    cls.code: cls
    for cls in (errors.NotAnImage, errors.NoFace, errors.MultipleFaces, errors.FaceTooSmall)
}


async def find_avatar(app: web.Application, account_id: str, avatar_id: str | None) -> Avatar:
    """The avatar an id names for this account (aliases → the default); else AVATAR_NOT_FOUND."""
    resolved = resolve_alias(avatar_id, app[keys.avatar_aliases_key])
    avatar = await app[keys.store_key].get_avatar(resolved, account_id)
    if avatar is None:
        raise AvatarNotFound()
    return avatar


async def list_avatars(request: web.Request) -> web.Response:
    base = request.app[keys.settings_key].base_url
    public, own = await request.app[keys.store_key].list_avatars(request[keys.account_key])
    public_json = [avatar_json(a, base) for a in public]
    own_json = [avatar_json(a, base) for a in own]
    return web.json_response(
        {
            "success": True,
            "avatars": public_json + own_json,
            "public_avatars": public_json,
            "my_avatars": own_json,
        }
    )


async def list_public_avatars(request: web.Request) -> web.Response:
    base = request.app[keys.settings_key].base_url
    public, _ = await request.app[keys.store_key].list_avatars(request[keys.account_key])
    return web.json_response({"success": True, "avatars": [avatar_json(a, base) for a in public]})


async def get_avatar(request: web.Request) -> web.Response:
    avatar = await find_avatar(
        request.app, request[keys.account_key], request.match_info["avatar_id"]
    )
    base = request.app[keys.settings_key].base_url
    return web.json_response({"success": True, "avatar": avatar_json(avatar, base)})


async def delete_avatar(request: web.Request) -> web.Response:
    """Delete an own avatar: the row, then its files. Sessions keep their recordings."""
    app = request.app
    avatar = await find_avatar(app, request[keys.account_key], request.match_info["avatar_id"])
    if avatar.is_public:
        raise Conflict(
            "Public avatars cannot be deleted",
            suggestion="Only avatars you uploaded with POST /v1/avatars/upload-face can be.",
        )
    await app[keys.store_key].delete_avatar(avatar.avatar_id)
    await asyncio.to_thread(shutil.rmtree, _avatar_dir(app, avatar.avatar_id), True)
    return web.json_response(
        {"success": True, "avatar_id": avatar.avatar_id, "message": "Avatar deleted successfully"}
    )


# -- images ------------------------------------------------------------------------------------


@public
async def avatar_preview(request: web.Request) -> web.Response:
    return await _avatar_picture(request, preview=True)


@public
async def avatar_image(request: web.Request) -> web.Response:
    return await _avatar_picture(request, preview=False)


async def _avatar_picture(request: web.Request, *, preview: bool) -> web.Response:
    """An uploaded avatar's own files; a shipped one's rendered preview (for both URLs). No key:
    the ids are unguessable, and any account's avatar is served by its id."""
    app = request.app
    avatar_id = resolve_alias(request.match_info["avatar_id"], app[keys.avatar_aliases_key])
    avatar = await app[keys.store_key].get_avatar(avatar_id)
    if avatar is None:
        raise AvatarNotFound()
    headers = {"Cache-Control": "max-age=3600"}
    if avatar.kind == "photo":
        relative = avatar.preview_path if preview else avatar.image_path
        if relative is None:
            raise AvatarNotFound()
        try:
            data = await asyncio.to_thread(
                Path.read_bytes, app[keys.settings_key].data_dir / relative
            )
        except FileNotFoundError as exc:
            raise AvatarNotFound() from exc
        return web.Response(body=data, content_type="image/jpeg", headers=headers)
    cache = app[keys.preview_cache_key]
    png = cache.get(avatar.avatar_id)
    if png is None:
        try:
            png = await asyncio.to_thread(app[keys.engine_key].render_preview, avatar.avatar_id)
        except LookupError as exc:  # a public avatar the engine cannot draw
            raise AvatarNotFound() from exc
        cache[avatar.avatar_id] = png
    return web.Response(body=png, content_type="image/png", headers=headers)


# -- upload ------------------------------------------------------------------------------------


async def upload_face(request: web.Request) -> web.Response:
    inputs, name = await _upload_inputs(request)
    if len(inputs) != 1:
        given = ", ".join(field for field, _ in inputs) or "none"
        raise BadRequest(
            f"Send exactly one of file (multipart), image_base64 or image_url (got: {given})",
            details={"fields": [field for field, _ in inputs]},
        )
    field, value = inputs[0]
    data = value if isinstance(value, bytes) else await image_bytes(request.app, field, value)
    account_id = request[keys.account_key]
    avatar = await create_photo_avatar(request.app, account_id, data, name, field=field)
    base = request.app[keys.settings_key].base_url
    return web.json_response(
        {
            "success": True,
            "avatar_id": avatar.avatar_id,
            "preview_url": avatar_preview_url(base, avatar.avatar_id),
            "image_url": avatar_image_url(base, avatar.avatar_id),
        }
    )


def is_image_value(value: str | None) -> bool:
    """An `avatar` given as an image (data URI or http(s) URL) rather than an id."""
    return value is not None and value.startswith(("data:", "http://", "https://"))


@contextlib.asynccontextmanager
async def session_avatar(
    request: web.Request, account_id: str, field: str, value: str | None
) -> AsyncIterator[Avatar]:
    """The avatar a session create names: by id, or uploaded from an image (data URI or URL).

    An avatar uploaded here is deleted again if the body fails, so a refused create leaves no
    avatar behind that its caller never learnt the id of.
    """
    if value is None or not is_image_value(value):
        yield await find_avatar(request.app, account_id, value)
        return
    kind = "image_base64" if value.startswith("data:") else "image_url"
    data = await image_bytes(request.app, kind, value, label=field)
    avatar = await create_photo_avatar(
        request.app, account_id, data, DEFAULT_UPLOAD_NAME, field=field
    )
    try:
        yield avatar
    except BaseException:
        await request.app[keys.store_key].delete_avatar(avatar.avatar_id)
        await asyncio.to_thread(shutil.rmtree, _avatar_dir(request.app, avatar.avatar_id), True)
        raise


async def image_bytes(
    app: web.Application, kind: str, value: str, *, label: str | None = None
) -> bytes:
    """The image an `image_base64` or `image_url` value stands for."""
    if kind == "image_base64":
        return await asyncio.to_thread(_decode_base64, value)
    return await fetch_image(
        value,
        label or kind,
        max_bytes=MAX_UPLOAD_BYTES,
        too_large=_too_large,
        allow_private=app[keys.settings_key].upload.allow_private_urls,
    )


async def create_photo_avatar(
    app: web.Application, account_id: str, data: bytes, name: str, *, field: str = "file"
) -> Avatar:
    """Check, rig and store one photo as the account's private avatar (SPEC §5 upload-face);
    `field` is the request field the image came in, named by a refusal."""
    _check_image(data)
    avatar_id = ids.new_id("avat")
    max_pixels = int(app[keys.settings_key].upload.max_megapixels * 1_000_000)
    # Decoding and rigging take ~0.1-0.5 s and up to ~5 bytes of memory per pixel: only
    # `upload.max_concurrent` at once, the others wait their turn.
    async with app[keys.upload_slots_key]:
        try:
            rig = await asyncio.to_thread(
                _prepare_and_save, data, _avatar_dir(app, avatar_id), max_pixels
            )
        except _TooManyPixels as exc:
            raise ValidationError(
                field,
                f"is {exc.width}×{exc.height} pixels ({exc.fmt}); the limit is"
                f" {max_pixels / 1e6:g} megapixels",
                suggestion="Resize the photo (the limit is the server's upload.max_megapixels).",
            ) from exc
    try:
        return await app[keys.store_key].create_avatar(
            avatar_id=avatar_id,
            account_id=account_id,
            name=name,
            kind="photo",
            image_path=f"{AVATARS_DIR}/{avatar_id}/image.jpg",
            preview_path=f"{AVATARS_DIR}/{avatar_id}/preview.jpg",
            rig=rig,
        )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, _avatar_dir(app, avatar_id), True)
        raise


def _avatar_dir(app: web.Application, avatar_id: str) -> Path:
    return app[keys.settings_key].data_dir / AVATARS_DIR / avatar_id


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The image is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB",
        suggestion="Send a smaller JPEG, PNG or WebP image.",
    )


def _check_image(data: bytes) -> None:
    if len(data) > MAX_UPLOAD_BYTES:
        raise _too_large()
    is_jpeg = data.startswith(b"\xff\xd8\xff")
    is_png = data.startswith(b"\x89PNG\r\n\x1a\n")
    is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if not (is_jpeg or is_png or is_webp):
        raise NotAnImage("The upload is not a JPEG, PNG or WebP image")


def _decode_base64(text: str) -> bytes:
    from agenthuman_local.engine import faces

    try:
        return faces.decode_data_uri(text)
    except faces.FaceError as exc:
        raise NotAnImage(exc.message) from exc


class _TooManyPixels(Exception):
    """The image's header declares more than `upload.max_megapixels` (`_prepare_and_save`)."""

    def __init__(self, fmt: str, width: int, height: int) -> None:
        super().__init__(fmt, width, height)
        self.fmt, self.width, self.height = fmt, width, height


def _prepare_and_save(data: bytes, avatar_dir: Path, max_pixels: int) -> dict[str, Any]:
    """On a worker thread: detect and rig the face, write the files; returns the rig. An image
    whose header declares more than `max_pixels` is refused before it is decoded (a 75 KB
    JPEG may declare 49 megapixels: ~270 MB decoded)."""
    from agenthuman_local.engine import faces

    header = faces.image_dimensions(data)
    if header is not None and header[1] * header[2] > max_pixels:
        raise _TooManyPixels(*header)
    try:
        prepared = faces.prepare_face(data)
    except faces.FaceError as exc:
        raise _FACE_ERRORS.get(exc.code, BadRequest)(
            exc.message, suggestion=exc.suggestion
        ) from exc
    staging = staging_dir(avatar_dir)
    try:
        faces.save_avatar(prepared, staging)
        staging.rename(avatar_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageUnavailable(f"Could not write the avatar's files: {exc.strerror}") from exc
    rig: dict[str, Any] = json.loads(prepared.rig.to_json())
    return rig


async def _upload_inputs(request: web.Request) -> tuple[list[tuple[str, bytes | str]], str]:
    """The image inputs the request gives (field, value), in INPUTS order, and the name."""
    fields: dict[str, bytes | str]
    if request.content_type == "multipart/form-data":
        try:
            fields = await multipart_fields(
                request,
                (*INPUTS[1:], "name"),
                max_file_bytes=MAX_UPLOAD_BYTES,
                file_too_large=_too_large,
                max_name_chars=MAX_NAME_CHARS,
            )
        except ValueError as exc:  # aiohttp: no boundary, or a body that does not follow it
            raise ValidationError("body", "is not a valid multipart form") from exc
    elif request.content_type == "application/x-www-form-urlencoded":
        fields = await urlencoded_fields(request)
    else:
        body = await json_object(request, image=True)
        fields = {
            k: text for k in (*INPUTS[1:], "name") if (text := optional_str(body, k)) is not None
        }
    found: list[tuple[str, bytes | str]] = []
    for field in INPUTS:
        value = fields.get(field)
        if isinstance(value, str):
            value = value.strip()
        if value is not None and (isinstance(value, bytes) or value):
            found.append((field, value))
    raw_name = fields.get("name")
    name = raw_name.strip() if isinstance(raw_name, str) else ""
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError("name", f"must be at most {MAX_NAME_CHARS} characters")
    return found, name or DEFAULT_UPLOAD_NAME
