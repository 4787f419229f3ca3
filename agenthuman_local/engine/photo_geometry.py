"""The mesh photo avatar's geometry in the rendered crop (rig version 2): where its lips, eyes,
brows and face oval are, in crop pixel indices (pixel centres at integers), with the face's own
axes and lengths, which the warp, the cavity and the lids share.

Lengths are in face heights `fh` (forehead to chin on the mesh), which a turned head keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from agenthuman_local.engine.rig import CHIN, FACE_OVAL, MeshRig

BROWS = (
    (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
)


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # RGB → luma (BT.601)
# Where closed lips meet: the darkest point across them within this many face heights of the
# mesh's midline, if at most this share of the midline's tone (`_lip_valley`).
_VALLEY_SPAN, _VALLEY_DARK = 0.035, 0.6
# A smile's upper teeth end at an edge where the profile past them falls under this share of them.
_EDGE_FALL = 0.85


def saturation(rgb: np.ndarray) -> np.ndarray:
    """Each colour's saturation [...] of `rgb` [..., 3]: (max − min) / max (HSV's)."""
    top = rgb.max(-1)
    return (top - rgb.min(-1)) / np.maximum(top, 1.0)


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
        """`photo`: the crop at rest (RGB uint8), to find where a smile's upper teeth end, or
        where closed lips meet."""
        # A rig coordinate c (pixel i spans [i, i + 1)) is crop index c − origin − ½.
        shift = np.array([x0 + 0.5, y0 + 0.5], np.float32)
        verts = rig.vertices - shift
        lm = verts[:468]
        up, lo = rig.inner_upper_lip, rig.inner_lower_lip
        eyes = rig.irises[:, 0] - shift
        ex = eyes[1] - eyes[0]
        ex = ex / max(1e-6, float(np.hypot(*ex)))
        ey = np.array([-ex[1], ex[0]], np.float32)
        frac = np.full(len(up), 0.5, np.float32)
        if rig.teeth_at_rest and photo is not None:
            frac = _teeth_edges(photo, lm[list(up)], lm[list(lo)])
        mid = lm[list(up)] + (lm[list(lo)] - lm[list(up)]) * frac[:, None]
        if not rig.teeth_at_rest and photo is not None:
            mid = mid + _lip_valley(photo, mid, ey, rig.face_height)[:, None] * ey
        # The split runs on past the inner corners to the outer ones (the lips' commissures).
        outer = lm[[rig.outer_upper_lip[0], rig.outer_upper_lip[-1]]]
        line = np.concatenate([outer[:1], mid, outer[1:]])
        order = np.argsort(line[:, 0], kind="stable")
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
            ey=ey,
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


def _lip_valley(photo: np.ndarray, mid: np.ndarray, ey: np.ndarray, fh: float) -> np.ndarray:
    """Per inner-lip pair, how far down the face (px, `ey`) the photo's lips meet from the
    mesh's midline `mid`: the split goes there. On a turned head with a moustache the mesh puts
    the inner lips up to 6 px (0.03 face heights) over the dark line where the lips meet
    (Walter), and the mouth opened across his upper lip with the lips' own line still showing
    under it. The meeting line is the darkest point of the (lightly blurred) profile across
    the lips, within `_VALLEY_SPAN` face heights; it counts only where it is clearly darker than
    the midline (`_VALLEY_DARK` of it: a lit lip there, not a moustache's or a corner's soft
    shade), and only where a neighbour agrees (a median over three, an unfound pair 0)."""
    lum = cv2.GaussianBlur(photo.astype(np.float32) @ LUMA, (0, 0), 0.7)
    span = _VALLEY_SPAN * fh
    ts = np.linspace(-span, span, 29, dtype=np.float32)
    off = np.zeros(len(mid), np.float32)
    for i in range(1, len(mid) - 1):
        pts = (mid[i] + ts[:, None] * ey).astype(np.float32)
        prof = _sampled(lum, pts)
        k = int(np.argmin(prof))
        if prof[k] <= _VALLEY_DARK * float(prof[len(ts) // 2]):  # ts[len // 2] is 0
            off[i] = ts[k]
    off[1:-1] = _median3(off[1:-1], "constant")
    return off


def _teeth_edges(photo: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Per inner-lip pair, where between the upper (0) and lower (1) lip the photo's upper
    teeth end: the split goes there, so a smile's upper teeth stay whole under the upper lip
    and the mouth opens below them.

    The upper row is the bright run around the brightest pixel of the upper part (past the
    lip's own edge). Where a dark gap (under 0.6 of that) follows it and then a second bright
    run, the photo shows both rows: the split goes to the lower row's top edge, so the lower
    row travels down with the jaw whole and the gap stays dark under the upper one.
    Otherwise the split goes to the lowest bright run's bottom edge, so a single row stays
    whole however soft its bottom edge. An edge is where the profile (sampled every quarter
    pixel) crosses halfway between the teeth and what is beside them: cut at the last bright
    sample, a pixel or two of the teeth's tips rode down with the lower lip, a white wire
    along it. On a smile the mesh can put the lower lip on the teeth, so the profile runs on
    0.3 of the way past it (a second row may be found there only as bright as teeth: a lit
    lip after the line where the lips meet is not one); the split stays above the lower lip,
    whose points carry the jaw's drop.
    A pair far dimmer than the teeth elsewhere shows none (a dark corner); a median over
    neighbours (before the smoothing) keeps such corners from pulling the side teeth's split
    up into them."""
    lum = photo.astype(np.float32) @ LUMA
    frac = np.full(len(upper), 0.5, np.float32)
    found = []
    for i in range(1, len(upper) - 1):
        n = max(27, int(np.ceil(1.3 * float(np.hypot(*(lower[i] - upper[i]))) / 0.25)) + 1)
        ts = np.linspace(0.0, 1.3, n)
        pts = (upper[i] + (lower[i] - upper[i]) * ts[:, None]).astype(np.float32)
        prof = _sampled(lum, pts)
        first, half, lips = (int(np.searchsorted(ts, v, "right")) - 1 for v in (0.1, 0.55, 1.0))
        peak = first + int(np.argmax(prof[first : half + 1]))
        level = 0.8 * prof[peak]
        end = peak
        while end + 1 < n and prof[end + 1] >= level:
            end += 1
        # Past the lower lip only teeth-bright (a lit lip there is not a second row).
        row = np.where(ts > 1.0, 0.9 * prof[peak], level)
        second = np.nonzero(prof[end + 1 :] >= row[end + 1 :])[0]
        if len(second) and prof[end + 1 : end + 1 + second[0]].min() < 0.6 * prof[peak]:
            # Both rows: up the lower row's top edge from the darkest of the gap.
            dark = end + 1 + int(np.argmin(prof[end + 1 : end + 1 + second[0]]))
            t = _crossing(ts, prof, dark, end + 1 + int(second[0]), rising=True)
        else:
            lit = np.nonzero(prof[: lips + 1] >= 0.8 * prof[: lips + 1].max())[0]
            if lit.min() < half:
                bottom = int(lit.max())
                low = bottom + int(np.argmin(prof[bottom:]))
                if prof[low] <= _EDGE_FALL * prof[max(0, bottom - 8) : bottom + 1].max():
                    t = _crossing(ts, prof, bottom, low, rising=False)
                else:  # no edge under it (a corner brightening into the lip): as far as lit
                    t = float(ts[bottom])
            else:
                t = 0.5
        found.append((i, float(prof[peak]), t))
    brightest = max(peak_lum for _, peak_lum, _ in found)
    for i, peak_lum, t in found:
        if peak_lum >= 0.65 * brightest:  # dark corners: 0.58–0.62 (Perry, Jesse)
            frac[i] = t
    inner = frac[1:-1]
    inner[:] = np.clip(inner, 0.5, 0.97)
    inner[:] = _median3(inner, "edge")
    inner[:] = np.convolve(np.pad(inner, 1, mode="edge"), np.ones(3) / 3, "valid")
    return frac


