"""The procedural renderer: a shipped illustrated character, drawn in torch with no assets.

Per frame the only full-frame work is a copy of the cached background (SPEC §9): the still head
crop is blended over it where head sway puts it, and only the eye and mouth boxes are drawn
fresh: cached by their rounded parameters as (K, L), drawn = K · skin + L, and laid over the
skin where the feature shift puts the box (then tilted) per frame, so neither the shift nor the
tilt, which change every frame of a moving head, is part of the cache key. Head tilt picks one of a
few pre-rotated heads; breathing picks one of a few pre-painted backgrounds with the shoulders
raised by whole pixels.
Frames larger than the crop budget draw the crop at ≤ 384 px and scale it up.
The still backgrounds and pre-tilted heads are painted and kept by `procedural_assets`; the
tilt geometry is `procedural_tilt`'s. This module owns the per-frame work.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.cache import BudgetedCache, tensor_bytes
from agenthuman_local.engine.procedural_assets import (
    BREATH_LIFT,
    _assets,
    _fixed_point,
    _upscale,
    check_size,
    layout_for,
)
from agenthuman_local.engine.procedural_features import (
    FEATURE_SHIFT_X,
    FEATURE_SHIFT_Y,
    EyesLayer,
    MouthLayer,
)
from agenthuman_local.engine.procedural_paint import CROP_X, CROP_Y, MOUTH_Y
from agenthuman_local.engine.procedural_styles import STYLES, Style
from agenthuman_local.engine.procedural_tilt import (
    MAX_ROLL_DEG,
    ROLL_STEP_DEG,
    ROLL_STEPS,
    _rotation_grids,
    roll_degrees,
    roll_pivot,
)

SWAY_X = 0.045  # head units of paste shift per unit of TX
SWAY_Y = 0.03  # per unit of TY
# Drawn feature tiles kept per layer, float16 (K, L) [h, w, 4]: at 1280x720 about 270 eye and
# 410 mouth shapes, a few sentences' worth; all of them together within engine.cache_mb.
TILE_CACHE_MB = 32
LAID_TILES = 96  # and finished tiles at their shift and tilt, per layer: a still head reuses them
BASES = 2  # composed frames without features kept per renderer (the head moves every ~5 frames)
# Half-width, top and bottom of everything dark the mouth can show, head units.
MOUTH_REACH = (0.145, MOUTH_Y - 0.055, MOUTH_Y + 0.135)
Region = tuple[int, int, int, int]


class ProceduralRenderer:
    """Implements `base.Renderer` for a shipped style ("avat_local_ada", "avat_local_ben")."""

    def __init__(self, style: Style | str, size: FrameSize, device: str = "cpu") -> None:
        if isinstance(style, str):
            if style not in STYLES:
                raise ValueError(f"unknown procedural avatar {style!r}; have {sorted(STYLES)}")
            style = STYLES[style]
        check_size(size)
        self.style = style
        self.size = size
        self.device = device
        self.layout = layout_for(size)
        self._assets = _assets(style, size.width, size.height, device)
        u = self.layout.render_unit_px
        self._layers = (EyesLayer(style, u, device), MouthLayer(style, u, device))
        self._shift_px = (FEATURE_SHIFT_X * u, FEATURE_SHIFT_Y * u)
        # Sessions may share a renderer; the tile caches are not safe to touch from two threads.
        self._lock = threading.Lock()
        # Drawn tiles, per layer: at most TILE_CACHE_MB each, all within `engine.cache_mb`.
        self._caches: list[BudgetedCache[tuple, torch.Tensor]] = [
            BudgetedCache(
                f"{size.width}x{size.height} {type(layer).__name__}",
                tensor_bytes,
                max_entries=max(
                    16, TILE_CACHE_MB * 2**20 // (layer.box.height * layer.box.width * 4 * 2)
                ),
            )
            for layer in self._layers
        ]
        self._laid: list[OrderedDict[tuple, tuple[int, int, torch.Tensor]]] = [
            OrderedDict() for _ in self._layers
        ]
        # Whole frames of the head without its features over the background, by (background,
        # tilt, paste origin): the head holds still for ~5 frames at a time, so a frame is
        # mostly one copy of the last one and its feature tiles blended (`_composed`).
        self._bases: BudgetedCache[tuple[int, int, int, int], torch.Tensor] = BudgetedCache(
            f"{size.width}x{size.height} composed head", tensor_bytes, max_entries=BASES
        )
        # A tilted tile turns about its own centre; its grids are the same for every frame.
        degrees = [roll_degrees(k) for k in range(ROLL_STEPS)]
        self._tilt_grids = [
            _rotation_grids(b.height, b.width, (b.width / 2, b.height / 2), degrees, device)
            for b in (layer.box for layer in self._layers)
        ]
        px, py = roll_pivot(u)
        self._tilt_offsets = []
        for layer in self._layers:
            bx = layer.box.col + layer.box.width / 2 - px
            by = layer.box.row + layer.box.height / 2 - py
            offsets = []
            for k in range(ROLL_STEPS):
                theta = math.radians(roll_degrees(k))
                rx = math.cos(theta) * bx - math.sin(theta) * by
                ry = math.sin(theta) * bx + math.cos(theta) * by
                offsets.append((round(rx - bx), round(ry - by)))
            self._tilt_offsets.append(offsets)

    @property
    def scaled(self) -> bool:
        return self.layout.render_unit_px < self.layout.unit_px

    def paste_origin(self, params_row: Sequence[float]) -> tuple[int, int]:
        """Top-left of the head crop in the frame for one frame's parameters."""
        lay = self.layout
        dx = SWAY_X * params_row[P.TX] * lay.unit_px
        dy = (
            SWAY_Y * params_row[P.TY] * lay.unit_px
            - 0.3 * BREATH_LIFT * params_row[P.BREATH] * lay.unit_px
        )
        return (
            round(lay.centre_x + CROP_X[0] * lay.unit_px + dx),
            round(lay.centre_y + CROP_Y[0] * lay.unit_px + dy),
        )

    def roll_index(self, params_row: Sequence[float]) -> int:
        """Which pre-tilted head a frame uses: ROLL ±1 is ±MAX_ROLL_DEG."""
        steps = params_row[P.ROLL] * MAX_ROLL_DEG / ROLL_STEP_DEG
        half = ROLL_STEPS // 2
        return half + min(half, max(-half, math.floor(steps + 0.5)))

    def background_index(self, params_row: Sequence[float]) -> int:
        """Which pre-painted background (shoulders raised by that many pixels) a frame uses."""
        top = self._assets.backgrounds.shape[0] - 1
        return min(top, max(0, math.floor((params_row[P.BREATH] + 1.0) / 2.0 * top + 0.5)))

    def mouth_region(self, params_row: Sequence[float] | None = None) -> Region:
        """(x0, y0, x1, y1) frame pixels around the lips for the lip-sync check.

        With a frame's parameters, where that frame's mouth is; without, a box that holds the
        mouth in any pose (so it also takes in more of the face around it).
        """
        lay, u = self.layout, self.layout.unit_px
        scale = u / lay.render_unit_px
        tilts = self._tilt_offsets[1]  # the mouth layer's
        if params_row is None:
            cx, cy = lay.centre_x, lay.centre_y
            mx = (SWAY_X + FEATURE_SHIFT_X) * u + max(abs(t[0]) for t in tilts) * scale + 1
            my = (SWAY_Y + 0.3 * BREATH_LIFT + FEATURE_SHIFT_Y) * u + 1
            my += max(abs(t[1]) for t in tilts) * scale
        else:
            x0, y0 = self.paste_origin(params_row)
            tx, ty = tilts[self.roll_index(params_row)]
            dx = round(self._shift_px[0] * params_row[P.YAW]) + tx
            dy = round(self._shift_px[1] * params_row[P.PITCH]) + ty
            cx = x0 - CROP_X[0] * u + dx * scale
            cy = y0 - CROP_Y[0] * u + dy * scale
            mx = my = 1.0
        return (
            max(0, math.floor(cx - MOUTH_REACH[0] * u - mx)),
            max(0, math.floor(cy + MOUTH_REACH[1] * u - my)),
            min(self.size.width, math.ceil(cx + MOUTH_REACH[0] * u + mx)),
            min(self.size.height, math.ceil(cy + MOUTH_REACH[2] * u + my)),
        )

    @torch.inference_mode()
    def render(self, params: torch.Tensor) -> torch.Tensor:
        params = torch.as_tensor(params, dtype=torch.float32).to(self.device).reshape(-1, N_PARAMS)
        batch = params.shape[0]
        rows = params.cpu().tolist()
        a = self._assets
        with self._lock:
            tiles = [self._tiles(i, rows) for i in range(len(self._layers))]
        out = torch.empty(batch, self.size.height, self.size.width, 3, dtype=torch.uint8)
        for b, row in enumerate(rows):
            k = self.roll_index(row)
            if not self.scaled:
                self._composed(out[b], row, k, [per_frame[b] for per_frame in tiles])
                continue
            out[b].copy_(a.backgrounds[self.background_index(row)])
            alpha = a.head_alpha[k].float()[..., None]
            head = torch.cat([a.head_straight[k].float() * alpha, alpha], -1)
            for per_frame in tiles:
                c, r, tile = per_frame[b]
                head[r : r + tile.shape[0], c : c + tile.shape[1], :3] = tile
            big = _upscale(head[None], self.layout)[0]
            rgb, inv = _fixed_point(big[..., :3], big[..., 3:])
            self._blend(out[b], rgb, inv, *self.paste_origin(row))
        return out

    def _composed(
        self, frame: torch.Tensor, row: list[float], k: int, tiles: list[tuple[int, int, Any]]
    ) -> None:
        """Frame = the background with the head blended over it, its feature tiles in place.

        The same pixels as blending the head with its tiles pasted in, in one pass: outside
        the tiles a frame is its (background, tilt, origin)'s composed head, kept
        (`_bases`); each tile is then blended over the background where it lies."""
        a = self._assets
        bg = self.background_index(row)
        x0, y0 = self.paste_origin(row)
        with self._lock:
            base = self._bases.get((bg, k, x0, y0))
        if base is None:
            base = a.backgrounds[bg].clone()
            self._blend(base, a.head_i16[k], a.inv_alpha[k], x0, y0)
            with self._lock:
                self._bases.put((bg, k, x0, y0), base)
        frame.copy_(base)
        background, inv = a.backgrounds[bg], a.inv_alpha[k]
        for c, r, tile in tiles:
            h, w = tile.shape[:2]
            self._blend(frame, tile, inv[r : r + h, c : c + w], x0 + c, y0 + r, under=background)

    def _tiles(self, index: int, rows: list[list[float]]) -> list[tuple[int, int, torch.Tensor]]:
        """One layer's tile for each frame: (crop col, crop row, premultiplied tile).

        Drawings are keyed by the layer's rounded parameters alone; frames that round alike
        share one, and each frame lays it over the skin where its feature shift puts the box
        and tilts it with the head, so a frame's pixels depend on its parameters alone. The
        laid tiles are kept too (a still head lays the same one again).
        """
        layer, drawings, laid = self._layers[index], self._caches[index], self._laid[index]
        keys = []
        for row in rows:
            q = tuple(round(row[p] / step) for p, step in layer.steps.items())
            sx = round(self._shift_px[0] * row[P.YAW])
            sy = round(self._shift_px[1] * row[P.PITCH])
            keys.append((q, sx, sy, self.roll_index(row)))
        todo = [key for key in dict.fromkeys(keys) if key not in laid]
        if todo:
            found = {q: drawings.get(q) for q in dict.fromkeys(key[0] for key in todo)}
            missing = [q for q, drawing in found.items() if drawing is None]
            if missing:
                found.update(self._draw_missing(index, missing))
            for key in todo:
                drawing = found[key[0]]
                assert drawing is not None
                laid[key] = self._lay(index, drawing, *key[1:])
        result = []
        for key in keys:
            laid.move_to_end(key)
            result.append(laid[key])
        while len(laid) > LAID_TILES:
            laid.popitem(last=False)
        return result

    def _lay(
        self, index: int, drawing: torch.Tensor, sx: int, sy: int, k: int
    ) -> tuple[int, int, torch.Tensor]:
        """(K, L) → this frame's tile: K · skin + L over the skin at its feature shift, tilted.

        A tilted tile turns about the box's centre and sits where the tilted head has the
        box; its corners, which the rotation leaves empty, take the tilted head's own skin, so
        the edges do not show.
        """
        a, box = self._assets, self._layers[index].box
        h, w, upright = box.height, box.width, ROLL_STEPS // 2
        c, r = box.col + sx, box.row + sy
        d = drawing.float()
        skin = a.head_straight[upright, r : r + h, c : c + w].float()
        rgb = torch.addcmul(d[..., 1:], skin, d[..., :1]).clamp_(0.0, 1.0)
        if k != upright:
            src = torch.cat([rgb, torch.ones_like(rgb[..., :1])], -1).permute(2, 0, 1)[None]
            turned = F.grid_sample(
                src, self._tilt_grids[index][k : k + 1], align_corners=False, padding_mode="zeros"
            )[0].permute(1, 2, 0)
            tx, ty = self._tilt_offsets[index][k]
            c, r = c + tx, r + ty
            skin = a.head_straight[k, r : r + h, c : c + w].float()
            rgb = turned[..., :3] + skin * (1.0 - turned[..., 3:])
        premul = rgb * a.head_alpha[k, r : r + h, c : c + w, None].float()
        if not self.scaled:
            premul = torch.floor(premul * 255.0).to(torch.int16)
        return c, r, premul

    def _draw_missing(self, index: int, missing: list[tuple]) -> dict[tuple, torch.Tensor]:
        """Draw upright (K, L) for each rounded parameter set: drawn = K · skin + L."""
        layer, box = self._layers[index], self._layers[index].box
        qparams = torch.zeros(len(missing), N_PARAMS)
        for j, q in enumerate(missing):
            for (p, step), v in zip(layer.steps.items(), q, strict=True):
                qparams[j, p] = v * step
        canvas = torch.zeros(len(missing), box.height, box.width, 4, device=self.device)
        canvas[..., 0] = 1.0  # skin factor 1, colour 0: the drawing comes back as (K, L)
        drawn = layer.draw(canvas, qparams.to(self.device))
        cache, fresh = self._caches[index], {}
        for key, tile in zip(missing, drawn.half().cpu(), strict=True):
            cache.put(key, tile)
            fresh[key] = tile
        return fresh

    @staticmethod
    def _clip(frame: torch.Tensor, h: int, w: int, x0: int, y0: int):
        fy0, fx0 = max(0, y0), max(0, x0)
        fy1, fx1 = min(frame.shape[0], y0 + h), min(frame.shape[1], x0 + w)
        return fy0, fy1, fx0, fx1, fy0 - y0, fx0 - x0

    def _blend(
        self,
        frame: torch.Tensor,
        head: torch.Tensor,
        inv: torch.Tensor,
        x0: int,
        y0: int,
        *,
        under: torch.Tensor | None = None,
    ):
        """frame[at x0, y0] = under · inv / 128 + head (premultiplied, int16); `under` is the
        frame itself unless given (the background, for a tile over a composed head)."""
        h, w = head.shape[:2]
        fy0, fy1, fx0, fx1, cy, cx = self._clip(frame, h, w, x0, y0)
        if fy1 <= fy0 or fx1 <= fx0:
            return
        region = frame[fy0:fy1, fx0:fx1]
        hy, hx = slice(cy, cy + fy1 - fy0), slice(cx, cx + fx1 - fx0)
        mixed = (region if under is None else under[fy0:fy1, fx0:fx1]).to(torch.int16)
        mixed.mul_(inv[hy, hx]).bitwise_right_shift_(7).add_(head[hy, hx])
        region.copy_(mixed)
