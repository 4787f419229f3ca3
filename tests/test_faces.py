"""The upload-face pipeline on a real photograph (skimage's astronaut) and its refusals."""

from __future__ import annotations

import base64
import struct

import cv2
import numpy as np
import pytest
import skimage.data

from agenthuman_local.engine.facemesh import detect_faces
from agenthuman_local.engine.faces import (
    FaceError,
    FaceTooSmall,
    ImageTooLarge,
    MultipleFaces,
    NoFace,
    NotAnImage,
    decode_data_uri,
    face_width,
    find_faces,
    image_dimensions,
    prepare_face,
    save_avatar,
)
from agenthuman_local.engine.rig import MeshRig
from agenthuman_local.engine.rig_haar import HaarRig, haar_view, load_rig
from tests import photos
from tests.photos import encode


@pytest.fixture(scope="module", name="astronaut")
def astronaut_fixture() -> np.ndarray:
    return photos.astronaut()


def assert_sensible_rig(mesh_rig: MeshRig) -> None:
    # Checked on the boxes and lip line the mesh implies (the version-1 geometry).
    rig = haar_view(mesh_rig)
    face = rig.face
    assert 0 <= face.x and face.x + face.w <= rig.image_width
    assert 0 <= face.y and face.y + face.h <= rig.image_height
    left, right = rig.left_eye, rig.right_eye
    assert left.cx < face.cx < right.cx
    for eye in (left, right):
        assert face.y < eye.cy < face.y + 0.6 * face.h
    eyes_y = (left.cy + right.cy) / 2
    assert eyes_y < rig.lip_y < rig.chin_y
    assert face.x < rig.mouth_x < face.x + face.w
    assert face.y + 0.5 * face.h < rig.lip_y < face.y + face.h
    assert 0.2 * face.w < rig.mouth_width < 0.7 * face.w
    assert left.cx - 0.2 * face.w < rig.mouth_x - rig.mouth_width / 2
    assert rig.mouth_x + rig.mouth_width / 2 < right.cx + 0.2 * face.w


def test_astronaut_is_rigged_where_her_face_is(astronaut: np.ndarray) -> None:
    prepared = prepare_face(encode(astronaut))
    assert prepared.image.shape == astronaut.shape
    assert prepared.preview.shape == (500, 500, 3)
    assert_sensible_rig(prepared.rig)
    assert prepared.rig.teeth_at_rest and prepared.rig.lips_apart_at_rest
    rig = haar_view(prepared.rig)
    assert rig.eyes_from == "mesh"
    assert rig.mouth_from == "mesh"
    # Measured by eye on the photo: she smiles with her upper teeth showing; the mouth opens
    # under them at about y = 148, centred near x = 224, corner to corner about 42 px.
    assert rig.teeth_visible
    assert abs(rig.lip_y - 148) <= 4
    assert abs(rig.mouth_x - 224) <= 4
    assert 34 <= rig.mouth_width <= 50
    assert 168 <= rig.chin_y <= 186


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(astronaut: np.ndarray) -> None:
    """Phones store a portrait sideways and say in EXIF how to turn it (orientation 6: 90°
    clockwise): the avatar is the upright face, rigged where it is, as a viewer shows it."""
    import io

    from PIL import Image

    stored = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1)))  # sideways on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    prepared = prepare_face(buf.getvalue())
    assert prepared.image.shape == astronaut.shape
    assert_sensible_rig(prepared.rig)
    upright = prepare_face(encode(astronaut)).rig
    assert np.abs(prepared.rig.landmarks[:, :2] - upright.landmarks[:, :2]).max() < 6.0


def test_preview_is_centred_on_the_face(astronaut: np.ndarray) -> None:
    prepared = prepare_face(encode(astronaut, ".png"))
    gray = cv2.cvtColor(prepared.preview, cv2.COLOR_RGB2GRAY)
    faces = cv2.CascadeClassifier(
        cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml"
    ).detectMultiScale(gray, 1.1, 5, minSize=(80, 80))
    assert len(faces) == 1
    x, y, w, h = faces[0]
    assert abs(x + w / 2 - 250) < 50
    assert abs(y + h / 2 - 250) < 70


