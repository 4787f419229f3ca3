"""The upload-face pipeline (SPEC §5 `POST /avatars/upload-face`) as a pure library.

Bytes in → a decoded, checked, resized photo with its 500×500 preview and its rig, or a typed
refusal whose `code` is the SPEC §4 error code (NOT_AN_IMAGE, NO_FACE, MULTIPLE_FACES,
FACE_TOO_SMALL; VALIDATION_ERROR for a canvas over 50 megapixels). No aiohttp here: the route
maps the exceptions to 400s. CPU-bound (detection, mesh and rig take ~0.1–0.4 s): run it off
the event loop.

Faces are MediaPipe's (engine.facemesh): candidates from the short-range detector and the
full-range one (on the whole photo and on overlapping half-size tiles, so small faces are
found too), each confirmed by the face mesh on the whole photo. A face's width is its mesh's
cheek-to-cheek distance (landmarks 234 ↔ 454).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agenthuman_local.engine import facemesh
from agenthuman_local.engine.facemesh import FaceDetection, FaceMesh
from agenthuman_local.engine.rig import Box, MeshRig, build_rig

MAX_IMAGE_WIDTH_PX = 1200
MAX_IMAGE_PIXELS = 50_000_000
PREVIEW_SIZE_PX = 500
MIN_FACE_FRACTION = 0.15  # of the image width
SECOND_FACE_FRACTION = 0.4  # of the largest face's width
# The full-range detector finds faces down to ~6 % of the frame's long side; run on tiles half
# the photo's long side (overlapping by half), it finds them down to ~3 %: every face that could
# count as a second one (≥ 40 % of a face ≥ 15 % wide) and faces too small to accept.
_TILE_FRACTION = 0.5
_MAX_CANDIDATES = 8  # detections meshed, best score first
_SAME_FACE_IOU = 0.3
_DATA_URI = re.compile(r"^\s*data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)


class FaceError(Exception):
    """The photo cannot become an avatar; `code` is the SPEC §4 error code."""

    code = "VALIDATION_ERROR"
    suggestion = "Upload a well-lit, front-facing photo of one person."

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageTooLarge(FaceError):
    """Too many pixels to decode safely (a small file can claim a huge canvas)."""

    suggestion = "Resize the photo to at most 50 megapixels."


class NotAnImage(FaceError):
    code = "NOT_AN_IMAGE"
    suggestion = "Send a JPEG, PNG or WebP image."


class NoFace(FaceError):
    code = "NO_FACE"


class MultipleFaces(FaceError):
    code = "MULTIPLE_FACES"
    suggestion = "Crop the photo so that only one person's face is in it."


class FaceTooSmall(FaceError):
    code = "FACE_TOO_SMALL"
    suggestion = "Crop the photo closer to the face."


@dataclass(frozen=True)
class PreparedFace:
    """A photo ready to save as an avatar: RGB uint8 arrays and the rig in `image`'s pixels."""

    image: np.ndarray  # [H, W, 3], W ≤ 1200
    preview: np.ndarray  # [500, 500, 3]
    rig: MeshRig


def decode_data_uri(text: str) -> bytes:
    """The bytes of a base64 image, with or without a `data:image/…;base64,` prefix."""
    body = _DATA_URI.sub("", text, count=1)
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotAnImage("image_base64 is not valid base64") from exc


