"""Re-rig photo avatars stored with an older rig version, in the background after start-up.

Each photo avatar whose row holds a rig older than `engine.rig.RIG_VERSION` is rigged again from
its stored image (`image.jpg`, the pixels the old rig was found on). On success the new rig
goes to rig.json (the old one is kept beside it as rig.v<N>.json) and then to the row; if the row
cannot take it (the avatar was deleted or changed meanwhile, or the write fails) the old
rig.json is put back, so file and row always agree once this returns. An avatar the new
detector refuses (or whose image cannot be read) keeps its old rig, is logged, and the attempt
is recorded (`rig_updates`) so it is not retried at every start. Nothing is deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agenthuman_local.records import Avatar
from agenthuman_local.store import Store

log = logging.getLogger(__name__)

RIG_FILE = "rig.json"


@dataclass
class RerigReport:
    rigged: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # avatar_id → why it kept its rig


def _new_rig(image: Path) -> tuple[dict[str, Any] | None, str]:
    """On a worker thread: (the new rig as a dict, "") or (None, why not)."""
    import cv2

    from agenthuman_local.engine import faces

    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if bgr is None:
        return None, f"error: {image.name} is missing or unreadable"
    try:
        rig = faces.rig_photo(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    except faces.FaceError as exc:
        return None, f"refused: {exc.code} ({exc.message})"
    parsed: dict[str, Any] = json.loads(rig.to_json())
    return parsed, ""


def _install(avatar_dir: Path, rig: dict[str, Any], old_version: int) -> Path | None:
    """Keep the current rig.json as rig.v<old>.json, write the new one; returns the backup."""
    current = avatar_dir / RIG_FILE
    backup = avatar_dir / f"rig.v{old_version}.json"
    if current.exists() and not backup.exists():
        tmp = backup.with_suffix(".tmp")
        tmp.write_bytes(current.read_bytes())
        tmp.replace(backup)
    tmp = avatar_dir / "rig.json.tmp"
    tmp.write_text(json.dumps(rig, separators=(",", ":")))
    tmp.replace(current)
    return backup if backup.exists() else None


def _restore(avatar_dir: Path, backup: Path | None) -> None:
    if backup is None or not avatar_dir.is_dir():
        return
    tmp = avatar_dir / "rig.json.tmp"
    tmp.write_bytes(backup.read_bytes())
    tmp.replace(avatar_dir / RIG_FILE)


async def _rerig_one(store: Store, data_dir: Path, avatar: Avatar, version: int) -> str:
    """ "" when re-rigged, else why the avatar keeps its rig."""
    assert avatar.image_path is not None
    image = data_dir / avatar.image_path
    avatar_dir = image.parent
    old_version = int((avatar.rig or {}).get("version") or 0)
    rig, why = await asyncio.to_thread(_new_rig, image)
    if rig is None:
        await store.record_rerig(avatar.avatar_id, version, why)
        return why
    try:
        backup = await asyncio.to_thread(_install, avatar_dir, rig, old_version)
    except OSError as exc:
        why = f"error: could not write {RIG_FILE}: {exc.strerror or exc}"
        await store.record_rerig(avatar.avatar_id, version, why)
        return why
    try:
        written = await store.replace_avatar_rig(avatar.avatar_id, old_version, rig)
    except BaseException:
        await asyncio.to_thread(_restore, avatar_dir, backup)
        raise
    if not written:
        await asyncio.to_thread(_restore, avatar_dir, backup)
        return "gone: the avatar was deleted or re-rigged meanwhile"
    return ""


async def rerig_avatars(store: Store, data_dir: Path) -> RerigReport:
    """Re-rig every photo avatar older than the current rig version; see the module docstring."""
    from agenthuman_local.engine.rig import RIG_VERSION

    report = RerigReport()
    for avatar in await store.avatars_to_rerig(RIG_VERSION):
        old = (avatar.rig or {}).get("version")
        try:
            why = await _rerig_one(store, data_dir, avatar, RIG_VERSION)
        except Exception as exc:  # one avatar's failure must not stop the others
            why = f"error: {type(exc).__name__}: {exc}"
            log.exception("avatar %s: re-rig failed", avatar.avatar_id)
        if why:
            report.kept[avatar.avatar_id] = why
            log.warning("avatar %s keeps its version-%s rig: %s", avatar.avatar_id, old, why)
        else:
            report.rigged.append(avatar.avatar_id)
            log.info("avatar %s re-rigged: version %s -> %d", avatar.avatar_id, old, RIG_VERSION)
    return report


async def rerig_in_background(store: Store, data_dir: Path) -> RerigReport | None:
    """`rerig_avatars`, or None (logged) if it stops: the next start tries again."""
    try:
        return await rerig_avatars(store, data_dir)
    except Exception:  # e.g. the database closed under it: the next start tries again
        log.exception("re-rigging photo avatars stopped")
        return None
