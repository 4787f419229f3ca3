"""Displacement fields of the mesh photo avatar (rig version 2), built once per renderer.

Everything lives in the coordinates of the rendered crop: `x`, `y` are crop pixel indices (pixel
centres at integers). A field says how far the content at an output pixel moved, in pixels: the
output pixel p shows the source pixel p − d(p). Fields are multiplied by a window that is zero on
the crop's border, so the crop always meets the cached background without a seam.

Each driver parameter at unit strength moves the mesh's vertices (`vertex_moves`); the moves
become a dense field by piecewise-affine interpolation over the rig's own triangulation, solved
once here, so a frame only mixes fields linearly (SPEC §9). The lips part along a split line,
the midline between the inner lip contours: two fields are interpolated, one for what lies above
the line (the upper lip stays) and one for below (the lower lip, chin and jaw drop), and differ
only in the triangles that touch the inner lips; a frame uses the upper one above the line
inside the mouth and the lower one everywhere else. The opening between the two is what
`photo_cavity` fills.

Around the mouth (`photo_jaw`) the jaw's moves are computed per pixel (the lens across the
mouth, not a polyline through a dozen lip points), and both sides' jaw fields are read
backwards once here (where each output pixel comes from, by fixed-point steps), so each lip
point is drawn where the jaw moves it. Where a photo shows no upper teeth the upper lip's
inner edge rises a little as the jaw drops (`UPPER_LIFT`): the lips part both ways. How the
upper lip's edge moves over each column (`MeshFields.edge`) tells the cavity where the opening
now starts. The crop's geometry (lips, eyes, face axes) is `photo_geometry`'s.

Lengths are in face heights `fh` (forehead to chin on the mesh), which a turned head keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from agenthuman_local.engine.photo_geometry import MeshGeometry, smoothstep
from agenthuman_local.engine.photo_jaw import (
    JAW_DROP_FH,
    ROUND_NARROWING,
    exact_jaw,
    invert_jaw,
    jaw_moves,
    lens_profile,
    lift_upper,
    lip_line,
    lip_region,
)

__all__ = ["FACE_PARAMS", "JAW_DROP_FH", "MeshFields", "MeshGeometry", "build_fields"]

FACE_PARAMS = ("JAW_WIDE", "JAW_NARROW", "SPREAD", "ROUND", "CLOSURE", "BROW")


def vertex_moves(geo: MeshGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex displacements at unit strength: (below, above), each (K, N, 2) pixels.

    `below` is the field the lower face follows, `above` the upper lip's; they differ only at
    the inner lip vertices (each inner upper vertex takes its lower partner's move in `below`,
    each inner lower vertex its upper partner's in `above`).
    """
    v = geo.vertices
    n = len(v)
    fh, hw = geo.fh, geo.half_w
    a, b = geo.local(v)
    u = a / hw
    below = b - lip_line(geo, a)  # > 0 under the lip line
    lower_idx = set(geo.inner_lower[1:-1]) | set(geo.outer_lower[1:-1])
    upper_idx = set(geo.inner_upper[1:-1]) | set(geo.outer_upper[1:-1])
    is_lower = np.array(
        [(i in lower_idx) or (i < 468 and i not in upper_idx and below[i] > 0) for i in range(n)]
    )
    is_lower[468:] = False  # the crop's border never moves
    ey, ex = geo.ey, geo.ex
    corner_ids = [geo.inner_upper[0], geo.inner_upper[-1], geo.outer_upper[0], geo.outer_upper[-1]]

    def jaw(narrowing: float) -> np.ndarray:
        d = jaw_moves(geo, a, b, is_lower, narrowing)
        # The corners come down a little as the jaw opens.
        for i in corner_ids:
            d[i] = JAW_DROP_FH * fh * 0.04 * ey + (d[i] @ ex) * ex
        return d

    # Spread / round: the corners and the lips beside them move along the mouth.
    beyond = np.clip(np.abs(u) - 1.0, 0.0, None)
    env = np.clip(u, -1.0, 1.0) * np.exp(-(beyond**2) / 0.6) * np.exp(-((b / (0.12 * fh)) ** 2))
    spread = (0.2 * hw * env)[:, None] * ex - (0.016 * fh * np.abs(env))[:, None] * ey
    rnd = (-ROUND_NARROWING * 0.8 * hw * env)[:, None] * ex
    # Closure: the lower lip presses up into the line, the upper one down a touch.
    across = lens_profile(u, 0.0)
    bump = np.exp(-((below / (0.05 * fh)) ** 2)) * across
    closure = (np.where(is_lower, -0.014 * fh, 0.006 * fh) * bump)[:, None] * ey
    # Brows lift, the skin above the eyes with them.
    brow = np.zeros(n)
    for pts in geo.brows:
        ca, cb = geo.local(pts.mean(axis=0, keepdims=True))
        brow += np.exp(-(((a - ca) / (0.16 * fh)) ** 2)) * np.exp(-(((b - cb) / (0.1 * fh)) ** 2))
    brow_d = (-0.028 * fh * np.clip(brow, 0.0, 1.0))[:, None] * ey
    fields = np.stack([jaw(0.0), jaw(ROUND_NARROWING), spread, rnd, closure, brow_d])
    fields[:, 468:] = 0.0
    above = fields.copy()
    below_f = fields.copy()
    for iu, il in zip(geo.inner_upper[1:-1], geo.inner_lower[1:-1], strict=True):
        below_f[:, iu] = fields[:, il]
        above[:, il] = fields[:, iu]
    return below_f.astype(np.float32), above.astype(np.float32)


