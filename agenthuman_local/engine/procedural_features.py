"""The moving parts of a procedural face, drawn per frame: eyes with lids and brows, and the mouth.

Each layer draws into a small box of the head crop, batched over frames. Everything that does
not depend on the frame's parameters (the eyeballs, lid curves, brow shapes, pixel grids) is
computed once here, so a frame costs a few dozen tensor ops; head turns move the whole box by
whole pixels instead of re-evaluating shapes. Shapes are vertical-distance fields between
curves, exact enough for one-pixel anti-aliasing where lids and lips are nearly horizontal.

A layer's drawing is affine in the skin it draws over: every step scales the canvas or paints
over it. So a layer can also draw onto the 4-channel canvas (1, 0, 0, 0) = (skin factor, colour)
and get back (K, L) with drawn = K · skin + L: one drawing then serves the box wherever the
feature shift puts it over the skin (`procedural.ProceduralRenderer` caches (K, L)).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from agenthuman_local.engine.base import P
from agenthuman_local.engine.procedural_paint import (
    BROW_Y,
    CROP_X,
    CROP_Y,
    EYE_X,
    EYE_Y,
    MOUTH_Y,
    color,
    cover,
    over,
)
from agenthuman_local.engine.procedural_styles import Style

Tensor = torch.Tensor

FEATURE_SHIFT_X = 0.022  # head units per unit of yaw: features slide across the face as it turns
FEATURE_SHIFT_Y = 0.018  # per unit of pitch
BROW_RAISE = 0.03  # head units at full brow raise
MAX_OPEN = 0.13  # mouth opening at full jaw, head units
# The boxes the layers redraw, (x0, x1, y0, y1) in head units.
EYES_BOX = (-0.3, 0.3, -0.27 + BROW_RAISE, 0.015)
MOUTH_BOX = (-0.17, 0.17, MOUTH_Y - 0.1, MOUTH_Y + 0.19)

SCLERA = (0.96, 0.95, 0.93)
CAVITY = (0.3, 0.07, 0.09)
THROAT = (0.14, 0.03, 0.05)
TEETH = (0.97, 0.96, 0.92)
TONGUE = (0.8, 0.38, 0.42)


def onto(canvas: Tensor, paint: Tensor, alpha: Tensor) -> Tensor:
    """`over` for a canvas of colour [..., 3] or skin factor and colour [..., 4] (see above).

    Paint does not depend on the skin, so it brings a skin factor of 0.
    """
    if canvas.shape[-1] > paint.shape[-1]:
        paint = F.pad(paint, (canvas.shape[-1] - paint.shape[-1], 0))
    return over(canvas, paint, alpha)


def _param(params: Tensor, index: P) -> Tensor:
    return params[:, int(index)].view(-1, 1, 1)


class _Box:
    """A rectangle of the head crop in crop pixels, with its pixel-centre grid in head units."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, unit: float, device: str):
        self.col = math.floor((x0 - CROP_X[0]) * unit)
        self.row = math.floor((y0 - CROP_Y[0]) * unit)
        self.width = math.ceil((x1 - CROP_X[0]) * unit) - self.col
        self.height = math.ceil((y1 - CROP_Y[0]) * unit) - self.row
        cols = torch.arange(self.width, dtype=torch.float32, device=device)
        rows = torch.arange(self.height, dtype=torch.float32, device=device)
        self.x = (CROP_X[0] + (self.col + cols + 0.5) / unit).view(1, 1, -1)
        self.y = (CROP_Y[0] + (self.row + rows + 0.5) / unit).view(1, -1, 1)


