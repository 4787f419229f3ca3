"""The jaw's fields of the mesh photo avatar, around the mouth: the lens the lower lip drops by,
computed per pixel; the upper lip's rise where no teeth show; and the fields read backwards
(where each output pixel comes from), so each lip point is drawn where the jaw moves it.

`photo_warp` builds the whole face's fields and calls these on its dense jaw fields; all in crop
pixel indices, lengths in face heights.
"""

from __future__ import annotations

import cv2
import numpy as np

from agenthuman_local.engine.photo_geometry import MeshGeometry, smoothstep

# Jaw drop at JAW = 1, in face heights: a wide "aa" in conversation (about 0.32 eye distances,
# some 2 cm on an adult).
JAW_DROP_FH = 0.10
# Lateral narrowing of the opening at ROUND = 1 (fraction of the half width).
ROUND_NARROWING = 0.3
# The opening's ends: the drop across the mouth goes as (1 − u²)^this near each inner corner.
_CORNER_ROUNDING = 1.0
# How far the upper lip's inner edge rises as the jaw drops, as a share of the drop (the lips
# part both ways, so the opening is a lens, not a cut under a straight edge). 0 on a photo
# that shows its upper teeth: they hang from the skull, and the split runs under them.
UPPER_LIFT = 0.25
# The split line climbing into a corner steeper than this (down per along) is the corner's curl:
# the opening stops where it starts, but reaches at least this share of the way to the corner.
_CURL_SLOPE, _CURL_KEEP = 1.0, 0.6


def lens_profile(u: np.ndarray, narrowing: float, power: float = 0.9) -> np.ndarray:
    """How far the lower lip drops across the mouth: a lens closing into the corners (u = ±1),
    its ends the rounder the smaller `power`."""
    u = u / (1.0 - narrowing)
    return np.clip(1.0 - u * u, 0.0, None) ** power


def lip_line(geo: MeshGeometry, a: np.ndarray) -> np.ndarray:
    """The split line's `down` coordinate at places `a` along the mouth (flat beyond it)."""
    line_a, line_b = geo.local(np.stack([geo.split_x, geo.split_y], 1))
    order = np.argsort(line_a)
    return np.interp(a, line_a[order], line_b[order])


def opening_reach(geo: MeshGeometry) -> tuple[float, float]:
    """How far the opening reaches along the mouth on each side (image-left, image-right),
    pixels: to that side's inner lip corner or, where the split line climbs into the corner
    steeper than `_CURL_SLOPE` (a laughing mouth's curled corner, a smile's split under its
    teeth rising to the corner), to where it starts to. A drop there would open only a sliver
    across the steep line: a dark horn up beside the teeth."""
    corners = geo.local(geo.vertices[[geo.inner_upper[0], geo.inner_upper[-1]]])[0]
    line_a, line_b = geo.local(np.stack([geo.split_x, geo.split_y], 1))
    reach = []
    for side, end in ((-1.0, -float(corners.min())), (1.0, float(corners.max()))):
        on = (line_a * side > 0) & (line_a * side <= end + 0.5)
        order = np.argsort(line_a[on] * side)
        along, down = (line_a[on] * side)[order], line_b[on][order]
        cut = end
        for k in range(len(along) - 1):
            if abs(down[k + 1] - down[k]) > _CURL_SLOPE * max(along[k + 1] - along[k], 1e-6):
                cut = float(along[k])
                break
        reach.append(max(1.0, _CURL_KEEP * end, cut))
    return reach[0], reach[1]


def _inner_reach(geo: MeshGeometry, a: np.ndarray) -> np.ndarray:
    left, right = opening_reach(geo)
    return np.where(a < 0, left, right)


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


