"""Tiny plug-ins written into a temporary models folder: manifest helpers and the window probe.

The probe is a `torch.export` program with a fixed batch of 4 and a fixed audio window of three
frames at 25 fps (its own and a look-ahead of 2), so a loader that fed it any other shape would
fail. It paints the loudness of each third of its window into one colour channel, which a test
reads back from the session's JPEG output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agenthuman_local.engine.base import N_PARAMS

SOURCE_URL = "https://example.org/tiny-face"
PROBE_NAME = "window-probe"
PROBE_FPS = 25
PROBE_LOOKAHEAD_FRAMES = 2
PROBE_BATCH = 4
PROBE_FRAME_SAMPLES = 16000 // PROBE_FPS
PROBE_WINDOW_SAMPLES = (1 + PROBE_LOOKAHEAD_FRAMES) * PROBE_FRAME_SAMPLES
# Mean |sample| of speech frames is ~0.03-0.13: scaled so they span most of a channel.
PROBE_GAIN = 4.0


def file_entry(folder: Path, name: str) -> dict[str, Any]:
    data = (folder / name).read_bytes()
    return {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(folder: Path, entry_point: str, files: list[str], **overrides: Any) -> None:
    manifest = {
        "name": folder.name,
        "version": "0.1.0",
        "licence": "Apache-2.0",
        "source_url": SOURCE_URL,
        "fps": PROBE_FPS,
        "sample_rate_hz": 16000,
        "lookahead_frames": PROBE_LOOKAHEAD_FRAMES,
        "batch": PROBE_BATCH,
        "entry_point": entry_point,
        "files": [file_entry(folder, f) for f in files],
    }
    manifest.update(overrides)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


class WindowProbe(torch.nn.Module):
    """Red: loudness of frame n's own samples; green: of frame n+1's; blue: of frame n+2's."""

    def forward(self, params: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        thirds = audio.abs().view(audio.shape[0], 3, PROBE_FRAME_SAMPLES).mean(dim=2)
        level = (thirds * PROBE_GAIN).clamp(0, 1)
        return level.view(-1, 3, 1, 1).expand(-1, -1, 24, 32)


def probe_level(samples: Any) -> float:
    """The channel value (0-255) the probe paints for one frame's int16 samples."""
    x = torch.from_numpy(np.asarray(samples).astype(np.float32)) / 32768.0
    return float((x.abs().mean() * PROBE_GAIN).clamp(0, 1) * 255) if len(x) else 0.0


def write_window_probe(models_dir: Path) -> Path:
    """models_dir/window-probe/ with model.pt2 and its manifest (look-ahead 2, batch 4)."""
    folder = models_dir / PROBE_NAME
    folder.mkdir(parents=True)
    program = torch.export.export(
        WindowProbe(),
        (torch.zeros(PROBE_BATCH, N_PARAMS), torch.zeros(PROBE_BATCH, PROBE_WINDOW_SAMPLES)),
    )
    torch.export.save(program, str(folder / "model.pt2"))
    write_manifest(folder, "torch.export:model.pt2", ["model.pt2"])
    return folder
