"""Displacement fields of the photo avatar, built once per avatar from its rig.

Everything here lives in the coordinates of the rendered crop: `x`, `y` are pixel indices of the
crop (pixel centres at integers). A field says how far the content at an output pixel moved, in
pixels: the output pixel p shows the source pixel p − d(p). Every field is multiplied by a window
that is zero at the crop border, so the crop always meets the background without a seam.

Sizes are in units of the eye distance `ed`, the most reliable length a Haar rig gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agenthuman_local.engine.rig_haar import HaarRig as Rig

# Jaw drop at JAW = 1, in eye distances (a wide "aa": about 40 % of the mouth width).
JAW_DROP_ED = 0.42
# Lateral narrowing of the opening at ROUND = 1 (fraction of the half width).
ROUND_NARROWING = 0.3


def smoothstep(
    edge0: float | torch.Tensor, edge1: float | torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class CropGeometry:
    """The rig moved into crop pixel indices, plus the derived lengths the fields use."""

    width: int
    height: int
    ed: float  # eye distance, px
    mouth_x: float
    lip_y: float  # the lip line at the mouth centre
    half_w: float  # half the mouth width
    curve: float  # corners sit this far above lip_y
    chin_y: float
    eyes: tuple[tuple[float, float, float], ...]  # (centre x, centre y, box width) per eye
    eyes_y: float
    teeth_visible: bool

    @classmethod
    def from_rig(cls, rig: Rig, x0: int, y0: int, width: int, height: int) -> CropGeometry:
        # A rig coordinate c (continuous, pixel i spans [i, i+1)) is crop index c − origin − ½.
        def cx(v: float) -> float:
            return v - x0 - 0.5

        def cy(v: float) -> float:
            return v - y0 - 0.5

        eyes = tuple((cx(e.cx), cy(e.cy), e.w) for e in (rig.left_eye, rig.right_eye))
        return cls(
            width=width,
            height=height,
            ed=rig.eye_distance,
            mouth_x=cx(rig.mouth_x),
            lip_y=cy(rig.lip_y),
            half_w=rig.mouth_width / 2,
            curve=rig.lip_curve_px,
            chin_y=cy(rig.chin_y),
            eyes=eyes,
            eyes_y=(eyes[0][1] + eyes[1][1]) / 2,
            teeth_visible=rig.teeth_visible,
        )

    def lip_line(self, x: torch.Tensor) -> torch.Tensor:
        """The y of the lip line at column x (a parabola through the corners, flat beyond)."""
        u = ((x - self.mouth_x) / self.half_w).clamp(-1.0, 1.0)
        return self.lip_y - self.curve * u * u

    def opening_profile(self, x: torch.Tensor, narrowing: float) -> torch.Tensor:
        """How far the lower lip drops at column x relative to the centre.

        Zero a little inside the corners and tapering into them, so the opening is a lens
        inside the lips, never a box cut into the cheeks.
        """
        u = (x - self.mouth_x) / (0.92 * self.half_w * (1.0 - narrowing))
        return (1.0 - u * u).clamp(min=0.0) ** 0.7

    def jaw_lateral(self, x: torch.Tensor) -> torch.Tensor:
        """The jaw drops most at the chin, less towards the jaw angles: the mandible hinges."""
        dx = (x - self.mouth_x).abs()
        return 1.0 - smoothstep(0.25 * self.ed, 1.65 * self.ed, dx)


@dataclass(frozen=True)
class FaceFields:
    """Basis fields [K, H, W, 2] (pixels, x then y) for face and head, and the border window."""

    face: torch.Tensor  # order: JAW_WIDE, JAW_NARROW, SPREAD, ROUND, CLOSURE, BROW
    head: torch.Tensor  # order: TX, TY, YAW, PITCH, ROLL
    head_at_mouth: torch.Tensor  # [5, 2]: each head basis's displacement at the mouth centre


def _grid(geo: CropGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(geo.height, dtype=torch.float32)
    xs = torch.arange(geo.width, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return gx, gy  # each [H, W]


def border_window(geo: CropGeometry) -> torch.Tensor:
    """1 inside, falling smoothly to exactly 0 on the outermost pixels of the crop."""
    x, y = _grid(geo)
    margin = 0.1 * min(geo.width, geo.height)
    dist = torch.minimum(torch.minimum(x, geo.width - 1 - x), torch.minimum(y, geo.height - 1 - y))
    return smoothstep(1.0, margin, dist)


def _jaw(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor, narrowing: float) -> torch.Tensor:
    drop = JAW_DROP_ED * geo.ed
    line = geo.lip_line(x)
    # Inside the mouth the lower lip parts from the upper one at once (a step: the gap is what the
    # synthetic inner mouth fills); outside it the cheeks stretch over a ramp gentle enough never
    # to fold the texture (slope ≤ ~0.75).
    sharp = (y - line + 0.5).clamp(0.0, 1.0)
    soft = smoothstep(line, line + 2.0 * drop, y)
    open_w = geo.opening_profile(x, narrowing)
    vertical = open_w * sharp + (1.0 - open_w) * soft
    below_chin = 1.0 - smoothstep(geo.chin_y + 0.05 * geo.ed, geo.chin_y + 0.9 * geo.ed, y)
    dy = drop * vertical * below_chin * geo.jaw_lateral(x)
    return torch.stack([torch.zeros_like(dy), dy], dim=-1)


def _mouth_envelope(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    u = (x - geo.mouth_x) / geo.half_w
    beyond = (u.abs() - 1.0).clamp(min=0.0)
    lateral = u.clamp(-1.0, 1.0) * torch.exp(-(beyond * beyond) / 0.6)
    vertical = torch.exp(-(((y - geo.lip_y) / (0.3 * geo.ed)) ** 2))
    return lateral * vertical


def _spread(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    env = _mouth_envelope(geo, x, y)
    dx = 0.2 * geo.half_w * env
    # Spread lips lift the corners a little, as in a smile.
    dy = -0.04 * geo.ed * env.abs()
    return torch.stack([dx, dy], dim=-1)


def _round(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx = -ROUND_NARROWING * 0.8 * geo.half_w * _mouth_envelope(geo, x, y)
    return torch.stack([dx, torch.zeros_like(dx)], dim=-1)


def _closure(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Pressed lips: the lower lip pushes up into the line and the upper one down a little.
    line = geo.lip_line(x)
    across = geo.opening_profile(x, 0.0)
    rel = (y - line) / (0.12 * geo.ed)
    bump = torch.exp(-rel * rel)
    dy = torch.where(y > line, -0.035 * geo.ed, 0.015 * geo.ed) * bump * across
    return torch.stack([torch.zeros_like(dy), dy], dim=-1)


def _brow(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dy = torch.zeros_like(x)
    brow_y = geo.eyes_y - 0.38 * geo.ed
    for ex, _, _ in geo.eyes:
        dy = dy + torch.exp(-(((x - ex) / (0.35 * geo.ed)) ** 2))
    vertical = torch.exp(-(((y - brow_y) / (0.3 * geo.ed)) ** 2))
    dy = -0.07 * geo.ed * dy.clamp(max=1.0) * vertical
    return torch.stack([torch.zeros_like(dy), dy], dim=-1)


def _head_mask(geo: CropGeometry, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    hy = geo.eyes_y + 0.45 * geo.ed
    r = torch.sqrt(
        ((x - geo.mouth_x) / (1.0 * scale * geo.ed)) ** 2
        + ((y - hy) / (1.35 * scale * geo.ed)) ** 2
    )
    return 1.0 - smoothstep(1.0, 1.6, r)


def build_fields(geo: CropGeometry) -> FaceFields:
    x, y = _grid(geo)
    window = border_window(geo).unsqueeze(-1)
    face = torch.stack(
        [
            _jaw(geo, x, y, 0.0),
            _jaw(geo, x, y, ROUND_NARROWING),
            _spread(geo, x, y),
            _round(geo, x, y),
            _closure(geo, x, y),
            _brow(geo, x, y),
        ]
    )
    whole = _head_mask(geo, x, y, 1.0)
    inner = _head_mask(geo, x, y, 0.7)
    zero = torch.zeros_like(x)
    pivot_x, pivot_y = geo.mouth_x, geo.chin_y + 0.3 * geo.ed
    roll = 0.045  # radians at ROLL = 1
    head = torch.stack(
        [
            torch.stack([0.07 * geo.ed * whole, zero], dim=-1),
            torch.stack([zero, 0.07 * geo.ed * whole], dim=-1),
            # Yaw and pitch slide the inner face against the outline, which reads as a turn.
            torch.stack([0.09 * geo.ed * inner, zero], dim=-1),
            torch.stack([zero, 0.07 * geo.ed * inner], dim=-1),
            torch.stack([-roll * (y - pivot_y) * whole, roll * (x - pivot_x) * whole], dim=-1),
        ]
    )
    face = face * window
    head = head * window
    mi = int(round(min(max(geo.lip_y, 0), geo.height - 1)))
    mj = int(round(min(max(geo.mouth_x, 0), geo.width - 1)))
    return FaceFields(
        face=face.contiguous(), head=head.contiguous(), head_at_mouth=head[:, mi, mj].clone()
    )