def _crossing(ts: np.ndarray, prof: np.ndarray, a: int, b: int, rising: bool) -> float:
    """Where `prof` crosses halfway between dark and bright, going from sample `a` to `b`
    (a ≤ b; rising: from dark at `a` to bright at `b`, else from bright to dark), linear
    between samples. The bright level is the brightest of the 8 samples on its side (2 px at
    the quarter-pixel step): a soft edge's last bright sample is already part way down."""
    if rising:
        dark, bright = float(prof[a]), float(prof[b : b + 9].max())
    else:
        dark, bright = float(prof[b]), float(prof[max(0, a - 8) : a + 1].max())
    mid = 0.5 * (dark + bright)
    for k in range(a, b):
        lo, hi = float(prof[k]), float(prof[k + 1])
        if (hi >= mid) if rising else (hi < mid):
            w = (mid - lo) / (hi - lo) if hi != lo else 0.0
            return float(ts[k] + (ts[k + 1] - ts[k]) * w)
    return float(ts[b])


def _sampled(lum: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """`lum` at the points `pts` [N, 2] (float32, pixel centres at integers), bilinear."""
    return cv2.remap(
        lum, pts[:, :1], pts[:, 1:], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )[:, 0]


def _median3(values: np.ndarray, pad: Literal["constant", "edge"]) -> np.ndarray:
    """Each value's median with its two neighbours, the ends padded with 0 or their own."""
    padded = np.pad(values, 1, mode=pad)
    return np.median(np.stack([padded[k : k + len(values)] for k in range(3)]), axis=0)
