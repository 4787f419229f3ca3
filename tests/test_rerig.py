"""Photo avatars rigged by version 1 (Haar) are re-rigged from their stored image in the
background after start-up (migration 3, `agenthuman_local.rerig`), on real SQLite in tmp_path.
One the face mesh refuses keeps its old rig, logged and recorded; nothing is lost."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data

from agenthuman_local import keys
from agenthuman_local.engine.rig import MeshRig
from agenthuman_local.engine.rig_haar import (
    HaarRig,
    detect_faces,
    equalised_gray,
    find_rig,
    haar_view,
    load_rig,
)
from agenthuman_local.migrations import MIGRATIONS
from agenthuman_local.paths import DB_FILE
from agenthuman_local.rerig import _rerig_one, rerig_avatars
from agenthuman_local.store import Store
from tests import photos
from tests.old_database import database_at


def v1_rig() -> HaarRig:
    """The rig the Haar pipeline stored for the astronaut (face box as Haar found it)."""
    rgb = photos.astronaut()
    return find_rig(rgb, detect_faces(equalised_gray(rgb))[0])


def write_v1_avatar(data_dir: Path, avatar_id: str, rgb: np.ndarray, rig: HaarRig) -> Path:
    avatar_dir = data_dir / "avatars" / avatar_id
    avatar_dir.mkdir(parents=True)
    assert cv2.imwrite(str(avatar_dir / "image.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(str(avatar_dir / "preview.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (avatar_dir / "rig.json").write_text(rig.to_json())
    return avatar_dir


async def add_v1_avatar(store: Store, data_dir: Path, rgb: np.ndarray, name: str) -> str:
    account = await store.ensure_account("me")
    rig = v1_rig()
    avatar = await store.create_avatar(
        account_id=account,
        name=name,
        image_path="placeholder",
        rig=json.loads(rig.to_json()),
    )
    write_v1_avatar(data_dir, avatar.avatar_id, rgb, rig)
    async with store._write() as tx:
        await tx.run(
            "UPDATE avatars SET image_path = ?, preview_path = ? WHERE avatar_id = ?",
            (
                f"avatars/{avatar.avatar_id}/image.jpg",
                f"avatars/{avatar.avatar_id}/preview.jpg",
                avatar.avatar_id,
            ),
        )
    return avatar.avatar_id


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    (tmp_path / "data").mkdir()
    st = await Store.open(tmp_path / "data" / DB_FILE)
    yield st
    await st.close()


async def test_v1_avatars_are_rerigged_and_a_refused_one_keeps_its_rig(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    face_id = await add_v1_avatar(store, data_dir, photos.astronaut(), "Astro")
    cup_id = await add_v1_avatar(store, data_dir, skimage.data.coffee(), "Cup")
    old_text = (data_dir / "avatars" / face_id / "rig.json").read_text()
    cup_text = (data_dir / "avatars" / cup_id / "rig.json").read_text()

    with caplog.at_level(logging.WARNING, logger="agenthuman_local.rerig"):
        report = await rerig_avatars(store, data_dir)
    assert report.rigged == [face_id]
    assert list(report.kept) == [cup_id] and report.kept[cup_id].startswith("refused: NO_FACE")
    assert any(
        cup_id in r.getMessage() and "keeps its version-1 rig" in r.getMessage()
        for r in caplog.records
    )

    # The face: the row and rig.json hold the same version-2 rig; the old one is kept beside.
    face_dir = data_dir / "avatars" / face_id
    row = await store.get_avatar(face_id)
    assert row is not None and row.rig is not None and row.rig["version"] == 2
    on_disk = load_rig((face_dir / "rig.json").read_text())
    assert isinstance(on_disk, MeshRig)
    assert json.loads(on_disk.to_json()) == json.loads(
        MeshRig.from_json(json.dumps(row.rig)).to_json()
    )
    assert (face_dir / "rig.v1.json").read_text() == old_text
    assert abs(haar_view(on_disk).mouth_x - 224) < 6  # on her mouth
    assert await store.rerig_outcome(face_id) == (2, "rigged")

    # The refused one: its old rig everywhere, the attempt recorded, and not tried again.
    cup = await store.get_avatar(cup_id)
    assert cup is not None and cup.rig == json.loads(cup_text)
    assert (data_dir / "avatars" / cup_id / "rig.json").read_text() == cup_text
    assert isinstance(load_rig(cup_text), HaarRig)
    outcome = await store.rerig_outcome(cup_id)
    assert outcome is not None and outcome[0] == 2 and outcome[1].startswith("refused: NO_FACE")
    again = await rerig_avatars(store, data_dir)
    assert again.rigged == [] and again.kept == {}


async def test_an_avatar_deleted_meanwhile_gets_its_old_rig_file_back(
    store: Store, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    face_id = await add_v1_avatar(store, data_dir, photos.astronaut(), "Astro")
    avatar = await store.get_avatar(face_id)
    assert avatar is not None
    old_text = (data_dir / "avatars" / face_id / "rig.json").read_text()
    await store.delete_avatar(face_id)  # the row goes, the files are still there
    why = await _rerig_one(store, data_dir, avatar, 2)
    assert why.startswith("gone")
    assert (data_dir / "avatars" / face_id / "rig.json").read_text() == old_text


async def test_migration_3_keeps_v1_photo_rows_and_finds_them(tmp_path: Path) -> None:
    """A database left at migration 2 with a version-1 photo row opens at 3 and lists it."""
    path = tmp_path / "v2.db"
    conn = database_at(path, 2)
    rig = v1_rig().to_json()
    rows = [
        ("avat_old", "acct_1", "photo", "Old", "[]", 0, 1.0, "a/i.jpg", "a/p.jpg", rig),
        (
            "avat_new",
            "acct_1",
            "photo",
            "New",
            "[]",
            0,
            2.0,
            "b/i.jpg",
            "b/p.jpg",
            json.dumps({"version": 2}),
        ),
        ("avat_local_ada", None, "procedural", "Ada", "[]", 1, 0.5, None, None, '{"style":"a"}'),
    ]
    conn.executemany("INSERT INTO avatars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()

    st = await Store.open(path)
    try:
        assert await st.schema_version() == len(MIGRATIONS) >= 3
        old = await st.get_avatar("avat_old")
        assert old is not None and old.rig == json.loads(rig)
        assert [a.avatar_id for a in await st.avatars_to_rerig(2)] == ["avat_old"]
        await st.record_rerig("avat_old", 2, "refused: NO_FACE")
        assert await st.avatars_to_rerig(2) == []
        assert [a.avatar_id for a in await st.avatars_to_rerig(3)] == ["avat_old", "avat_new"]
    finally:
        await st.close()


async def test_the_server_rerigs_in_the_background_after_start_up(
    make_client: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    st = await Store.open(data_dir / DB_FILE)
    try:
        face_id = await add_v1_avatar(st, data_dir, photos.astronaut(), "Astro")
    finally:
        await st.close()
    api = await make_client()
    report = await api.app[keys.rerig_task_key]
    assert report is not None and report.rigged == [face_id]
    row = await api.app[keys.store_key].get_avatar(face_id)
    assert row is not None and row.rig is not None and row.rig["version"] == 2
    # The avatar still serves its images and is listed as before.
    response = await api.get(f"/v1/avatars/{face_id}/image")
    assert response.status == 200


async def test_missing_face_models_stop_start_up_naming_the_fix(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from agenthuman_local.engine import facemesh

    def missing(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(facemesh.importlib.metadata, "distribution", missing)
    with pytest.raises(facemesh.ModelMissing, match="make install"):
        await make_client()
