"""Plug-ins through the real loader: a tiny exported model and a python one written to tmp_path."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.engine.plugins import (
    OFFLINE_ENV,
    ManifestInvalid,
    WeightsCorrupt,
    WeightsMissing,
    discover,
    load_plugin,
    read_manifest,
)
from tests.plugin_fixture import SOURCE_URL, write_manifest


class TinyFace(torch.nn.Module):
    """Brightness follows the jaw parameter, redness follows the audio's loudness."""

    def __init__(self) -> None:
        super().__init__()
        self.tint = torch.nn.Parameter(torch.tensor([0.2, 0.5, 0.8]))

    def forward(self, params: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        jaw = params[:, 0].view(-1, 1, 1, 1)
        loud = audio.abs().mean(dim=1).view(-1, 1, 1, 1).clamp(0, 1)
        base = self.tint.view(1, 3, 1, 1) * jaw
        red = torch.cat([loud, torch.zeros_like(loud), torch.zeros_like(loud)], dim=1)
        return (base + red).expand(-1, -1, 24, 32)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-face"
    folder.mkdir()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        TinyFace(),
        (torch.zeros(4, N_PARAMS), torch.zeros(4, 1920)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    torch.export.save(program, str(folder / "model.pt2"))
    write_manifest(folder, "torch.export:model.pt2", ["model.pt2"])
    return folder


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)


def test_exported_model_loads_verified_and_renders(exported: Path, offline_env: None) -> None:
    plugin = load_plugin(exported, FrameSize(64, 48))
    assert plugin.manifest.name == "tiny-face"
    assert plugin.manifest.audio_window_samples == 3 * 640
    for key, value in OFFLINE_ENV.items():
        assert os.environ[key] == value
    params = torch.zeros(6, N_PARAMS)  # more than one manifest batch, with a ragged tail
    params[:, P.JAW] = torch.linspace(0, 1, 6)
    frames = plugin.render(params)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == torch.uint8
    # Resized to the session size; brightness follows the jaw, frame by frame.
    assert frames[0].max() == 0
    assert torch.equal(frames[5, 0, 0], torch.tensor([51, 128, 204], dtype=torch.uint8))
    means = frames.float().mean(dim=(1, 2, 3))
    assert bool((means[1:] > means[:-1]).all())


def test_exported_model_follows_the_audio(exported: Path, offline_env: None) -> None:
    plugin = load_plugin(exported, FrameSize(32, 24))
    audio = torch.zeros(2, plugin.manifest.audio_window_samples)
    audio[1] = 0.5
    frames = plugin.render_audio(audio, torch.zeros(2, N_PARAMS))
    assert frames[0, :, :, 0].max() == 0
    assert int(frames[1, 0, 0, 0]) == 128


def test_a_corrupted_file_is_refused(exported: Path) -> None:
    data = bytearray((exported / "model.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    (exported / "model.pt2").write_bytes(bytes(data))
    with pytest.raises(WeightsCorrupt) as info:
        load_plugin(exported, FrameSize(64, 48))
    message = str(info.value)
    assert "sha256" in message and "model.pt2" in message and "refusing" in message


def test_a_truncated_file_is_refused_by_size(exported: Path) -> None:
    data = (exported / "model.pt2").read_bytes()
    (exported / "model.pt2").write_bytes(data[:-10])
    with pytest.raises(WeightsCorrupt, match="bytes, the manifest says"):
        load_plugin(exported, FrameSize(64, 48))


def test_a_missing_file_names_the_path_and_where_to_get_it(exported: Path) -> None:
    (exported / "model.pt2").unlink()
    with pytest.raises(WeightsMissing) as info:
        load_plugin(exported, FrameSize(64, 48))
    message = str(info.value)
    assert str(exported / "model.pt2") in message
    assert SOURCE_URL in message
    assert info.value.missing == [exported / "model.pt2"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"fps": "25"}, "fps"),
        ({"fps": 0}, "fps"),
        ({"batch": True}, "batch"),
        ({"sample_rate_hz": 22050}, "sample_rate_hz"),
        ({"source_url": None}, "source_url"),
        ({"files": []}, "files"),
        ({"files": [{"path": "../outside.bin", "size": 1, "sha256": "0" * 64}]}, "files[0].path"),
        ({"files": [{"path": "model.pt2", "size": 1, "sha256": "xyz"}]}, "files[0]"),
        ({"entry_point": "onnx:model.onnx"}, "entry_point"),
    ],
)
def test_invalid_manifests_name_the_key(exported: Path, override: dict, key: str) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    manifest.update(override)
    (exported / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestInvalid, match=re.escape(f"`{key}")):
        load_plugin(exported, FrameSize(64, 48))


def test_entry_point_must_be_a_verified_file(exported: Path) -> None:
    (exported / "other.pt2").write_bytes((exported / "model.pt2").read_bytes())
    write_manifest(exported, "torch.export:other.pt2", ["model.pt2"])
    with pytest.raises(ManifestInvalid, match="not in `files`"):
        load_plugin(exported, FrameSize(64, 48))


PYTHON_PLUGIN = """
import torch

class Grey:
    def __init__(self, plugin_dir, manifest, size, device):
        self.manifest, self.size, self.device = manifest, size, device
        self.level = int((plugin_dir / "level.txt").read_text())

    def render(self, params):
        return torch.full((params.shape[0], self.size.height, self.size.width, 3), self.level,
                          dtype=torch.uint8)

    def render_audio(self, audio, params):
        return self.render(params)

def create(plugin_dir, manifest, size, device):
    return Grey(plugin_dir, manifest, size, device)
"""


def test_python_entry_point(tmp_path: Path, offline_env: None) -> None:
    folder = tmp_path / "grey"
    folder.mkdir()
    (folder / "plugin.py").write_text(PYTHON_PLUGIN)
    (folder / "level.txt").write_text("77")
    write_manifest(folder, "python:plugin.py:create", ["plugin.py", "level.txt"])
    plugin = load_plugin(folder, FrameSize(40, 30))
    frames = plugin.render(torch.zeros(2, N_PARAMS))
    assert frames.shape == (2, 30, 40, 3) and int(frames.max()) == 77
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_python_code_is_verified_before_it_runs(tmp_path: Path) -> None:
    folder = tmp_path / "grey"
    folder.mkdir()
    (folder / "plugin.py").write_text(PYTHON_PLUGIN)
    (folder / "level.txt").write_text("77")
    write_manifest(folder, "python:plugin.py:create", ["plugin.py", "level.txt"])
    (folder / "plugin.py").write_text(PYTHON_PLUGIN.replace("level", "levels"))
    with pytest.raises(WeightsCorrupt, match="plugin.py"):
        load_plugin(folder, FrameSize(40, 30))


def test_discover_lists_folders_with_a_manifest(exported: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert discover(tmp_path) == [exported]
    assert discover(tmp_path / "nowhere") == []
    assert read_manifest(exported).files[0].path == "model.pt2"