def piecewise_affine(
    vertices: np.ndarray, triangles: np.ndarray, values: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Interpolate per-vertex `values` (N, C) linearly inside each triangle → (H, W, C).

    Pixels no triangle covers get 0. Vertices are crop pixel indices (centres at integers).
    """
    label = np.full((height, width), -1, np.int32)
    fixed = np.round(vertices * 16.0).astype(np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillPoly(label, [fixed[tri].reshape(-1, 1, 2)], int(t), lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(label >= 0)
    owner = label[ys, xs]
    tri = triangles[owner]
    p0, p1, p2 = vertices[tri[:, 0]], vertices[tri[:, 1]], vertices[tri[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-6, 1e-6, det)
    qx, qy = xs - p0[:, 0], ys - p0[:, 1]
    w1 = (qx * e2[:, 1] - qy * e2[:, 0]) / det
    w2 = (e1[:, 0] * qy - e1[:, 1] * qx) / det
    w1, w2 = np.clip(w1, -0.5, 1.5), np.clip(w2, -0.5, 1.5)
    w0 = 1.0 - w1 - w2
    out = np.zeros((height, width, values.shape[1]), np.float32)
    out[ys, xs] = (
        w0[:, None] * values[tri[:, 0]]
        + w1[:, None] * values[tri[:, 1]]
        + w2[:, None] * values[tri[:, 2]]
    )
    return out


def border_window(width: int, height: int, share: float = 0.1) -> np.ndarray:
    """1 inside, falling smoothly to exactly 0 on the outermost pixels of the crop."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    margin = share * min(width, height)
    dist = np.minimum(np.minimum(x, width - 1 - x), np.minimum(y, height - 1 - y))
    return smoothstep(1.0, margin, dist)


@dataclass(frozen=True)
class MeshFields:
    face: torch.Tensor  # [K, H, W, 2] pixels, order FACE_PARAMS
    head: torch.Tensor  # [5, H, W, 2]: TX, TY, YAW, PITCH, ROLL
    head_at_mouth: torch.Tensor  # [5, 2]
    split: torch.Tensor  # [W] the split line's y per column
    edge: torch.Tensor  # [K, W, 2] how the upper lip's edge over each column moves (pixels)


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.3:
        return field
    flat = field.reshape(field.shape[0], field.shape[1], -1)
    out = cv2.GaussianBlur(flat, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    return out.reshape(field.shape)


def build_fields(geo: MeshGeometry) -> MeshFields:
    h, w = geo.height, geo.width
    below, above = vertex_moves(geo)
    k = below.shape[0]
    # One rasterisation for every parameter, both sides: values (N, 2K) each.
    vals = np.concatenate(
        [below.transpose(1, 0, 2).reshape(-1, 2 * k), above.transpose(1, 0, 2).reshape(-1, 2 * k)],
        axis=1,
    )
    dense = piecewise_affine(geo.vertices, geo.triangles, vals, h, w)
    # Soften the creases along triangle edges; each side is smooth across the split itself.
    dense = _smooth(dense, 0.006 * geo.fh)
    lower = dense[..., : 2 * k].reshape(h, w, k, 2)
    upper = dense[..., 2 * k :].reshape(h, w, k, 2)
    exact_jaw(geo, lower)
    region = lip_region(geo)
    invert_jaw(lower, region)
    edge = lift_upper(geo, upper)
    # The other parameters' moves of the upper lip's edge: the field on the row over the split.
    split = geo.split_table()
    over = upper[np.clip(np.floor(split).astype(np.int64), 0, h - 1), np.arange(w)]  # [W, K, 2]
    edge[2:] = over[:, 2:].transpose(1, 0, 2)
    invert_jaw(upper, region)
    split = geo.split_table()
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)
    sharp = np.clip(ys - split[None, :] + 0.5, 0.0, 1.0)  # 1 under the split line
    use_upper = (1.0 - sharp) * geo.mouth_weight(xs)[None, :]  # [H, W]
    face = lower + (upper - lower) * use_upper[:, :, None, None]
    # The face fields fade out twice as far in: the renderer shifts them with the head by up to
    # the outer margin, and they must still be zero on the border.
    face = (face * border_window(w, h, 0.2)[:, :, None, None]).transpose(2, 0, 1, 3)
    window = border_window(w, h)[:, :, None, None]

    # Head motion: the whole head slides and rolls inside the crop, the inner face a little
    # more for yaw and pitch (which reads as a turn); nothing moves at the crop's border.
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    (ox0, oy0), (ox1, oy1) = geo.oval.min(0), geo.oval.max(0)
    cx, cy = (ox0 + ox1) / 2, (oy0 + oy1) / 2 + 0.05 * geo.fh
    rx, ry = (ox1 - ox0) / 2 * 1.05, (oy1 - oy0) / 2 * 1.05

    def mask(scale: float) -> np.ndarray:
        r = np.sqrt(((x - cx) / (scale * rx)) ** 2 + ((y - cy) / (scale * ry)) ** 2)
        return 1.0 - smoothstep(1.0, 1.6, r)

    whole, inner = mask(1.0), mask(0.7)
    zero = np.zeros_like(x)
    unit = 0.028 * geo.fh  # about 0.07 eye distances
    px, py = float(geo.chin[0]), float(geo.chin[1]) + 0.12 * geo.fh
    roll = 0.045  # radians at ROLL = 1
    head = np.stack(
        [
            np.stack([unit * whole, zero], -1),
            np.stack([zero, unit * whole], -1),
            np.stack([1.3 * unit * inner, zero], -1),
            np.stack([zero, unit * inner], -1),
            np.stack([-roll * (y - py) * whole, roll * (x - px) * whole], -1),
        ]
    )
    head = head * window[None, :, :, 0]
    mi = int(round(min(max(float(geo.mouth[1]), 0), h - 1)))
    mj = int(round(min(max(float(geo.mouth[0]), 0), w - 1)))
    return MeshFields(
        face=torch.from_numpy(np.ascontiguousarray(face, np.float32)),
        head=torch.from_numpy(np.ascontiguousarray(head, np.float32)),
        head_at_mouth=torch.from_numpy(np.ascontiguousarray(head[:, mi, mj], np.float32)),
        split=torch.from_numpy(split),
        edge=torch.from_numpy(edge),
    )