def image_dimensions(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) read from a JPEG, PNG or WebP header, or None for anything else.

    Read before decoding so that a few kilobytes claiming a gigapixel canvas are refused
    instead of exhausting memory.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return "webp", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            return "webp", w, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 < len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
                pos += 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return "jpeg", w, h
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _decode(data: bytes) -> np.ndarray:
    header = image_dimensions(data)
    if header is None:
        raise NotAnImage("The file is not a JPEG, PNG or WebP image")
    fmt, width, height = header
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"The {fmt} image is {width}×{height} pixels; the limit is "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None or bgr.ndim != 3 or min(bgr.shape[:2]) < 16:
        raise NotAnImage("The file is not a JPEG, PNG or WebP image that can be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _fit_width(rgb: np.ndarray, max_width_px: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    if w <= max_width_px:
        return rgb, 1.0
    scale = max_width_px / w
    size = (max_width_px, max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _iou(a: Box, b: Box) -> float:
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0.0, w) * max(0.0, h)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def _shifted(found: FaceDetection, dx: float, dy: float) -> FaceDetection:
    box = found.box
    return FaceDetection(
        Box(box.x + dx, box.y + dy, box.w, box.h),
        found.score,
        (found.keypoints + np.array([dx, dy], np.float32)).astype(np.float32),
    )


def _candidates(rgb: np.ndarray) -> list[FaceDetection]:
    """Detections from both detectors, whole photo and tiles, overlapping ones merged."""
    h, w = rgb.shape[:2]
    found = facemesh.detect_faces(rgb) + facemesh.detect_faces(rgb, full_range=True)
    tile = round(max(h, w) * _TILE_FRACTION)
    if tile >= 64:
        step = tile // 2
        for y in range(0, max(1, h - step), step):
            for x in range(0, max(1, w - step), step):
                part = rgb[y : y + tile, x : x + tile]
                if min(part.shape[:2]) >= 32:
                    found += [
                        _shifted(d, x, y) for d in facemesh.detect_faces(part, full_range=True)
                    ]
    kept: list[FaceDetection] = []
    for cand in sorted(found, key=lambda d: d.score, reverse=True):
        if all(_iou(cand.box, k.box) <= _SAME_FACE_IOU for k in kept):
            kept.append(cand)
    return kept[:_MAX_CANDIDATES]


def face_width(mesh: FaceMesh) -> float:
    """Cheek to cheek (mesh landmarks 234 ↔ 454), in pixels."""
    a, b = mesh.landmarks[234, :2], mesh.landmarks[454, :2]
    return float(np.hypot(*(b - a)))


def _mesh_box(mesh: FaceMesh) -> Box:
    (x0, y0), (x1, y1) = mesh.landmarks[:, :2].min(0), mesh.landmarks[:, :2].max(0)
    return Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def find_faces(rgb: np.ndarray) -> list[FaceMesh]:
    """Every face the mesh confirms in an RGB photo, widest (cheek to cheek) first."""
    meshes: list[FaceMesh] = []
    for cand in _candidates(rgb):
        mesh = facemesh.face_mesh(rgb, cand)
        if mesh is None:
            continue
        box = _mesh_box(mesh)
        # Two detections of one face (a tile's partial view, both detectors) give one mesh.
        if all(_iou(box, _mesh_box(m)) <= _SAME_FACE_IOU for m in meshes):
            meshes.append(mesh)
    return sorted(meshes, key=face_width, reverse=True)


def _the_face(rgb: np.ndarray) -> FaceMesh:
    """The one face SPEC §5 asks for, or the refusal that applies."""
    faces = find_faces(rgb)
    if not faces:
        raise NoFace("No face was found in the photo")
    largest = face_width(faces[0])
    counted = [f for f in faces if face_width(f) >= SECOND_FACE_FRACTION * largest]
    if len(counted) > 1:
        raise MultipleFaces(f"{len(counted)} faces were found; the photo must show exactly one")
    fraction = largest / rgb.shape[1]
    if fraction < MIN_FACE_FRACTION:
        raise FaceTooSmall(
            f"The face is {fraction:.0%} of the image width; it must be at least "
            f"{MIN_FACE_FRACTION:.0%}"
        )
    return faces[0]


def rig_photo(rgb: np.ndarray) -> MeshRig:
    """The version-2 rig of the one face in an RGB photo (its stored pixels), or a FaceError."""
    return build_rig(rgb, _the_face(np.ascontiguousarray(rgb)))


def _preview(rgb: np.ndarray, face: Box) -> np.ndarray:
    """A square crop centred on the face (head and a little shoulder), resized to 500×500."""
    h, w = rgb.shape[:2]
    side = int(min(h, w, round(face.w * 2.4)))
    x0 = int(np.clip(round(face.cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(face.cy + face.h * 0.1 - side / 2), 0, h - side))
    crop = rgb[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > PREVIEW_SIZE_PX else cv2.INTER_CUBIC
    return cv2.resize(crop, (PREVIEW_SIZE_PX, PREVIEW_SIZE_PX), interpolation=interp)


def prepare_face(data: bytes) -> PreparedFace:
    """Decode, check and rig one uploaded photo (jpeg/png/webp bytes).

    Raises NotAnImage, NoFace, MultipleFaces or FaceTooSmall (all FaceError).
    """
    rgb, _ = _fit_width(_decode(data), MAX_IMAGE_WIDTH_PX)
    rgb = np.ascontiguousarray(rgb)
    # The rig is found on the pixels that are stored (the resized photo), not the upload.
    rig = rig_photo(rgb)
    return PreparedFace(image=rgb, preview=_preview(rgb, rig.face), rig=rig)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
    )
    if not ok:
        raise OSError(f"could not encode {path.name}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)


def save_avatar(prepared: PreparedFace, avatar_dir: Path) -> None:
    """Write image.jpg, preview.jpg and rig.json into `avatar_dir` (created if needed).

    Each file is written to a temporary name and renamed, so a reader never sees half a file;
    rig.json goes last, so its presence means the avatar is complete.
    """
    avatar_dir.mkdir(parents=True, exist_ok=True)
    _write_jpeg(avatar_dir / "image.jpg", prepared.image)
    _write_jpeg(avatar_dir / "preview.jpg", prepared.preview)
    tmp = avatar_dir / "rig.json.tmp"
    tmp.write_text(prepared.rig.to_json())
    tmp.replace(avatar_dir / "rig.json")
