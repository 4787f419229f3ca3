"""What both photo renderers share: the framed photo as a cached full-frame background, the
crop's identity sampling grid, the paste of a moved crop, and the face and head coefficients a
frame's parameters drive (the jaw's lip seal, the closure's hold, breathing's lift)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agenthuman_local.engine.base import FrameSize, P

LIP_SEAL = 0.08  # JAW below this keeps the lips together


def framed_background(
    image: np.ndarray, size: FrameSize, scale: float, dx: float, dy: float
) -> np.ndarray:
    """The photo scaled and placed; where it does not reach, a blurred, dimmed enlargement of it."""
    h, w = image.shape[:2]
    m = np.array([[scale, 0, dx], [0, scale, dy]], np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    frame = cv2.warpAffine(
        image, m, (size.width, size.height), flags=interp, borderMode=cv2.BORDER_REPLICATE
    )
    cover = cv2.warpAffine(
        np.ones((h, w), np.float32), m, (size.width, size.height), flags=cv2.INTER_LINEAR
    )
    if cover.min() > 0.999:
        return frame
    # The backdrop a video app would use: the same photo enlarged to cover, about the same
    # centre, blurred beyond recognition and dimmed so the real photo stands out.
    big = max(size.width / w, size.height / h)
    cx, cy = (size.width / 2 - dx) / scale, (size.height / 2 - dy) / scale
    m_big = np.array(
        [[big, 0, size.width / 2 - cx * big], [0, big, size.height / 2 - cy * big]], np.float32
    )
    fill = cv2.warpAffine(image, m_big, (size.width, size.height), borderMode=cv2.BORDER_REFLECT)
    fill = cv2.GaussianBlur(fill, (0, 0), sigmaX=0.04 * max(size.width, size.height)) * 0.7
    edge = cv2.GaussianBlur(cv2.erode(cover, np.ones((9, 9), np.uint8)), (0, 0), sigmaX=4.0)
    alpha = (edge * cover)[..., None]
    return (frame * alpha + fill * (1 - alpha)).round().clip(0, 255).astype(np.uint8)


def shifted(span: slice, by: int, size: int) -> tuple[slice, slice]:
    """(destination, source-relative) slices that move `span` by `by` within [0, size)."""
    start, stop = max(0, span.start + by), min(size, span.stop + by)
    return slice(start, stop), slice(start - by - span.start, stop - by - span.start)


def identity_grid(height: int, width: int, device: torch.device | str) -> torch.Tensor:
    """[1, height, width, 2] each crop pixel's centre in grid_sample's units (align_corners
    False), x then y."""
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).unsqueeze(0).to(device)


def pixel_grid(rows: slice, cols: slice, device: torch.device | str) -> torch.Tensor:
    """[1, h, w, 2] the pixel positions (x, y) of the crop's patch at `rows`, `cols`."""
    ys = torch.arange(rows.start, rows.stop, dtype=torch.float32)
    xs = torch.arange(cols.start, cols.stop, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).unsqueeze(0).to(device)


def coefficients(params: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame parameters [B, N_PARAMS] → (face [B, 6]: jaw wide, jaw round, spread, round,
    closure, brow; head [B, 5]: tx, ty, yaw, pitch, roll), on `device`."""
    p = params.to(device, torch.float32)
    # Soft lips stay sealed over the first few millimetres of jaw travel; without this the
    # smallest jaw motion (the driver's anticipation, the tail of a release) would already
    # show a dark line. Past that they peel apart progressively, so the opening grows a
    # little slower than the jaw at first. A bilabial closure holds them together whatever
    # the jaw does.
    jaw = ((p[:, P.JAW] - LIP_SEAL) / (1.0 - LIP_SEAL)).clamp(0, 1) ** 1.35
    rnd = p[:, P.ROUND].clamp(0, 1)
    jaw = jaw * (1.0 - 0.9 * p[:, P.CLOSURE].clamp(0, 1))
    face = torch.stack(
        [
            jaw * (1 - rnd),
            jaw * rnd,
            p[:, P.SPREAD].clamp(0, 1),
            rnd,
            p[:, P.CLOSURE].clamp(0, 1),
            p[:, P.BROW].clamp(-1, 1),
        ],
        dim=1,
    )
    # The driver already turns listening into pose and brows (LISTEN itself adds nothing
    # here); breathing lifts the head a touch, as the shoulders outside the crop cannot move.
    head = torch.stack(
        [
            p[:, P.TX],
            p[:, P.TY] - 0.25 * p[:, P.BREATH],
            p[:, P.YAW],
            p[:, P.PITCH],
            p[:, P.ROLL],
        ],
        dim=1,
    ).clamp(-1.5, 1.5)
    return face, head


def sample_crop(
    src: torch.Tensor,
    grid: torch.Tensor,
    d_face_box: torch.Tensor,
    face_box: tuple[slice, slice],
    shift: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop drawn from the photo crop `src` [1, 3, h, w]: the face field `d_face_box`
    [B, box h, box w, 2] (over `face_box`) moved by each frame's whole-pixel head `shift`
    [B, 2] and taken off the head's `grid` [B, h, w, 2] (in place), then one grid_sample.
    → (crop [B, 3, h, w], the face field as moved [B, h, w, 2])."""
    n, crop_h, crop_w = grid.shape[:3]
    d_face = torch.zeros_like(grid)
    rows, cols = face_box
    for b, (dx, dy) in enumerate(shift.tolist()):
        dst_r, src_r = shifted(rows, int(dy), crop_h)
        dst_c, src_c = shifted(cols, int(dx), crop_w)
        d_face[b, dst_r, dst_c] = d_face_box[b, src_r, src_c]
    # A shift can carry the window's faint outer ramp onto the border; pin it back to zero.
    d_face[:, [0, -1]] = 0.0
    d_face[:, :, [0, -1]] = 0.0
    grid -= d_face
    crop = F.grid_sample(
        src.expand(n, -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return crop, d_face


def pasted(background: torch.Tensor, crop: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """Frames [B, H, W, 3] uint8 on the CPU: `crop` [B, 3, h, w] (0–255, rounded in place)
    over copies of the cached `background` at (`rows`, `cols`)."""
    frames = background.unsqueeze(0).repeat(crop.shape[0], 1, 1, 1)
    frames[:, rows, cols] = crop.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return frames.cpu()
