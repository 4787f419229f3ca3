"""The photo avatar renderer (SPEC §9): one uploaded photograph, animated by face parameters.

Reads the mesh rig (version 2, `engine.rig.MeshRig`). Once per renderer: the photo is framed
into a full-size background for the output size, and over a face crop (≤ 384×384) a
displacement field per face parameter is solved from the mesh's vertex moves
(`engine.photo_warp`). Per frame only the crop is rendered: a linear mix of those fields, the
lids' warp (`engine.photo_blink`) and the head-motion field, one `grid_sample` of the photo, the
inner mouth drawn inside the opening (`engine.photo_cavity`), and a paste into a copy of the
cached background. Batched over frames; runs unchanged on CUDA; deterministic.

Avatars still on the Haar rig (version 1) are drawn by `engine.photo_legacy`;
`open_photo_renderer` picks by the stored rig's version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P, Renderer
from agenthuman_local.engine.photo_blink import LidWarp
from agenthuman_local.engine.photo_cavity import Cavity
from agenthuman_local.engine.photo_frame import (
    coefficients,
    framed_background,
    identity_grid,
    pasted,
    pixel_grid,
    sample_crop,
    shifted,
)
from agenthuman_local.engine.photo_geometry import MeshGeometry
from agenthuman_local.engine.photo_jaw import JAW_DROP_FH
from agenthuman_local.engine.photo_warp import build_fields
from agenthuman_local.engine.rig import FACE_OVAL, FOREHEAD, MeshRig
from agenthuman_local.engine.rig_haar import HAAR_RIG_VERSION

MAX_CROP_PX = 384
# The face is framed so the crop is at most this tall or wide: under MAX_CROP_PX, so that the
# per-frame work (one grid_sample of the crop) keeps 1280×720 above 100 fps on one core.
_FRAMED_CROP_PX = 330
# The crop, in face heights (forehead to chin): from a little above the mesh's top to well
# under the chin (room for the jaw drop and the border window).
_CROP_ABOVE_FH = 0.1
_CROP_H_FH = 1.5
_CROP_W_FW = 1.5  # in face widths (cheek to cheek)
_EYES_AT = 0.36  # where the eyes sit, as a fraction of the frame height, when the photo allows


def _framing(rig: MeshRig, size: FrameSize) -> tuple[float, float, float]:
    """(scale, dx, dy) placing the photo in the frame: face centred, at most a 384 px crop."""
    w, h = rig.image_width, rig.image_height
    cover = max(size.width / w, size.height / h)
    crop_h, crop_w = _CROP_H_FH * rig.face_height, _CROP_W_FW * rig.face_width
    scale = min(cover, _FRAMED_CROP_PX / max(crop_h, crop_w))
    eyes = rig.irises[:, 0]
    centre_x = float(np.mean([eyes[:, 0].mean(), rig.mouth_corners[:, 0].mean()]))
    dx = size.width / 2 - centre_x * scale
    dy = size.height * _EYES_AT - float(eyes[:, 1].mean()) * scale
    sw, sh = w * scale, h * scale
    # Where the scaled photo covers the frame, never show past its edge.
    if sw >= size.width:
        dx = min(0.0, max(size.width - sw, dx))
    if sh >= size.height:
        dy = min(0.0, max(size.height - sh, dy))
    return scale, dx, dy


def open_photo_renderer(avatar_dir: Path, size: FrameSize, device: str = "cpu") -> Renderer:
    """The renderer for the photo avatar in `avatar_dir`, by its rig's version."""
    rig_path = avatar_dir / "rig.json"
    if rig_path.exists():
        try:
            version = json.loads(rig_path.read_text()).get("version")
        except ValueError:
            version = None
        if version == HAAR_RIG_VERSION:
            from agenthuman_local.engine.photo_legacy import LegacyPhotoRenderer

            return LegacyPhotoRenderer(avatar_dir, size, device)  # type: ignore[return-value]
    return PhotoRenderer(avatar_dir, size, device)  # type: ignore[return-value]