@pytest.mark.parametrize("ext", [".png", ".webp"])
def test_png_and_webp_give_the_same_face(astronaut: np.ndarray, ext: str) -> None:
    jpeg = prepare_face(encode(astronaut)).rig
    other = prepare_face(encode(astronaut, ext)).rig
    assert abs(other.face.cx - jpeg.face.cx) <= 3
    assert abs(haar_view(other).lip_y - haar_view(jpeg).lip_y) <= 3
    assert_sensible_rig(other)


def test_a_wide_photo_is_resized_to_1200_and_rigged_at_that_size(astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (1600, 1600), interpolation=cv2.INTER_CUBIC)
    prepared = prepare_face(encode(big))
    assert prepared.image.shape == (1200, 1200, 3)
    rig = prepared.rig
    assert (rig.image_width, rig.image_height) == (1200, 1200)
    assert_sensible_rig(rig)
    assert abs(haar_view(rig).lip_y - 148 * 1200 / 512) <= 10


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is text and not a picture",
        np.random.default_rng(0).bytes(20_000),
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,  # a PNG signature and nothing valid after it
    ],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage) as info:
        prepare_face(data)
    assert info.value.code == "NOT_AN_IMAGE"
    assert "image" in info.value.message


def gradient() -> np.ndarray:
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    return np.repeat(np.stack([ramp, ramp * 0.8, 255 - ramp], -1)[None], 480, 0).astype(np.uint8)


def landscape() -> np.ndarray:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.empty((480, 640, 3), np.float32)
    sky = np.array([120, 175, 230], np.float32) + (yy[..., None] / 480) * 60
    img[:] = sky
    hills = yy > 280 + 50 * np.sin(xx / 70.0) + 20 * np.sin(xx / 23.0)
    img[hills] = np.array([60, 120, 45], np.float32)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("make", [gradient, landscape, skimage.data.coffee])
def test_no_face(make) -> None:
    with pytest.raises(NoFace) as info:
        prepare_face(encode(make()))
    assert info.value.code == "NO_FACE"


def test_face_too_small(astronaut: np.ndarray) -> None:
    canvas = np.full((2000, 2000, 3), 205, np.uint8)
    canvas[700:1212, 700:1212] = astronaut
    with pytest.raises(FaceTooSmall) as info:
        prepare_face(encode(canvas))
    assert info.value.code == "FACE_TOO_SMALL"
    assert "15%" in info.value.message


def test_multiple_faces(astronaut: np.ndarray) -> None:
    head = astronaut[0:300, 90:360]
    two = np.concatenate([head, head], axis=1)
    with pytest.raises(MultipleFaces) as info:
        prepare_face(encode(two))
    assert info.value.code == "MULTIPLE_FACES"
    assert "2 faces" in info.value.message


def test_a_much_smaller_second_face_does_not_count(astronaut: np.ndarray) -> None:
    canvas = np.full((400, 400, 3), 200, np.uint8)
    canvas[:, :300] = astronaut[0:400, 100:400]
    canvas[250:310, 320:380] = cv2.resize(astronaut[30:230, 124:324], (60, 60), cv2.INTER_AREA)
    # The detector does see both faces; the second is about a third of the first one's width,
    # under the 40 % rule, so it does not count.
    widths = [f.box.w for f in detect_faces(canvas, full_range=True)]
    assert len(widths) == 2 and widths[1] < 0.4 * widths[0]
    rig = prepare_face(encode(canvas)).rig
    assert abs(rig.face.cx - 124) < 10


def test_every_refusal_is_a_face_error_with_a_spec_code() -> None:
    codes = {cls.code for cls in (NotAnImage, NoFace, MultipleFaces, FaceTooSmall)}
    assert codes == {"NOT_AN_IMAGE", "NO_FACE", "MULTIPLE_FACES", "FACE_TOO_SMALL"}
    for cls in (NotAnImage, NoFace, MultipleFaces, FaceTooSmall):
        assert issubclass(cls, FaceError)
        assert cls("x").suggestion


def test_decode_data_uri_with_and_without_prefix(astronaut: np.ndarray) -> None:
    data = encode(astronaut, ".png")
    b64 = base64.b64encode(data).decode()
    assert decode_data_uri(b64) == data
    assert decode_data_uri("data:image/png;base64," + b64) == data
    wrapped = "data:image/jpeg;base64,\n" + "\n".join(
        b64[i : i + 76] for i in range(0, len(b64), 76)
    )
    assert decode_data_uri(wrapped) == data
    with pytest.raises(NotAnImage):
        decode_data_uri("data:image/png;base64,not*base64!")


