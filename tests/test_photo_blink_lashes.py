"""`photo_blink.LidWarp` on a synthetic eye: the photo's lash rows ride down on the closed lid's
edge as a thin line, however thick the lash line measured over the open eye."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np
import torch

from agenthuman_local.engine.photo_geometry import MeshGeometry

_H, _W = 80, 80
_SKIN, _LASH, _WHITE = (205.0, 160.0, 140.0), (70.0, 50.0, 40.0), (230.0, 225.0, 220.0)


def _lid(sign: float, height: float) -> np.ndarray:
    x = np.linspace(20.0, 60.0, 9)
    u = (x - 40.0) / 20.0
    return np.stack([x, 40.0 + sign * height * (1.0 - u**2)], 1).astype(np.float32)


def test_a_thick_lash_line_closes_as_a_thin_one() -> None:
    """Jesse's lit eye: lashes, the lid's margin and its shade make a lash line 4.4 px thick over
    a 9.7 px opening (0.45 of it, the most that rides down whole), and it closed as a dark band
    across 0.45 of the lid. Shut, the lashes point down: the band is squeezed to at most
    `_LASH_SHUT` of the opening (old: the whole 4.5 px of a 10 px opening, now 3.6)."""
    from agenthuman_local.engine.photo_blink import _LASH_SHUT, LidWarp

    upper, lower = _lid(-1.0, 5.0), _lid(1.0, 5.0)
    iris = np.array([[40.0, 40.0], [44, 40], [40, 44], [36, 40], [40, 36]], np.float32)
    geo = SimpleNamespace(
        eye_lids=((upper, lower),),
        irises=iris[None],
        ey=np.array([0.0, 1.0], np.float32),
        width=_W,
        height=_H,
    )
    gy, gx = np.mgrid[0:_H, 0:_W].astype(np.float32)
    u = (gx - 40.0) / 20.0
    t_up, t_lo = 40.0 - 5.0 * (1 - u**2), 40.0 + 5.0 * (1 - u**2)
    photo = np.empty((_H, _W, 3), np.float32)
    photo[:] = _SKIN
    photo[(np.abs(u) <= 1) & (gy < t_up) & (gy >= t_up - 4.5)] = _LASH
    photo[(np.abs(u) <= 1) & (gy >= t_up) & (gy <= t_lo)] = _WHITE
    lids = LidWarp(cast(MeshGeometry, geo), photo.round().astype(np.uint8))
    (rows, cols), (move, _, _) = lids.patches()[0], lids.displacements(torch.ones(1))[0]
    # Down the eye's middle column (x = 40, its open edge at y = 35): how tall a stretch of the
    # shut frame samples the photo's lash rows (where its source crosses their top and bottom,
    # linear between rows).
    y = np.arange(rows.start, rows.stop, dtype=np.float64)
    source = y - move[0, :, 40 - cols.start, 1].numpy().astype(np.float64)
    lash = lids._eyes[0].lash
    assert lash >= 4.0  # measured thick, as Jesse's
    assert np.all(np.diff(source) > 0), np.round(source, 1).tolist()
    band = float(np.interp(35.0, source, y) - np.interp(35.0 - lash, source, y))
    # Squeezed to _LASH_SHUT of the 10 px opening (whole before: 4.5 px, 4 rows).
    assert band <= _LASH_SHUT * 10.0 + 0.25, (band, np.round(source, 1).tolist())