class EyesLayer:
    """Both eyes and brows: eyeballs with iris and catch-light, blinking lids, lashes."""

    def __init__(self, style: Style, unit_px: float, device: str) -> None:
        self.box = _Box(*EYES_BOX, unit_px, device)
        # The parameters this layer reads and the steps they are rounded to, so that equal
        # rounded values can share one drawn tile (blinks repeat the same few lid positions).
        self.steps = {P.BLINK: 1 / 32, P.BROW: 1 / max(1, round(BROW_RAISE * unit_px))}
        self.steps[P.GAZE_X] = self.steps[P.GAZE_Y] = 1 / 8
        self.px = px = 1.0 / unit_px
        x, y = self.box.x, self.box.y
        dev = device
        xm, side = torch.abs(x), torch.sign(x)
        t = (xm - EYE_X) / style.eye_width
        span = torch.clamp(1.0 - t * t, 0.0, 1.0)
        bound = (torch.abs(t) - 1.0) * style.eye_width  # < 0 between the corners
        self.top = EYE_Y - (style.eye_height * torch.sqrt(span) + style.eye_tilt * t) * span
        self.bottom = EYE_Y + (style.eye_height * 0.62 * span - 0.3 * style.eye_tilt * t) * span
        self.below = torch.maximum(y - self.bottom, bound)  # distance past the lower lid
        self.above_fold = torch.maximum(self.top - 0.006 - y, bound)
        self.y = y
        self.lash_w = style.lashes * (1.0 + 0.6 * torch.clamp(t, 0.0, 1.0))
        self.lash_bound = (torch.abs(t) - 1.06) * style.eye_width
        self.lash_col = color(style.brow, dev) * 0.55

        self.r_iris = 0.62 * style.eye_height + 0.004
        self.iris_col = color(style.iris, dev)
        self.xm, self.side = xm, side
        # How far the iris travels at full gaze, head units: it stays inside the eye opening.
        self.gaze_reach = (0.45 * style.eye_width, 0.25 * style.eye_height)
        corner = torch.clamp(torch.abs(t) - 0.55, min=0.0) * 0.9
        self.sclera = color(SCLERA, dev) * (1.0 - corner).unsqueeze(-1)

        crease_y = self.top - 0.018 - 0.006 * span
        crease = torch.maximum(
            torch.abs(y - crease_y) - 0.0022, (torch.abs(t) - 0.85) * style.eye_width
        )
        lower = torch.maximum(
            torch.abs(y - self.bottom - 0.002) - 0.0018, (torch.abs(t) - 0.95) * style.eye_width
        )
        # Fold and lower-lid lines only darken the skin they sit on.
        self.darken = 1.0 - 0.2 * (0.35 * cover(crease, px) + 0.55 * cover(lower, px)).unsqueeze(-1)

        # Brows, drawn once, raised, on a grid with extra rows on top; a frame's raise picks
        # which window of rows the box shows (a lower window shows the brows lower).
        self.raise_px = round(BROW_RAISE * unit_px)
        tall = self.box.height + self.raise_px
        rows = torch.arange(tall, dtype=torch.float32, device=dev)
        ey = (CROP_Y[0] + (self.box.row - self.raise_px + rows + 0.5) / unit_px).view(1, -1, 1)
        bx = (xm - (EYE_X + 0.005)) / 0.088
        arch = 0.022 * torch.clamp(1.0 - (bx - 0.2) ** 2, min=0.0)
        by = BROW_Y - BROW_RAISE - arch + 0.004 * bx
        # Thick at the inner end, thinning to a point at the tail; both ends rounded off.
        ends = torch.sqrt(torch.clamp((1.0 - bx * bx) * 5.0, 0.0, 1.0))
        thick = style.brow_thickness * (1.05 - 0.5 * (bx + 1.0) / 2.0) * ends
        brow_d = torch.maximum(torch.abs(ey - by) - thick / 2.0, (torch.abs(bx) - 1.0) * 0.088)
        self.brow_alpha = 0.95 * cover(brow_d, px)  # [1, raise + h, w]
        self.brow_col = color(style.brow, dev)

    def draw(self, base: Tensor, params: Tensor) -> Tensor:
        """`base` [B, h, w, 3] straight skin (or [..., 4], see above) → eyes and brows drawn in."""
        blink = torch.clamp(_param(params, P.BLINK), 0.0, 1.0)
        lid = self.top + (self.bottom - self.top) * blink  # [B, 1, w]
        y = self.y
        eye_a = cover(torch.maximum(lid - y, self.below), self.px)
        shadow = torch.exp(torch.clamp(lid - y, max=0.0) / 0.012)
        eye_col = self._eyeball(params) * (1.0 - 0.3 * shadow).unsqueeze(-1)
        rgb = base * self.darken
        lid_skin = cover(torch.maximum(self.above_fold, y - lid), self.px)
        rgb = rgb * (1.0 - 0.06 * lid_skin).unsqueeze(-1)
        rgb = onto(rgb, eye_col, eye_a)
        lash = torch.maximum(
            torch.abs(y - (lid - 0.3 * self.lash_w)) - self.lash_w, self.lash_bound
        )
        rgb = onto(rgb, self.lash_col, cover(lash, self.px))
        # Brow raise in whole pixels: slice the pre-drawn brows (negative values do not lower).
        lift = torch.clamp(_param(params, P.BROW), 0.0, 1.0).view(-1).tolist()
        h = self.box.height
        rows = [round(v * self.raise_px) for v in lift]
        brows = torch.stack([self.brow_alpha[0, r : r + h] for r in rows])
        return onto(rgb, self.brow_col, brows)

    def _eyeball(self, params: Tensor) -> Tensor:
        """Sclera, iris with a darker rim, pupil and catch-light, looking where the gaze says."""
        px, r_iris, xm, y = self.px, self.r_iris, self.xm, self.y
        gaze_x = torch.clamp(_param(params, P.GAZE_X), -1.0, 1.0) * self.gaze_reach[0]
        gaze_y = torch.clamp(_param(params, P.GAZE_Y), -1.0, 1.0) * self.gaze_reach[1]
        # x is mirrored for the two eyes, so a glance to one side is ± by eye.
        icx = EYE_X + gaze_x * self.side
        icy = EYE_Y + 0.002 + gaze_y
        r = torch.sqrt((xm - icx) ** 2 + (y - icy) ** 2)
        shade = torch.clamp(1.15 - 0.55 * (r / r_iris) ** 2, 0.4, 1.2)
        iris = self.iris_col * shade.unsqueeze(-1)
        iris = over(iris, self.iris_col * 0.35, 0.8 * cover(torch.abs(r - r_iris) - 0.003, px))
        iris = over(iris, torch.zeros_like(self.iris_col), cover(r - 0.42 * r_iris, px))
        eyeball = over(self.sclera, iris, cover(r - r_iris, px))
        # The catch-light, from the upper left for both eyes.
        gx, gy = icx - 0.32 * r_iris * self.side, icy - 0.38 * r_iris
        glint = torch.sqrt((xm - gx) ** 2 + (y - gy) ** 2)
        return over(eyeball, torch.ones_like(self.iris_col), cover(glint - 0.26 * r_iris, px))


