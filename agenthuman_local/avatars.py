"""The avatar catalogue as data: the shipped public avatars and the ids that alias the default.

Shipped avatars are procedural (drawn by the engine, no assets); their `rig` names the style the
procedural renderer draws. The ids the published clients default to, and `AGENTHUMAN_AVATAR`
when set, resolve to the default avatar (SPEC §3). No I/O here: `app.py` writes these rows.
Plug-in avatars (SPEC §9, ids `avat_plugin_<name>`) are written by `engine/slot.py` once the
engine has verified their folders (`plugin_avatar`).
"""

from __future__ import annotations

from collections.abc import Mapping

from agenthuman_local.records import Avatar

DEFAULT_AVATAR_ID = "avat_local_ada"
# Defaults of the LiveKit plugin and of the Pipecat service (research/agenthuman-api.md §4).
CLIENT_DEFAULT_IDS = frozenset(
    {"avat_01KMZJ4WE5QCD9G3EK21QW8NJK", "avat_01KMZHXFPBVCXA5ATK85HCP8G1"}
)
AVATAR_ENV = "AGENTHUMAN_AVATAR"
# A fixed creation time (2026-01-01) so the shipped avatars list the same on every machine.
_SHIPPED_AT = 1767225600.0
# The shipped avatars, written once: (id, name, the procedural style it draws). The engine's
# styles (`engine.procedural_styles`) and names (`engine.engine`) are read from here.
SHIPPED_ROSTER: tuple[tuple[str, str, str], ...] = (
    (DEFAULT_AVATAR_ID, "Ada", "ada"),
    ("avat_local_ben", "Ben", "ben"),
)

SHIPPED_AVATARS: tuple[Avatar, ...] = tuple(
    Avatar(
        avatar_id=avatar_id,
        account_id=None,
        kind="procedural",
        name=name,
        tags=("public", "procedural"),
        is_public=True,
        created_at=_SHIPPED_AT,
        image_path=None,
        preview_path=None,
        rig={"style": style},
    )
    for avatar_id, name, style in SHIPPED_ROSTER
)


PLUGIN_AVATAR_PREFIX = "avat_plugin_"
# A plug-in row's kind (migration 2 in migrations.py); `rig` names the plug-in.
PLUGIN_ROW_KIND = "plugin"


def is_plugin_avatar(avatar: Avatar) -> bool:
    return avatar.kind == PLUGIN_ROW_KIND


def plugin_avatar(avatar_id: str, plugin_name: str) -> Avatar:
    """The public avatar row of a verified plug-in; `rig` names the plug-in."""
    return Avatar(
        avatar_id=avatar_id,
        account_id=None,
        kind=PLUGIN_ROW_KIND,
        name=plugin_name,
        tags=("public", "plugin"),
        is_public=True,
        created_at=_SHIPPED_AT,
        image_path=None,
        preview_path=None,
        rig={"plugin": plugin_name},
    )


def default_aliases(environ: Mapping[str, str]) -> frozenset[str]:
    """Every id that means 'the default avatar' on this server."""
    extra = environ.get(AVATAR_ENV, "").strip()
    return CLIENT_DEFAULT_IDS | ({extra} if extra else set())


def resolve_alias(avatar_id: str | None, aliases: frozenset[str]) -> str:
    """No avatar or an alias → the default avatar's id; anything else unchanged."""
    if avatar_id is None or avatar_id in aliases:
        return DEFAULT_AVATAR_ID
    return avatar_id
