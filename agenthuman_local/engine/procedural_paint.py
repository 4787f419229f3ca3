"""Painting the still parts of a procedural character, once per style and frame size.

The backdrop, shoulders and neck go into a full-frame background; the head (hair, ears, face
with its shading, nose) goes into a crop with an alpha channel. Neither changes per frame, so
both can afford soft shading; the per-frame work in `procedural` only redraws eyes and mouth.
All shapes are signed distances in head units, anti-aliased over one pixel.
"""

from __future__ import annotations

import functools

import torch

from agenthuman_local.engine.procedural_styles import RGB, Style

# Feature anchors in head units, shared with the per-frame drawing.
EYE_X = 0.145
EYE_Y = -0.05
BROW_Y = -0.158
NOSE_Y = 0.115
MOUTH_Y = 0.268
# Crop of the head around the face centre, in head units (hair top to chin, ear to ear).
CROP_X = (-0.56, 0.56)
CROP_Y = (-0.68, 0.56)

Tensor = torch.Tensor


def cover(d: Tensor, px: float) -> Tensor:
    """Signed distance (negative inside) → coverage, anti-aliased over one pixel of size px."""
    return (d * (-1.0 / px)).add_(0.5).clamp_(0.0, 1.0)


def smoothstep(e0: float, e1: float, x: Tensor) -> Tensor:
    t = torch.clamp((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse(x: Tensor, y: Tensor, cx: float, cy: float, rx: float, ry: float) -> Tensor:
    """Approximate signed distance to an ellipse; exact enough for one-pixel edges."""
    return (torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * min(rx, ry)


def smooth_min(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Union of two distance fields with a rounded seam of about k."""
    h = torch.clamp(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


@functools.lru_cache(maxsize=256)
def color(c: RGB, device: str) -> Tensor:
    """A colour as a [3] tensor, cached: per-frame drawing asks for the same few many times."""
    return torch.tensor(c, dtype=torch.float32, device=device)


def over(canvas: Tensor, paint: Tensor, alpha: Tensor) -> Tensor:
    """Paint `paint` ([..., 3] or [3]) over `canvas` [..., 3] with `alpha` [...]."""
    return torch.lerp(canvas, paint, alpha.unsqueeze(-1))


def face_distance(style: Style, x: Tensor, y: Tensor) -> Tensor:
    """The face outline: a super-ellipse that narrows towards the chin."""
    ry = 0.5
    below = torch.clamp(y / ry, 0.0, 1.0)
    rx = style.face_rx * (1.0 - style.chin_taper * below**2)
    p = style.jaw_power
    q = (torch.abs(x) / rx) ** p + (torch.abs(y) / ry) ** p
    return (q ** (1.0 / p) - 1.0) * rx * 0.9


def hairline(style: Style, x: Tensor) -> Tensor:
    """The y of the hair's lower edge over the forehead and temples."""
    temples = smoothstep(0.22, 0.34, torch.abs(x))
    if style.hair_kind == "bob":
        # Side-swept fringe: low over the left brow, lifting towards the parting on the right.
        fringe = -0.19 - 0.15 * smoothstep(-0.3, 0.22, x) - 0.03 * torch.cos(6.0 * x)
        return fringe + (0.02 - fringe) * temples
    # A short cut: a slightly receding crown line, squared-off temples, short sideburns.
    crown = -0.33 - 0.035 * (x / 0.25) ** 2 + 0.012 * torch.cos(40.0 * x)
    return crown + (-0.09 - crown) * smoothstep(0.26, 0.36, torch.abs(x))


def _grid(width: int, height: int, x0: float, y0: float, px: float, device: str):
    xs = x0 + (torch.arange(width, dtype=torch.float32, device=device) + 0.5) * px
    ys = y0 + (torch.arange(height, dtype=torch.float32, device=device) + 0.5) * px
    return xs[None, :].expand(height, width), ys[:, None].expand(height, width)


def paint_backgrounds(
    style: Style,
    width: int,
    height: int,
    centre: tuple[float, float],
    unit_px: float,
    lifts_px: list[int],
    device: str,
) -> Tensor:
    """Backdrop with neck and shoulders raised by each of `lifts_px`, [K, H, W, 3] in [0, 1].

    The torso is painted once and shifted up by whole rows for each lift.
    """
    px = 1.0 / unit_px
    cx, cy = centre
    x, y = _grid(width, height, -cx * px, -cy * px, px, device)
    backdrop = _backdrop(style, x, y, device)
    torso_rgb, torso_a = _torso(style, x, y, px, device)
    out = []
    for lift in lifts_px:
        rgb, a = torso_rgb, torso_a
        if lift > 0:
            # Rows move up; the bottom rows repeat, the torso runs off the frame there anyway.
            rgb = torch.cat([rgb[lift:], rgb[-1:].expand(lift, -1, -1)])
            a = torch.cat([a[lift:], a[-1:].expand(lift, -1)])
        out.append((backdrop * (1.0 - a).unsqueeze(-1) + rgb).clamp(0.0, 1.0))
    return torch.stack(out)


def _backdrop(style: Style, x: Tensor, y: Tensor, device: str) -> Tensor:
    sky = smoothstep(-1.2, 1.6, y)
    rgb = color(style.backdrop_top, device) + (
        color(style.backdrop_bottom, device) - color(style.backdrop_top, device)
    ) * sky.unsqueeze(-1)
    # A soft pool of light behind the head, and a vignette, give the backdrop depth.
    glow = torch.exp(-((x / 0.9) ** 2 + ((y + 0.1) / 0.8) ** 2))
    rgb = rgb * (0.9 + 0.16 * glow).unsqueeze(-1)
    vignette = 1.0 - 0.18 * torch.clamp((x / 2.2) ** 2 + (y / 1.8) ** 2, 0.0, 1.0)
    return rgb * vignette.unsqueeze(-1)


def _torso(style: Style, x: Tensor, y: Tensor, px: float, device: str) -> tuple[Tensor, Tensor]:
    """Neck, shoulders and clothes → (premultiplied rgb [H, W, 3], alpha [H, W])."""
    rgb = torch.zeros(*x.shape, 3, device=device)
    skin, shade = color(style.skin, device), color(style.skin_shade, device)
    # Neck: a cylinder, shaded at its sides and under the chin.
    nw = style.neck_width
    neck = cover(torch.maximum(torch.abs(x) - nw, 0.28 - y), px)
    roundness = torch.clamp(1.0 - (x / nw) ** 2, 0.0, 1.0)
    neck_col = shade + (skin - shade) * (0.35 + 0.5 * roundness).unsqueeze(-1)
    chin_shadow = torch.exp(-(((y - 0.47) / 0.09) ** 2))
    neck_col = neck_col * (1.0 - 0.35 * chin_shadow).unsqueeze(-1)
    rgb = over(rgb, neck_col, neck)

    # Shoulders: the trapezius sloping from the neck into rounded shoulders, then the arms.
    ax = torch.abs(x)
    top = 0.66 + 0.24 * smoothstep(0.1, 0.72, ax)
    side = ax - 0.8 - 0.08 * torch.clamp(y - 1.0, min=0.0)
    body = cover(-smooth_min(y - top, -side, 0.1), px)
    light = 0.82 + 0.18 * torch.exp(-(((x + 0.15) / 0.55) ** 2))
    cloth = color(style.clothes_shade, device) + (
        color(style.clothes, device) - color(style.clothes_shade, device)
    ) * (light * (1.0 - 0.35 * smoothstep(0.5, 0.85, ax))).unsqueeze(-1)
    accent = color(style.accent, device)
    if style.clothes_kind == "scoop":
        # A scoop neckline shows the collarbones; a trim edges it.
        scoop = ellipse(x, y, 0.0, 0.68, 0.27, 0.19)
        chest = over(cloth, neck_col * 0.97, cover(scoop, px))
        trim = cover(torch.abs(scoop) - 0.012, px) * (y > 0.62).float()
        chest = over(chest, accent * 0.9, trim)
        collarbone = torch.exp(-(((y - (0.76 - 0.25 * (ax - 0.18) ** 2)) / 0.012) ** 2))
        chest = chest * (1.0 - 0.12 * collarbone * (ax < 0.24).float()).unsqueeze(-1)
    else:
        # A jacket over an open-collared shirt: skin at the throat, shirt, collar points.
        jacket_v = ax - 0.17 + 0.45 * (y - 0.66)  # < 0 inside the jacket's opening
        chest = over(cloth, accent, cover(torch.maximum(jacket_v, 0.6 - y), px))
        throat = torch.maximum(ax - 0.1 + 0.55 * (y - 0.66), 0.6 - y)
        chest = over(chest, neck_col * 0.92, cover(throat, px))
        collar = torch.maximum(
            torch.abs(ax - 0.11 + 0.55 * (y - 0.66)) - 0.035, torch.abs(y - 0.72) - 0.07
        )
        chest = over(chest, accent * 0.9, cover(collar, px))
        lapel = cover(torch.abs(jacket_v) - 0.005, px) * (y > 0.68).float()
        chest = over(chest, color(style.clothes_shade, device) * 0.75, lapel)
    alpha = neck + (1.0 - neck) * body
    return over(rgb, chest, body), alpha


def paint_head(style: Style, unit_px: float, device: str) -> tuple[Tensor, Tensor]:
    """The still head in its crop → (rgb [h, w, 3], alpha [h, w]), floats in [0, 1]."""
    px = 1.0 / unit_px
    width = round((CROP_X[1] - CROP_X[0]) * unit_px)
    height = round((CROP_Y[1] - CROP_Y[0]) * unit_px)
    x, y = _grid(width, height, CROP_X[0], CROP_Y[0], px, device)
    rgb = torch.zeros(height, width, 3, device=device)
    alpha = torch.zeros(height, width, device=device)
    skin, shade = color(style.skin, device), color(style.skin_shade, device)
    hair, hair_light = color(style.hair, device), color(style.hair_light, device)

    def layer(paint: Tensor, a: Tensor) -> None:
        nonlocal rgb, alpha
        rgb = over(rgb, paint, a)
        alpha = alpha + (1.0 - alpha) * a

    strands = 0.5 + 0.5 * torch.sin(150.0 * x + 9.0 * torch.sin(7.0 * y))
    hair_col = hair + (hair_light - hair) * (0.12 * strands).unsqueeze(-1)
    rx = style.face_rx
    if style.hair_kind == "bob":
        # The back of the bob, behind the face and ears: chin length, with a soft inward curl.
        back = torch.maximum(
            ellipse(x, y, 0.0, -0.12, rx + 0.13, 0.56), y - 0.36 - 0.05 * (x / 0.4) ** 2
        )
        back_col = hair_col * (0.72 + 0.18 * smoothstep(0.5, 0.1, torch.abs(x))).unsqueeze(-1)
        layer(back_col, cover(back, px))

    # Ears, with an inner fold.
    for side in (-1.0, 1.0):
        ex = side * (rx + 0.002)
        ear = ellipse(x, y, ex, -0.02, 0.05, 0.085)
        inner = ellipse(x, y, ex + side * 0.008, -0.015, 0.026, 0.055)
        ear_col = over(skin * 0.96 + 0.0 * x.unsqueeze(-1), shade, 0.55 * cover(inner, px * 3))
        layer(ear_col, cover(ear, px))

    face_d = face_distance(style, x, y)
    # Light from the upper left on a rounded face, darkening towards the outline.
    nx = torch.clamp(x / (rx * 1.05), -1.0, 1.0)
    ny = torch.clamp(y / 0.55, -1.0, 1.0)
    nz = torch.sqrt(torch.clamp(1.0 - nx**2 - ny**2, 0.0, 1.0))
    lambert = torch.clamp(-0.35 * nx - 0.3 * ny + 0.85 * nz, 0.0, 1.0)
    tone = 0.45 + 0.55 * lambert
    face_col = shade + (skin - shade) * tone.unsqueeze(-1)
    for side in (-1.0, 1.0):
        cheek = torch.exp(-(((x - side * 0.175) / 0.075) ** 2 + ((y - 0.13) / 0.055) ** 2))
        face_col = over(face_col, color(style.blush, device), style.blush_strength * cheek)
    if style.stubble > 0:
        jaw = smoothstep(0.12, 0.3, y) * (
            1.0 - torch.exp(-((x / 0.09) ** 2 + ((y - 0.2) / 0.06) ** 2))
        )
        face_col = face_col * (1.0 - style.stubble * jaw).unsqueeze(-1)
    # Nose: a soft shadow down the lit side of the bridge, the tip, and the nostril wings.
    bridge = (
        torch.exp(-(((x - 0.03) / 0.02) ** 2))
        * smoothstep(-0.05, 0.08, y)
        * smoothstep(NOSE_Y + 0.02, NOSE_Y - 0.03, y)
    )
    face_col = face_col * (1.0 - 0.12 * bridge).unsqueeze(-1)
    tip = torch.exp(-((x / 0.035) ** 2 + ((y - NOSE_Y + 0.01) / 0.025) ** 2))
    face_col = face_col + (0.07 * tip).unsqueeze(-1)
    under = torch.exp(-((x / 0.05) ** 2 + ((y - NOSE_Y - 0.028) / 0.012) ** 2))
    face_col = face_col * (1.0 - 0.22 * under).unsqueeze(-1)
    for side in (-1.0, 1.0):
        wing = ellipse(x, y, side * 0.036, NOSE_Y + 0.008, 0.022, 0.02)
        wing_line = cover(torch.abs(wing) - 0.0035, px) * (y > NOSE_Y - 0.005).float()
        face_col = over(face_col, shade * 0.85, 0.55 * wing_line)
        nostril = ellipse(x, y, side * 0.02, NOSE_Y + 0.02, 0.011, 0.006)
        face_col = over(face_col, shade * 0.55, 0.7 * cover(nostril, px))
    # Philtrum and the hollow under the lower lip, faint.
    philtrum = torch.exp(-((x / 0.016) ** 2 + ((y - (NOSE_Y + MOUTH_Y) / 2) / 0.04) ** 2))
    face_col = face_col * (1.0 - 0.06 * philtrum).unsqueeze(-1)
    chin = torch.exp(-((x / 0.06) ** 2 + ((y - 0.42) / 0.03) ** 2))
    face_col = face_col + (0.04 * chin).unsqueeze(-1)
    # The hair casts a soft shadow on the forehead.
    line = hairline(style, x)
    fringe_shadow = torch.exp(-torch.clamp(y - line, min=0.0) / 0.03) * (y > line).float()
    face_col = face_col * (1.0 - 0.25 * fringe_shadow).unsqueeze(-1)
    layer(face_col, cover(face_d, px))

    # Hair on top: a cap above the hairline, with a sheen band.
    if style.hair_kind == "short":
        cap = ellipse(x, y, 0.0, -0.16, rx + 0.035, 0.5)
    else:
        cap = ellipse(x, y, 0.0, -0.13, rx + 0.06, 0.55)
    cap_d = torch.maximum(cap, y - line)
    sheen = torch.exp(-(((y + 0.45 + 0.25 * x**2) / 0.05) ** 2)) * smoothstep(0.35, -0.1, x)
    cap_col = hair_col + (hair_light - hair_col) * (0.45 * sheen).unsqueeze(-1)
    if style.hair_kind == "bob":
        # The side parting the fringe sweeps away from.
        part_x = 0.17 + 0.12 * (y + 0.62)
        part = torch.exp(-(((x - part_x) / 0.008) ** 2)) * smoothstep(-0.3, -0.45, y)
        cap_col = cap_col * (1.0 - 0.35 * part).unsqueeze(-1)
    edge_dark = torch.exp(-torch.clamp(line - y, min=0.0) / 0.02)
    cap_col = cap_col * (1.0 - 0.3 * edge_dark).unsqueeze(-1)
    layer(cap_col, cover(cap_d, px))
    return rgb.clamp(0.0, 1.0), alpha.clamp(0.0, 1.0)