def test_save_avatar_writes_image_preview_and_rig(astronaut: np.ndarray, tmp_path) -> None:
    prepared = prepare_face(encode(astronaut))
    save_avatar(prepared, tmp_path / "avat_x")
    names = sorted(p.name for p in (tmp_path / "avat_x").iterdir())
    assert names == ["image.jpg", "preview.jpg", "rig.json"]
    image = cv2.imread(str(tmp_path / "avat_x" / "image.jpg"))
    preview = cv2.imread(str(tmp_path / "avat_x" / "preview.jpg"))
    assert image.shape == (512, 512, 3)
    assert preview.shape == (500, 500, 3)
    rig = load_rig((tmp_path / "avat_x" / "rig.json").read_text())
    assert isinstance(rig, MeshRig)
    assert rig.to_json() == prepared.rig.to_json()


def test_rig_json_round_trip_and_version_check(astronaut: np.ndarray) -> None:
    rig = prepare_face(encode(astronaut)).rig
    assert MeshRig.from_json(rig.to_json()).to_json() == rig.to_json()
    with pytest.raises(ValueError, match="version"):
        MeshRig.from_json(rig.to_json().replace('"version":2', '"version":99'))
    # The version-1 reader takes a version-2 rig as the geometry it implies.
    stored = rig.to_json()
    assert HaarRig.from_json(stored) == haar_view(MeshRig.from_json(stored))
    assert abs(HaarRig.from_json(stored).lip_y - haar_view(rig).lip_y) < 0.01
    with pytest.raises(ValueError, match="version"):
        HaarRig.from_json(rig.to_json().replace('"version":2', '"version":99'))


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_header_dimensions_match_the_decoded_image(astronaut: np.ndarray, ext: str) -> None:
    data = encode(astronaut[:300, :450], ext)
    fmt, width, height = image_dimensions(data)
    assert (width, height) == (450, 300)
    assert fmt == {".jpg": "jpeg", ".png": "png", ".webp": "webp"}[ext]


def test_lossless_webp_header() -> None:
    ok, buf = cv2.imencode(
        ".webp", np.zeros((37, 61, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101]
    )
    assert ok
    assert image_dimensions(buf.tobytes())[1:] == (61, 37)


def test_a_huge_canvas_is_refused_before_decoding() -> None:
    # A valid PNG header claiming 20000×20000 pixels: a few bytes that would decode to 1.2 GB.
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4
    with pytest.raises(ImageTooLarge) as info:
        prepare_face(data)
    assert info.value.code == "VALIDATION_ERROR"
    assert "20000×20000" in info.value.message


def test_other_image_formats_are_not_accepted(astronaut: np.ndarray) -> None:
    with pytest.raises(NotAnImage, match="JPEG, PNG or WebP"):
        prepare_face(encode(astronaut, ".bmp"))


def with_second_face(astronaut: np.ndarray, ratio: float) -> np.ndarray:
    """Her head on the left and a copy scaled by `ratio` on the right (face widths)."""
    canvas = np.full((400, 520, 3), 200, np.uint8)
    canvas[:, :300] = astronaut[0:400, 80:380]
    head = astronaut[20:260, 100:350]
    small = cv2.resize(head, None, fx=ratio, fy=ratio, interpolation=cv2.INTER_AREA)
    canvas[60 : 60 + small.shape[0], 330 : 330 + small.shape[1]] = small
    return canvas


@pytest.mark.parametrize("ratio", [0.45, 0.35])
def test_a_second_face_counts_from_40_percent_of_the_first(
    astronaut: np.ndarray, ratio: float
) -> None:
    canvas = with_second_face(astronaut, ratio)
    # Both faces are found and measured cheek to cheek on the mesh.
    faces = find_faces(canvas)
    assert len(faces) == 2
    assert face_width(faces[1]) / face_width(faces[0]) == pytest.approx(ratio, abs=0.03)
    if ratio >= 0.4:
        with pytest.raises(MultipleFaces, match="2 faces"):
            prepare_face(encode(canvas))
    else:
        rig = prepare_face(encode(canvas)).rig
        assert abs(rig.face.cx - (224 - 80)) < 10  # the larger face, not the small one