class PhotoRenderer:
    """Renders frames of the photo avatar stored in `avatar_dir` (image.jpg + a v2 rig.json)."""

    def __init__(self, avatar_dir: Path, size: FrameSize, device: str = "cpu") -> None:
        self.size = size
        self.device = device
        bgr = cv2.imread(str(avatar_dir / "image.jpg"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{avatar_dir / 'image.jpg'} is missing or unreadable")
        rig = MeshRig.from_json((avatar_dir / "rig.json").read_text())
        scale, dx, dy = _framing(rig, size)
        background = framed_background(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, scale, dx, dy)
        self.rig = rig.scaled(scale, dx, dy)  # in output pixels

        fh, fw = self.rig.face_height, self.rig.face_width
        oval = self.rig.points(FACE_OVAL)
        crop_w = min(MAX_CROP_PX, size.width, round(_CROP_W_FW * fw))
        crop_h = min(MAX_CROP_PX, size.height, round(_CROP_H_FH * fh))
        cx = float(oval[:, 0].min() + oval[:, 0].max()) / 2
        top = float(self.rig.points(FOREHEAD)[1]) - _CROP_ABOVE_FH * fh
        x0 = int(np.clip(round(cx - crop_w / 2), 0, size.width - crop_w))
        y0 = int(np.clip(round(top), 0, size.height - crop_h))
        self.crop_box = (x0, y0, crop_w, crop_h)
        self._rows = slice(y0, y0 + crop_h)
        self._cols = slice(x0, x0 + crop_w)

        photo_crop = background[self._rows, self._cols]
        geo = MeshGeometry.from_rig(self.rig, x0, y0, crop_w, crop_h, photo_crop)
        self.geometry = geo
        fields = build_fields(geo)
        dev = torch.device(device)
        self._background = torch.from_numpy(background).to(dev)
        src = self._background[self._rows, self._cols].permute(2, 0, 1).float()
        self._src = src.unsqueeze(0).contiguous()
        # Fields go from pixels to grid_sample's normalised units (align_corners=False).
        to_norm = torch.tensor([2.0 / crop_w, 2.0 / crop_h])
        self._lids = LidWarp(geo, photo_crop, device)
        # The face fields are zero outside the lower face and brows: keep only their box
        # (with the eyes, whose lids add to it).
        live = (fields.face.abs() > 1e-3).any(dim=0).any(dim=-1)
        for rows, cols in self._lids.patches():
            live[rows, cols] = True
        ys_live, xs_live = live.any(dim=1).nonzero(), live.any(dim=0).nonzero()
        self._face_box = (
            slice(int(ys_live.min()), int(ys_live.max()) + 1),
            slice(int(xs_live.min()), int(xs_live.max()) + 1),
        )
        face = fields.face[:, self._face_box[0], self._face_box[1]] * to_norm
        self._face_hw = (face.shape[1], face.shape[2])
        self._face = face.reshape(face.shape[0], -1).to(dev)
        self._head = (fields.head * to_norm).reshape(fields.head.shape[0], -1).to(dev)
        self._to_norm = to_norm.to(dev)
        self._head_at_mouth = fields.head_at_mouth.to(dev)
        # A shifted face field stays inside the border window's zero margin.
        self._max_shift_px = max(0, int(0.1 * min(crop_w, crop_h)) - 2)
        self._identity = identity_grid(crop_h, crop_w, dev)  # [1, h, w, 2]
        self._identity_flat = self._identity.reshape(1, -1)
        self._mouth = Cavity(geo, photo_crop, fields.split.to(dev))
        self._edge = fields.edge.reshape(fields.edge.shape[0], -1).to(dev)  # [K, W * 2]
        self._mouth_px = pixel_grid(self._mouth.rows, self._mouth.cols, dev)

    @property
    def background(self) -> torch.Tensor:
        """The cached full frame, uint8 [H, W, 3] on the renderer's device; do not modify."""
        return self._background

    def _coefficients(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return coefficients(params, self._face.device)

    def mouth_region(self, params_row: Sequence[float] | None = None) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) frame pixels around the mouth, for the lip-sync check.

        With a frame's parameters, where that frame's mouth is (head motion included); without,
        a box that holds the mouth in any pose.
        """
        rig, geo = self.rig, self.geometry
        # The middle of the opening: a smile's own dark corners stay out of it.
        inner = rig.points((rig.inner_upper_lip[0], rig.inner_upper_lip[-1]))
        y0 = self.crop_box[1] + 0.5
        mid, half = float(inner[:, 0].mean()), 0.8 * float(np.ptp(inner[:, 0])) / 2
        left, right = mid - half, mid + half
        # The opening starts at the split, or as far above it as the upper lip's edge rises.
        rise = max(0.0, -float(self._edge[:2, 1::2].min()))
        top = float(geo.split_y.min()) + y0 - 0.01 * geo.fh - rise
        bottom = float(geo.split_y.max()) + y0 + (JAW_DROP_FH + 0.04) * geo.fh
        if params_row is None:
            pad_x = pad_y = float(self._head_at_mouth.abs().sum(dim=0).max()) + 1
            dx = dy = 0.0
        else:
            dx, dy = self.head_offset(params_row)
            pad_x = pad_y = 1.0
        return (
            max(0, math.floor(left + dx - pad_x)),
            max(0, math.floor(top + dy - pad_y)),
            min(self.size.width, math.ceil(right + dx + pad_x)),
            min(self.size.height, math.ceil(bottom + dy + pad_y)),
        )

    def head_offset(self, params_row: Sequence[float]) -> tuple[float, float]:
        """How far a frame's head motion moves the mouth, in frame pixels (x, y)."""
        row = torch.tensor([list(params_row)], dtype=torch.float32)
        _, head = self._coefficients(row)
        dx, dy = (head.to(self._head_at_mouth.device) @ self._head_at_mouth)[0].tolist()
        return float(dx), float(dy)

    @torch.inference_mode()
    def render(self, params: torch.Tensor) -> torch.Tensor:
        """float32 [B, N_PARAMS] → uint8 [B, H, W, 3] on the CPU."""
        if params.ndim != 2 or params.shape[1] != N_PARAMS:
            raise ValueError(f"params must be [B, {N_PARAMS}], got {tuple(params.shape)}")
        n = params.shape[0]
        _, _, crop_w, crop_h = self.crop_box
        face_c, head_c = self._coefficients(params)
        blink = params[:, P.BLINK].to(self._face.device, torch.float32).nan_to_num(0.0)

        # The head carries the deformed face along: the face field is evaluated where the head
        # moved the mouth to. Shifting it by whole pixels (the head field is nearly a translation
        # around the mouth) costs a copy instead of a second grid_sample, and keeps the lip step
        # within half a pixel of the lip it cuts.
        shift = (
            (head_c @ self._head_at_mouth).round().clamp(-self._max_shift_px, self._max_shift_px)
        )
        grid = torch.addmm(self._identity_flat, head_c, self._head, alpha=-1.0)
        grid = grid.view(n, crop_h, crop_w, 2)
        fh, fw = self._face_hw
        d_face_box = (face_c @ self._face).view(n, fh, fw, 2)
        lid_gains = []
        if bool((blink > 0).any()):
            box_r, box_c = self._face_box
            for (rows, cols), (d, *tone) in zip(
                self._lids.patches(), self._lids.displacements(blink), strict=True
            ):
                r = slice(rows.start - box_r.start, rows.stop - box_r.start)
                c = slice(cols.start - box_c.start, cols.stop - box_c.start)
                d_face_box[:, r, c] += d * self._to_norm
                lid_gains.append((rows, cols, tone))
        crop, d_face = sample_crop(self._src, grid, d_face_box, self._face_box, shift)
        # The inner mouth is found in the face's own frame, from the face field alone, so it
        # matches the lip step exactly and the head motion cannot open a sliver elsewhere.
        rows, cols = self._mouth.rows, self._mouth.cols
        q = self._mouth_px - shift.view(n, 1, 1, 2)
        edge = (face_c @ self._edge).view(n, -1, 2)
        self._mouth.composite(crop, q, q - d_face[:, rows, cols] / self._to_norm, edge)
        # The closed lids' tone, carried by the head like their warp.
        for rows, cols, (mul, add) in lid_gains:
            for b, (dx, dy) in enumerate(shift.tolist()):
                dst_r, src_r = shifted(rows, int(dy), crop_h)
                dst_c, src_c = shifted(cols, int(dx), crop_w)
                crop[b, :, dst_r, dst_c] *= mul[b, :, src_r, src_c]
                crop[b, :, dst_r, dst_c] += add[b, :, src_r, src_c]
        return pasted(self._background, crop, self._rows, self._cols)
