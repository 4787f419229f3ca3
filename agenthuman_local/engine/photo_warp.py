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

Around the mouth the jaw's moves are computed per pixel (the lens across the mouth, not a
polyline through a dozen lip points), and both sides' jaw fields are read backwards once here
(where each output pixel comes from, by fixed-point steps), so each lip point is drawn where
the jaw moves it. Where a photo shows no upper teeth the upper lip's inner edge rises a little
as the jaw drops (`UPPER_LIFT`): the lips part both ways. How the upper lip's edge moves over
each column (`MeshFields.edge`) tells the cavity where the opening now starts.

Lengths are in face heights `fh` (forehead to chin on the mesh), which a turned head keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from agenthuman_local.engine.rig import CHIN, FACE_OVAL, MeshRig

# Jaw drop at JAW = 1, in face heights (a wide "aa"; about 0.42 eye distances).
JAW_DROP_FH = 0.13
# Lateral narrowing of the opening at ROUND = 1 (fraction of the half width).
ROUND_NARROWING = 0.3
# The opening's ends: the drop across the mouth goes as (1 − u²)^this near each inner corner.
_CORNER_ROUNDING = 1.0
# How far the upper lip's inner edge rises as the jaw drops, as a share of the drop (the lips
# part both ways, so the opening is a lens, not a cut under a straight edge). None on a photo
# that shows its upper teeth: they hang from the skull, and the split runs under them.
UPPER_LIFT = 0.25
BROWS = (
    (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
)
FACE_PARAMS = ("JAW_WIDE", "JAW_NARROW", "SPREAD", "ROUND", "CLOSURE", "BROW")


def smoothstep(edge0: float, edge1: float, x: np.ndarray | torch.Tensor):  # type: ignore[no-untyped-def]
    t = ((x - edge0) / (edge1 - edge0)).clip(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class MeshGeometry:
    """The rig in crop pixel indices, and the lengths and curves the fields and painters use."""

    width: int
    height: int
    vertices: np.ndarray  # (468 + B, 2) crop pixels
    triangles: np.ndarray  # (T, 3)
    fh: float  # face height, px
    fw: float  # face width, px
    ex: np.ndarray  # unit vector along the face (image-left eye → image-right eye)
    ey: np.ndarray  # unit vector down the face
    mouth: np.ndarray  # (2,) centre of the split line
    half_w: float  # half the inner mouth's width, corner to corner
    inner_upper: tuple[int, ...]
    inner_lower: tuple[int, ...]
    outer_upper: tuple[int, ...]
    outer_lower: tuple[int, ...]
    split_x: np.ndarray  # the split line's points, image left to right (inner corners included)
    split_y: np.ndarray
    chin: np.ndarray
    oval: np.ndarray  # (N, 2) the face oval
    eye_lids: tuple[tuple[np.ndarray, np.ndarray], ...]  # per eye: upper, lower (9, 2) each
    irises: np.ndarray  # (2, 5, 2)
    brows: tuple[np.ndarray, ...]  # per eye (10, 2)
    teeth_at_rest: bool
    lips_apart_at_rest: bool

    @classmethod
    def from_rig(
        cls,
        rig: MeshRig,
        x0: int,
        y0: int,
        width: int,
        height: int,
        photo: np.ndarray | None = None,
    ) -> MeshGeometry:
        """`photo`: the crop at rest (RGB uint8), to find where a smile's upper teeth end."""
        # A rig coordinate c (pixel i spans [i, i + 1)) is crop index c − origin − ½.
        shift = np.array([x0 + 0.5, y0 + 0.5], np.float32)
        verts = rig.vertices - shift
        lm = verts[:468]
        up, lo = rig.inner_upper_lip, rig.inner_lower_lip
        frac = np.full(len(up), 0.5, np.float32)
        if rig.teeth_at_rest and photo is not None:
            frac = _teeth_edges(photo, lm[list(up)], lm[list(lo)])
        mid = lm[list(up)] + (lm[list(lo)] - lm[list(up)]) * frac[:, None]
        # The split runs on past the inner corners to the outer ones (the lips' commissures).
        outer = lm[[rig.outer_upper_lip[0], rig.outer_upper_lip[-1]]]
        line = np.concatenate([outer[:1], mid, outer[1:]])
        order = np.argsort(line[:, 0], kind="stable")
        eyes = rig.irises[:, 0] - shift
        ex = eyes[1] - eyes[0]
        ex = ex / max(1e-6, float(np.hypot(*ex)))
        lids = tuple((lm[list(u)], lm[list(d)]) for u, d in rig.eye_lids)
        corners = lm[[up[0], up[-1]]]
        return cls(
            width=width,
            height=height,
            vertices=verts.astype(np.float32),
            triangles=np.asarray(rig.triangles, np.int64),
            fh=rig.face_height,
            fw=rig.face_width,
            ex=ex.astype(np.float32),
            ey=np.array([-ex[1], ex[0]], np.float32),
            mouth=((mid[0] + mid[-1]) / 2).astype(np.float32),
            half_w=float(np.hypot(*(corners[1] - corners[0]))) / 2,
            inner_upper=tuple(up),
            inner_lower=tuple(lo),
            outer_upper=tuple(rig.outer_upper_lip),
            outer_lower=tuple(rig.outer_lower_lip),
            split_x=line[order, 0].astype(np.float32),
            split_y=line[order, 1].astype(np.float32),
            chin=lm[CHIN].astype(np.float32),
            oval=lm[list(FACE_OVAL)].astype(np.float32),
            eye_lids=lids,
            irises=(rig.irises - shift).astype(np.float32),
            brows=tuple(lm[list(b)] for b in BROWS),
            teeth_at_rest=rig.teeth_at_rest,
            lips_apart_at_rest=rig.lips_apart_at_rest,
        )

    @property
    def forehead_to_chin(self) -> float:
        return self.fh

    def split_table(self) -> np.ndarray:
        """The split line's y at every crop column (flat beyond the inner corners)."""
        xs = np.arange(self.width, dtype=np.float32)
        return np.interp(xs, self.split_x, self.split_y).astype(np.float32)

    def mouth_weight(self, x: np.ndarray) -> np.ndarray:
        """1 across the lips, out past their outer corners; 0 well beyond (where the upper and
        lower fields agree anyway)."""
        d = np.maximum(self.split_x[0] - x, x - self.split_x[-1])
        return 1.0 - smoothstep(0.1 * self.half_w, 0.4 * self.half_w, d)

    def local(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(along, down) of points relative to the mouth centre, in face axes (pixels)."""
        d = pts - self.mouth
        return d @ self.ex, d @ self.ey


def _teeth_edges(photo: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Per inner-lip pair, where between the upper (0) and lower (1) lip the photo's upper
    teeth end: the split goes there, so a smile's upper teeth stay whole under the upper lip
    and the mouth opens below them.

    The upper row is the bright run around the brightest pixel of the upper part (past the
    lip's own edge). Where a dark gap (under 0.6 of that) follows it and then a second bright
    run, the photo shows both rows: the split goes into the gap, so the lower row stays with
    the lower lip and travels down with the jaw. Otherwise the split goes under the lowest
    bright pixel, so a single row stays whole however soft its bottom edge. A pair far
    dimmer than the teeth elsewhere shows none (a dark corner); a median over neighbours
    (before the smoothing) keeps such corners from pulling the side teeth's split up into them."""
    lum = photo.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = lum.shape
    frac = np.full(len(upper), 0.5, np.float32)
    ts = np.linspace(0.0, 1.0, 21)
    half = len(ts) // 2 + 1
    found = []
    for i in range(1, len(upper) - 1):
        pts = upper[i] + (lower[i] - upper[i]) * ts[:, None]
        xs = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
        ys = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
        prof = lum[ys, xs]
        peak = 2 + int(np.argmax(prof[2 : half + 1]))
        level = 0.8 * prof[peak]
        end = peak
        while end + 1 < len(ts) and prof[end + 1] >= level:
            end += 1
        second = np.nonzero(prof[end + 1 :] >= level)[0]
        if len(second) and prof[end + 1 : end + 1 + second[0]].min() < 0.6 * prof[peak]:
            t = float(ts[end + 1])  # both rows: into the gap between them
        else:
            lit = np.nonzero(prof >= 0.8 * prof.max())[0]
            t = float(ts[lit.max()]) if lit.min() < half else 0.5
        found.append((i, float(prof[peak]), t))
    brightest = max(peak_lum for _, peak_lum, _ in found)
    for i, peak_lum, t in found:
        if peak_lum >= 0.6 * brightest:
            frac[i] = t
    inner = frac[1:-1]
    inner[:] = np.clip(inner, 0.5, 0.97)
    padded = np.pad(inner, 1, mode="edge")
    inner[:] = np.median(np.stack([padded[k : k + len(inner)] for k in range(3)]), axis=0)
    inner[:] = np.convolve(np.pad(inner, 1, mode="edge"), np.ones(3) / 3, "valid")
    return frac


def _profile(u: np.ndarray, narrowing: float, power: float = 0.9) -> np.ndarray:
    """How far the lower lip drops across the mouth: a lens closing into the corners (u = ±1),
    its ends the rounder the smaller `power`."""
    u = u / (1.0 - narrowing)
    return np.clip(1.0 - u * u, 0.0, None) ** power


def _lip_line(geo: MeshGeometry, a: np.ndarray) -> np.ndarray:
    """The split line's `down` coordinate at places `a` along the mouth (flat beyond it)."""
    line_a, line_b = geo.local(np.stack([geo.split_x, geo.split_y], 1))
    order = np.argsort(line_a)
    return np.interp(a, line_a[order], line_b[order])


def _reach(geo: MeshGeometry, a: np.ndarray, corners: tuple[int, int]) -> np.ndarray:
    """Per point at `a` along the mouth, the distance to that side's corner vertex (`corners`:
    the image-left and image-right ones), at least a pixel."""
    side = geo.local(geo.vertices[list(corners)])[0]
    return np.where(a < 0, max(1.0, -float(side.min())), max(1.0, float(side.max())))


def _under_lip(geo: MeshGeometry, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far under the lower lip's outer edge points at (`a`, `b`) are (flat beyond it)."""
    lip_a, lip_b = geo.local(geo.vertices[list(geo.outer_lower)])
    order = np.argsort(lip_a)
    return b - np.interp(a, lip_a[order], lip_b[order])


def _jaw_moves(
    geo: MeshGeometry, a: np.ndarray, b: np.ndarray, lower: np.ndarray, narrowing: float
) -> np.ndarray:
    """The jaw's move at unit strength of points at (`a` along, `b` down) from the mouth
    centre, (…, 2) pixels; `lower`: which points go with the lower face.

    Across the mouth the lower lip drops as a whole: inner and outer lip points at the same
    place along the mouth move alike (else the lip folds). The drop closes into each side's
    inner lip corner, measured on that side (a turned or tilted mouth is longer on one side),
    as a rounded end: the lips' corners stay closed, so the opening never runs out past them
    as a thin dark horn, nor stops at a straight edge where it is still open. The skin under
    the lower lip drops the more the farther below the lip it is (the jaw moves as a whole),
    and the mouth narrows a little as it opens.
    """
    fh, hw = geo.fh, geo.half_w
    lateral = 1.0 - smoothstep(0.1 * fh, 0.7 * fh, np.abs(a))  # the mandible hinges
    under_lip = _under_lip(geo, a, b)
    soft = smoothstep(0.0, 2.0 * JAW_DROP_FH * fh, np.clip(under_lip, 0.0, None))
    reach = _reach(geo, a, (geo.inner_upper[0], geo.inner_upper[-1]))
    u_in = a / reach
    toward = np.clip(u_in, -1.0, 1.0) * np.exp(-((b / (0.1 * fh)) ** 2))
    prof = _profile(u_in, narrowing, _CORNER_ROUNDING)
    f = np.where(lower, lateral * (prof + (1.0 - prof) * soft), 0.0)
    return (JAW_DROP_FH * fh * f)[..., None] * geo.ey - (0.1 * hw * toward)[..., None] * geo.ex


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
    below = b - _lip_line(geo, a)  # > 0 under the lip line
    lower_idx = set(geo.inner_lower[1:-1]) | set(geo.outer_lower[1:-1])
    upper_idx = set(geo.inner_upper[1:-1]) | set(geo.outer_upper[1:-1])
    is_lower = np.array(
        [(i in lower_idx) or (i < 468 and i not in upper_idx and below[i] > 0) for i in range(n)]
    )
    is_lower[468:] = False  # the crop's border never moves
    ey, ex = geo.ey, geo.ex
    corner_ids = [geo.inner_upper[0], geo.inner_upper[-1], geo.outer_upper[0], geo.outer_upper[-1]]

    def jaw(narrowing: float) -> np.ndarray:
        d = _jaw_moves(geo, a, b, is_lower, narrowing)
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
    across = _profile(u, 0.0)
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


def _exact_jaw(geo: MeshGeometry, lower: np.ndarray) -> None:
    """Replace, in place, the lower field's jaw moves (`lower` [H, W, K, 2]) around the mouth
    by the move computed at each pixel, fading back into the mesh's own away from the lower
    lip.

    A mesh has a dozen points along each lip: interpolated between them, the lower lip's
    drop is a polyline, which shows as a V at the bottom of a wide opening and as a straight
    cut where a long triangle spans a lip's corner. Per pixel it follows the lens exactly.
    Above the lip line the lower field is the upper field's business inside the mouth; there
    it carries on the lower lip's own move (each place along the mouth as its lip's edge),
    which is where the opening's pixels come from in `_invert_jaw`."""
    h, w = lower.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = geo.local(np.stack([x, y], -1).reshape(-1, 2))
    below = b - _lip_line(geo, a)
    under_lip = _under_lip(geo, a, b)
    # Where: out to a little past the lips' corners, and from well above the lip line down to
    # a little under the lower lip (the chin and the jaw line stay the mesh's).
    reach = _reach(geo, a, (geo.outer_upper[0], geo.outer_upper[-1]))
    # Above the line only in the columns where the upper field takes over (the face's axes
    # are turned with the head; the lower field shows beside the mouth), and only as high as
    # the opening's pixels come from.
    fh = geo.fh
    columns = geo.mouth_weight(x.reshape(-1)) >= 1.0
    weight = (1.0 - smoothstep(1.05, 1.4, np.abs(a) / reach)) * np.where(
        below > 0,
        1.0 - smoothstep(0.03 * fh, 0.1 * fh, under_lip),
        columns & (below > -1.5 * JAW_DROP_FH * fh),
    )
    on = weight > 0
    if not on.any():
        return
    flat = lower.reshape(-1, lower.shape[2], 2)  # a view: `lower` is contiguous
    for k, narrowing in ((0, 0.0), (1, ROUND_NARROWING)):
        exact = _jaw_moves(geo, a[on], b[on], np.ones(int(on.sum()), bool), narrowing)
        mesh = flat[on, k]
        flat[on, k] = mesh + (exact - mesh) * weight[on, None]


def _lip_region(geo: MeshGeometry) -> np.ndarray:
    """[H, W] 1 where the jaw's fields are read backwards: the lips and the opening, from
    well over the lip line to under the lower lip's place at full opening, out to a little
    past the corners; fading to 0 beyond, where the mesh's moves are kept as they are (small
    there, and on a turned face's far cheek folding over themselves)."""
    h, w = geo.height, geo.width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = geo.local(np.stack([x, y], -1).reshape(-1, 2))
    below = b - _lip_line(geo, a)
    under_lip = _under_lip(geo, a, b)
    reach = _reach(geo, a, (geo.outer_upper[0], geo.outer_upper[-1]))
    drop = JAW_DROP_FH * geo.fh
    region = (
        (1.0 - smoothstep(1.05, 1.4, np.abs(a) / reach))
        * smoothstep(-1.5 * drop, -1.2 * drop, below)
        * (1.0 - smoothstep(1.2 * drop, 1.6 * drop, under_lip))
    )
    return region.reshape(h, w).astype(np.float32)


def _invert_jaw(lower: np.ndarray, region: np.ndarray, steps: int = 8) -> None:
    """Turn the lower field's jaw moves (`lower` [H, W, K, 2], in place) from where each
    photo pixel goes into where each output pixel comes from, at unit strength.

    The moves are the skin's (a point of the lower lip drops by the lip's drop), but a frame
    samples the photo at p − d(p): read as it is, a point low on the lip would take the larger
    drop of the skin under it, so where the lower lip is thin (towards its corners) the lip
    would drop far more than the mouth's profile allows and the opening end in a straight
    cut. The inverse, by fixed-point steps d(q) = move(q − d(q)), is exact at full opening and
    for the lip's edge at any opening (the lip moves as a whole). Only in `region` [H, W]
    (`_lip_region`): beyond, the moves are small and on a turned face's far cheek fold over
    themselves, where no inverse exists."""
    h, w = lower.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)

    for k in (0, 1):
        move = np.ascontiguousarray(lower[:, :, k])
        d = move.copy()
        for _ in range(steps):
            d = cv2.remap(
                move,
                x - d[..., 0],
                y - d[..., 1],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        lower[:, :, k] = move + (d - move) * region[..., None]


def _upper_moves(
    geo: MeshGeometry, a: np.ndarray, b: np.ndarray, narrowing: float
) -> tuple[np.ndarray, np.ndarray]:
    """At (`a` along, `b` down) from the mouth centre: how far the upper lip's inner edge
    there rises at unit jaw (pixels, 0 on a photo showing its upper teeth), and how the mouth's
    narrowing moves it (…, 2)."""
    fh = geo.fh
    lift = 0.0 if geo.teeth_at_rest else UPPER_LIFT
    reach = _reach(geo, a, (geo.inner_upper[0], geo.inner_upper[-1]))
    lateral = 1.0 - smoothstep(0.1 * fh, 0.7 * fh, np.abs(a))
    rise = lift * JAW_DROP_FH * fh * lateral * _profile(a / reach, narrowing, _CORNER_ROUNDING)
    toward = np.clip(a / reach, -1.0, 1.0) * np.exp(-((b / (0.1 * fh)) ** 2))
    return rise, (0.1 * geo.half_w * toward)[..., None] * geo.ex


def _lift_upper(geo: MeshGeometry, upper: np.ndarray) -> np.ndarray:
    """Add the upper lip's rise to the upper field's jaw moves (`upper` [H, W, K, 2], in place,
    still forward: where each photo pixel goes); returns where the lip's edge over each column
    goes at unit jaw, [K, W, 2] pixels (0 for the other parameters).

    The lip's inner edge rises by `UPPER_LIFT` of the jaw's drop across the mouth's lens, its
    outer half stays and the inner half is pressed up; under the split line the upper field
    carries on the edge's own move, which is where the pixels opened under the risen edge come
    from once the field is read backwards (there the mesh has the lower lip's moves)."""
    h, w = upper.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = geo.local(np.stack([x, y], -1).reshape(-1, 2))
    line = _lip_line(geo, a)
    top_a, top_b = geo.local(geo.vertices[list(geo.outer_upper)])
    order = np.argsort(top_a)
    top = np.minimum(np.interp(a, top_a[order], top_b[order]), line - 2.0)
    # 0 over the lip's outer half (its border with the skin stays), 1 on the split and under.
    middle = (top + line) / 2
    share = np.where(b < line + 2.5 * JAW_DROP_FH * geo.fh, (b - middle) / (line - middle), 0.0)
    share = np.clip(share, 0.0, 1.0)
    outer_reach = _reach(geo, a, (geo.outer_upper[0], geo.outer_upper[-1]))
    under = (b >= line) * (share > 0) * (1.0 - smoothstep(1.05, 1.4, np.abs(a) / outer_reach))
    flat = upper.reshape(-1, upper.shape[2], 2)  # a view: `upper` is contiguous
    split = geo.split_table()
    edge_a, edge_b = geo.local(np.stack([np.arange(w, dtype=np.float32), split], 1))
    edges = np.zeros((upper.shape[2], w, 2), np.float32)
    for k, narrowing in ((0, 0.0), (1, ROUND_NARROWING)):
        rise, narrow = _upper_moves(geo, a, b, narrowing)
        rise = rise * share
        carried = -narrow - rise[:, None] * geo.ey
        flat[:, k] += (carried - flat[:, k]) * under[:, None]
        flat[:, k] -= (rise * (1.0 - under))[:, None] * geo.ey
        rise_e, narrow_e = _upper_moves(geo, edge_a, edge_b, narrowing)
        edges[k] = -narrow_e - rise_e[:, None] * geo.ey
    return edges


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
    _exact_jaw(geo, lower)
    region = _lip_region(geo)
    _invert_jaw(lower, region)
    edge = _lift_upper(geo, upper)
    # The other parameters' moves of the upper lip's edge: the field on the row over the split.
    split = geo.split_table()
    over = upper[np.clip(np.floor(split).astype(np.int64), 0, h - 1), np.arange(w)]  # [W, K, 2]
    edge[2:] = over[:, 2:].transpose(1, 0, 2)
    _invert_jaw(upper, region)
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