def jaw_moves(
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
    reach = _inner_reach(geo, a)
    u_in = a / reach
    toward = np.clip(u_in, -1.0, 1.0) * np.exp(-((b / (0.1 * fh)) ** 2))
    prof = lens_profile(u_in, narrowing, _CORNER_ROUNDING)
    f = np.where(lower, lateral * (prof + (1.0 - prof) * soft), 0.0)
    return (JAW_DROP_FH * fh * f)[..., None] * geo.ey - (0.1 * hw * toward)[..., None] * geo.ex


def exact_jaw(geo: MeshGeometry, lower: np.ndarray) -> None:
    """Replace, in place, the lower field's jaw moves (`lower` [H, W, K, 2]) around the mouth
    by the move computed at each pixel, fading back into the mesh's own away from the lower
    lip.

    A mesh has a dozen points along each lip: interpolated between them, the lower lip's
    drop is a polyline, which shows as a V at the bottom of a wide opening and as a straight
    cut where a long triangle spans a lip's corner. Per pixel it follows the lens exactly.
    Above the lip line the lower field is the upper field's business inside the mouth; there
    it carries on the lower lip's own move (each place along the mouth as its lip's edge),
    which is where the opening's pixels come from in `invert_jaw`."""
    h, w = lower.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = geo.local(np.stack([x, y], -1).reshape(-1, 2))
    below = b - lip_line(geo, a)
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
        exact = jaw_moves(geo, a[on], b[on], np.ones(int(on.sum()), bool), narrowing)
        mesh = flat[on, k]
        flat[on, k] = mesh + (exact - mesh) * weight[on, None]


def lip_region(geo: MeshGeometry) -> np.ndarray:
    """[H, W] 1 where the jaw's fields are read backwards: the lips and the opening, from
    well over the lip line to under the lower lip's place at full opening, out to a little
    past the corners; fading to 0 beyond, where the mesh's moves are kept as they are (small
    there, and on a turned face's far cheek folding over themselves)."""
    h, w = geo.height, geo.width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = geo.local(np.stack([x, y], -1).reshape(-1, 2))
    below = b - lip_line(geo, a)
    under_lip = _under_lip(geo, a, b)
    reach = _reach(geo, a, (geo.outer_upper[0], geo.outer_upper[-1]))
    drop = JAW_DROP_FH * geo.fh
    region = (
        (1.0 - smoothstep(1.05, 1.4, np.abs(a) / reach))
        * smoothstep(-1.5 * drop, -1.2 * drop, below)
        * (1.0 - smoothstep(1.2 * drop, 1.6 * drop, under_lip))
    )
    return region.reshape(h, w).astype(np.float32)


def invert_jaw(lower: np.ndarray, region: np.ndarray, steps: int = 8) -> None:
    """Turn the lower field's jaw moves (`lower` [H, W, K, 2], in place) from where each
    photo pixel goes into where each output pixel comes from, at unit strength.

    The moves are the skin's (a point of the lower lip drops by the lip's drop), but a frame
    samples the photo at p − d(p): read as it is, a point low on the lip would take the larger
    drop of the skin under it, so where the lower lip is thin (towards its corners) the lip
    would drop far more than the mouth's profile allows and the opening end in a straight
    cut. The inverse, by fixed-point steps d(q) = move(q − d(q)), is exact at full opening and
    for the lip's edge at any opening (the lip moves as a whole). Only in `region` [H, W]
    (`lip_region`): beyond, the moves are small and on a turned face's far cheek fold over
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
    reach = _inner_reach(geo, a)
    lateral = 1.0 - smoothstep(0.1 * fh, 0.7 * fh, np.abs(a))
    rise = lift * JAW_DROP_FH * fh * lateral * lens_profile(a / reach, narrowing, _CORNER_ROUNDING)
    toward = np.clip(a / reach, -1.0, 1.0) * np.exp(-((b / (0.1 * fh)) ** 2))
    return rise, (0.1 * geo.half_w * toward)[..., None] * geo.ex


def lift_upper(geo: MeshGeometry, upper: np.ndarray) -> np.ndarray:
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
    line = lip_line(geo, a)
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
