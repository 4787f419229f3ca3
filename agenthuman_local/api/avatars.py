"""Avatar routes: the catalogue an account can use (public avatars, then its own)."""

from __future__ import annotations

from aiohttp import web

from agenthuman_local import keys
from agenthuman_local.api.objects import avatar_json
from agenthuman_local.avatars import resolve_alias
from agenthuman_local.errors import AvatarNotFound
from agenthuman_local.records import Avatar


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
