"""The legacy photo renderer, for avatars still on rig version 1 (the OpenCV Haar rig).

Avatars whose re-rig by the face mesh failed keep their Haar rig and are drawn by this renderer
(`engine.photo.open_photo_renderer` picks by rig version); everything else uses `engine.photo`.

Once per renderer: the photo is framed into a full-size background for the output size and the
rig's displacement fields are built over a face crop (≤ 384×384). Per frame only the crop is
rendered: a linear mix of the basis fields composed with the head-motion field, one
`grid_sample` of the photo, the synthetic inner mouth drawn into the gap and the lids over the
eyes, and a paste into a copy of the cached background. Batched over frames; runs unchanged on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.photo_fields import (
    JAW_DROP_ED,
    CropGeometry,
    build_fields,
)
from agenthuman_local.engine.photo_frame import (
    coefficients,
    framed_background,
    identity_grid,
    pasted,
    pixel_grid,
    sample_crop,
)
from agenthuman_local.engine.photo_lids import EyeLids
from agenthuman_local.engine.photo_mouth import InnerMouth
from agenthuman_local.engine.rig_haar import HaarRig as Rig

MAX_CROP_PX = 384
# The crop spans this many eye distances (face, jaw fall-off and border window included).
_CROP_W_ED = 3.6
_CROP_H_ED = 3.9
_CROP_TOP_ED = 1.2  # crop top above the eyes
_EYES_AT = 0.36  # where the eyes sit, as a fraction of the frame height, when the photo allows


def _framing(rig: Rig, size: FrameSize) -> tuple[float, float, float]:
    """(scale, dx, dy) placing the photo in the frame: face centred, at most a 384 px crop."""
    w, h = rig.image_width, rig.image_height
    cover = max(size.width / w, size.height / h)
    # Keep the crop within MAX_CROP_PX; below that, fill the frame if the photo can.
    scale = min(cover, (MAX_CROP_PX - 4) / (_CROP_H_ED * rig.eye_distance))
    eyes_y = (rig.left_eye.cy + rig.right_eye.cy) / 2
    dx = size.width / 2 - rig.mouth_x * scale
    dy = size.height * _EYES_AT - eyes_y * scale
    sw, sh = w * scale, h * scale
    # Where the scaled photo covers the frame, never show past its edge.
    if sw >= size.width:
        dx = min(0.0, max(size.width - sw, dx))
    if sh >= size.height:
        dy = min(0.0, max(size.height - sh, dy))
    return scale, dx, dy


class LegacyPhotoRenderer:
    """Renders a photo avatar with a version-1 rig in `avatar_dir` (image.jpg + rig.json)."""

    def __init__(self, avatar_dir: Path, size: FrameSize, device: str = "cpu") -> None:
        self.size = size
        self.device = device
        bgr = cv2.imread(str(avatar_dir / "image.jpg"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{avatar_dir / 'image.jpg'} is missing or unreadable")
        rig = Rig.from_json((avatar_dir / "rig.json").read_text())
        scale, dx, dy = _framing(rig, size)
        background = framed_background(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, scale, dx, dy)
        self.rig = rig.scaled(scale, dx, dy)  # in output pixels

        ed = self.rig.eye_distance
        eyes_y = (self.rig.left_eye.cy + self.rig.right_eye.cy) / 2
        crop_w = min(MAX_CROP_PX, size.width, round(_CROP_W_ED * ed))
        crop_h = min(MAX_CROP_PX, size.height, round(_CROP_H_ED * ed))
        x0 = int(np.clip(round(self.rig.mouth_x - crop_w / 2), 0, size.width - crop_w))
        y0 = int(np.clip(round(eyes_y - _CROP_TOP_ED * ed), 0, size.height - crop_h))
        self.crop_box = (x0, y0, crop_w, crop_h)
        self._rows = slice(y0, y0 + crop_h)
        self._cols = slice(x0, x0 + crop_w)

        geo = CropGeometry.from_rig(self.rig, x0, y0, crop_w, crop_h)
        fields = build_fields(geo)
        dev = torch.device(device)
        self._background = torch.from_numpy(background).to(dev)
        src = self._background[self._rows, self._cols].permute(2, 0, 1).float()
        self._src = src.unsqueeze(0).contiguous()
        # Fields go from pixels to grid_sample's normalised units (align_corners=False).
        to_norm = torch.tensor([2.0 / crop_w, 2.0 / crop_h])
        # The face fields are zero outside the lower face and brows: keep only their box.
        live = (fields.face.abs() > 1e-3).any(dim=0).any(dim=-1)
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
        self._lids = EyeLids(geo, self._src)
        self._mouth = InnerMouth(geo, device)
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
        rig, ed = self.rig, self.rig.eye_distance
        half_w = rig.mouth_width / 2
        top, bottom = rig.lip_y - 0.05 * ed, rig.lip_y + (JAW_DROP_ED + 0.1) * ed
        if params_row is None:
            pad_x = pad_y = float(self._head_at_mouth.abs().sum(dim=0).max()) + 1
            dx = dy = 0.0
        else:
            row = torch.tensor([list(params_row)], dtype=torch.float32)
            _, head = self._coefficients(row)
            dx, dy = (head.to(self._head_at_mouth.device) @ self._head_at_mouth)[0].tolist()
            pad_x = pad_y = 1.0
        return (
            max(0, math.floor(rig.mouth_x - half_w + dx - pad_x)),
            max(0, math.floor(top + dy - pad_y)),
            min(self.size.width, math.ceil(rig.mouth_x + half_w + dx + pad_x)),
            min(self.size.height, math.ceil(bottom + dy + pad_y)),
        )

    def _face_frame(self, d_head_px: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """Face-frame pixel positions of a patch: where the head motion brought each pixel from."""
        return pixel_grid(rows, cols, d_head_px.device) - d_head_px[:, rows, cols]

    @torch.inference_mode()
    def render(self, params: torch.Tensor) -> torch.Tensor:
        """float32 [B, N_PARAMS] → uint8 [B, H, W, 3] on the CPU."""
        if params.ndim != 2 or params.shape[1] != N_PARAMS:
            raise ValueError(f"params must be [B, {N_PARAMS}], got {tuple(params.shape)}")
        n = params.shape[0]
        _, _, crop_w, crop_h = self.crop_box
        face_c, head_c = self._coefficients(params)
        blink = params[:, P.BLINK].to(self._face.device, torch.float32)

        # The head carries the deformed face along: the face field is evaluated where the head
        # moved the mouth to. Shifting it by whole pixels (the head field is nearly a translation
        # around the mouth) costs a copy instead of a second grid_sample, and keeps the lip step
        # within half a pixel of the lip it cuts.
        shift = (
            (head_c @ self._head_at_mouth).round().clamp(-self._max_shift_px, self._max_shift_px)
        )
        grid = torch.addmm(self._identity_flat, head_c, self._head, alpha=-1.0)
        grid = grid.view(n, crop_h, crop_w, 2)
        d_head_px = None
        if bool((blink > 0).any()):
            d_head_px = (self._identity - grid) / self._to_norm
        fh, fw = self._face_hw
        d_face_box = (face_c @ self._face).view(n, fh, fw, 2)
        crop, d_face = sample_crop(self._src, grid, d_face_box, self._face_box, shift)
        # The inner mouth is found in the face's own frame, from the face field alone, so it
        # matches the lip step exactly and the head motion cannot open a sliver elsewhere.
        rows, cols = self._mouth.rows, self._mouth.cols
        q = self._mouth_px - shift.view(n, 1, 1, 2)
        self._mouth.composite(crop, q, q - d_face[:, rows, cols] / self._to_norm)
        if d_head_px is not None:
            qs = [self._face_frame(d_head_px, r, c) for r, c in self._lids.patches()]
            self._lids.composite(crop, qs, blink)
        return pasted(self._background, crop, self._rows, self._cols)