class MouthLayer:
    """Lips, and when open the dark inner mouth with upper teeth and tongue."""

    def __init__(self, style: Style, unit_px: float, device: str) -> None:
        self.box = _Box(*MOUTH_BOX, unit_px, device)
        # Coarse enough that speech reuses tiles, fine enough not to show: a jaw step is
        # about a pixel of opening at the largest crop, shape steps are a few % of the width.
        self.steps = {P.JAW: 1 / 40, P.SPREAD: 1 / 12, P.ROUND: 1 / 12, P.CLOSURE: 1 / 8}
        self.steps[P.LISTEN] = 1 / 8
        self.style = style
        self.px = 1.0 / unit_px
        self.x = self.box.x
        self.x_np = self.box.x.cpu().numpy().astype(np.float64)
        self.y = self.box.y - MOUTH_Y
        dev = device
        self.cavity = color(CAVITY, dev)
        self.throat = color(THROAT, dev)
        self.teeth = color(TEETH, dev)
        self.tongue = color(TONGUE, dev)
        self.lip_upper = color(style.lip_upper, dev)
        self.lip_lower = color(style.lip_lower, dev)
        self.seam_col = self.lip_upper * 0.62

    def _curves(self, params: Tensor) -> dict[str, Tensor]:
        """The lip and opening curves along x, [B, 1, w], and per-frame scalars [B, 1, 1].

        Small 1-D work, done in numpy: torch's per-op cost would dominate at this size.
        """
        st = self.style
        p = params.detach().cpu().numpy().astype(np.float64)[:, :, None, None]
        spread = np.clip(p[:, P.SPREAD], 0.0, 1.0)
        rnd = np.clip(p[:, P.ROUND], 0.0, 1.0)
        listen = np.clip(p[:, P.LISTEN], 0.0, 1.0)
        o = mouth_opening(params).detach().cpu().numpy().astype(np.float64)
        x = self.x_np
        smile = 0.35 + 0.4 * listen
        w = st.mouth_width * (1.0 + 0.2 * spread - 0.3 * rnd + 0.04 * smile)
        wo = w + 0.014
        t = x / w
        s = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
        so = np.sqrt(np.clip(1.0 - (x / wo) ** 2, 0.0, 1.0))
        midline = -0.011 * smile * t * t
        shape = s + (np.sqrt(s) - s) * rnd
        y_up = midline - 0.24 * o * shape
        y_lo = midline + 0.76 * o * shape
        bow = 1.0 - 0.35 * np.exp(-((x / 0.016) ** 2))
        thick_u = 0.026 * st.lip_fullness * np.sqrt(so) * bow * (1.0 - 0.25 * spread)
        thick_l = 0.034 * st.lip_fullness * np.sqrt(so) * (1.0 - 0.2 * spread + 0.15 * rnd)
        grow = np.clip(o / 0.03, 0.0, 1.0)
        # The upper teeth: a band under the upper lip that narrows towards the corners.
        arc = np.sqrt(np.clip(1.0 - (x / (0.8 * w)) ** 2, 0.0, 1.0))
        curves = {
            "so": so,
            "y_up": y_up,
            "y_lo": y_lo,
            "y_lo_o": y_lo + thick_l,
            "lip_top": y_up - thick_u,
            "beyond": np.abs(x) - wo,
            "side": np.abs(x) - w,
            "midline": midline,
            "hi_y": y_lo + 0.45 * thick_l,
            "teeth_y": y_up + 0.026 * grow * arc,
            "gap": 1.0 / (y_lo - y_up + 1e-4),
            "tongue_x": (x / (0.62 * w)) ** 2,
            "tongue_ry": 1.0 / (0.02 + 0.22 * o),
            "open": (o > 0.0015).astype(np.float64),
            "tongue_on": (o > 0.02).astype(np.float64),
            "closed": 1.0 - np.clip(o / 0.01, 0.0, 1.0),
        }
        dev = self.x.device
        return {k: torch.from_numpy(v.astype(np.float32)).to(dev) for k, v in curves.items()}

    def draw(self, base: Tensor, params: Tensor) -> Tensor:
        px, y = self.px, self.y
        c = self._curves(params)
        rgb = base
        # Soft shadow under the lower lip, so the lips sit in the face.
        under = torch.clamp(1.0 - torch.abs(y - c["y_lo_o"] - 0.012) / 0.014, min=0.0) * c["so"]
        rgb = rgb * (1.0 - 0.1 * under).unsqueeze(-1)

        if bool(c["open"].any()):
            inner = torch.maximum(torch.maximum(c["y_up"] - y, y - c["y_lo"]), c["side"])
            open_a = cover(inner, px) * c["open"]
            depth = torch.clamp((y - c["y_up"]) * c["gap"], 0.0, 1.0)
            cav = over(self.throat, self.cavity, depth)
            fade = torch.clamp((y - c["y_up"]) * (1 / 0.03), 0.0, 1.0)
            teeth = self.teeth * (1.0 - 0.25 * fade).unsqueeze(-1)
            cav = over(cav, teeth, cover(y - c["teeth_y"], px))
            ty = (y - c["y_lo"] + 0.006) * c["tongue_ry"]
            tongue_d = (torch.sqrt(c["tongue_x"] + ty * ty) - 1.0) * 0.02
            tongue = self.tongue * (0.75 + 0.25 * depth).unsqueeze(-1)
            cav = over(cav, tongue, cover(tongue_d, px) * c["tongue_on"])
            rgb = onto(rgb, cav, open_a)

        upper = torch.maximum(torch.maximum(c["lip_top"] - y, y - c["y_up"] - 0.002), c["beyond"])
        lower = torch.maximum(torch.maximum(c["y_lo"] - 0.002 - y, y - c["y_lo_o"]), c["beyond"])
        hi = torch.clamp(1.0 - torch.abs(y - c["hi_y"]) * (1 / 0.009), min=0.0) * c["so"]
        rgb = onto(rgb, self.lip_upper, cover(upper, px))
        rgb = onto(rgb, self.lip_lower * (1.0 + 0.22 * hi).unsqueeze(-1), cover(lower, px))
        # Where the lips meet: a darker line, fading as the mouth opens.
        seam = torch.maximum(torch.abs(y - c["midline"]) - 0.0022, c["beyond"])
        rgb = onto(rgb, self.seam_col, cover(seam, px) * (0.85 * c["closed"]))
        return rgb.clamp(0.0, 1.0)


def mouth_opening(params: Tensor) -> Tensor:
    """How far the lips are apart, head units, [B, 1, 1]; zero means closed lips."""
    jaw = torch.clamp(_param(params, P.JAW), 0.0, 1.0)
    closure = torch.clamp(_param(params, P.CLOSURE), 0.0, 1.0)
    open_ = torch.clamp((jaw - 0.04) / 0.96, min=0.0)
    return MAX_OPEN * open_ * (1.0 - 0.92 * closure)
