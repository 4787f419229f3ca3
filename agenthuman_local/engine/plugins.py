"""Neural renderer plug-ins loaded from `models/<name>/` (SPEC §9, research/models.md §4.b).

A plug-in folder holds `manifest.json` and the files it lists. Before anything is loaded every
file is checked against its byte size and sha256; a missing file is an error that names the
path and where to get it by hand (`source_url`), since nothing is ever downloaded. The network
is closed to plug-ins: the Hugging Face offline switches are set before any plug-in code runs.

A loaded plug-in is a renderer like the built-in ones (`base.Renderer`): face parameters in,
uint8 frames out, plus `render_audio` for models driven by the audio itself. Two entry points:
`torch.export:<file>` (an exported program, no plug-in code to trust) and
`python:<file.py>:<factory>` (code shipped in the folder, for models that need more).
Loading is blocking (hashing gigabytes takes seconds): call it off the event loop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from agenthuman_local.engine.base import N_PARAMS, SAMPLE_RATE_HZ, FrameSize

MANIFEST_NAME = "manifest.json"
# Set for the whole process, not only during load: these libraries read them lazily, and a
# plug-in must not fetch anything at render time either.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_HASH_CHUNK = 8 * 1024 * 1024


class PluginError(Exception):
    """A plug-in cannot be loaded; the message says which folder and what to do."""


class ManifestInvalid(PluginError):
    pass


class WeightsMissing(PluginError):
    def __init__(self, message: str, missing: list[Path]) -> None:
        super().__init__(message)
        self.missing = missing


class WeightsCorrupt(PluginError):
    pass


@dataclass(frozen=True)
class PluginFile:
    path: str  # relative to the plug-in folder, '/'-separated
    size: int  # bytes
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    licence: str
    source_url: str
    fps: int
    sample_rate_hz: int
    lookahead_frames: int
    batch: int
    entry_point: str
    files: tuple[PluginFile, ...]

    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate_hz / self.fps

    @property
    def audio_window_samples(self) -> int:
        """Samples `render_audio` takes per frame: the frame's own and its look-ahead."""
        return round((1 + self.lookahead_frames) * self.samples_per_frame)


class PluginRenderer(Protocol):
    """What a loaded plug-in offers; a `base.Renderer` with an audio-driven path besides."""

    manifest: Manifest
    size: FrameSize
    device: str

    def render(self, params: torch.Tensor) -> torch.Tensor:
        """float32 [B, N_PARAMS] → uint8 [B, H, W, 3] on the CPU."""
        ...

    def render_audio(self, audio: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """float32 audio [B, audio_window_samples] at 16 kHz (frame n's samples, then its
        look-ahead) and params [B, N_PARAMS] → uint8 [B, H, W, 3] on the CPU."""
        ...


def _field(raw: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    value = raw.get(key)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ManifestInvalid(f"{where}: `{key}` must be a {kind.__name__}, got {value!r}")
    return value


def _file_entry(raw: Any, where: Path, index: int) -> PluginFile:
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{where}: `files[{index}]` must be an object")
    path = _field(raw, "path", str, where)
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in path:
        raise ManifestInvalid(
            f"{where}: `files[{index}].path` must stay inside the folder: {path!r}"
        )
    size = _field(raw, "size", int, where)
    digest = _field(raw, "sha256", str, where).lower()
    if size < 0 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ManifestInvalid(f"{where}: `files[{index}]` needs a size ≥ 0 and a 64-hex sha256")
    return PluginFile(path=str(pure), size=size, sha256=digest)


def read_manifest(plugin_dir: Path) -> Manifest:
    where = plugin_dir / MANIFEST_NAME
    try:
        raw = json.loads(where.read_text())
    except FileNotFoundError:
        raise ManifestInvalid(f"{where} is missing") from None
    except (OSError, ValueError) as exc:
        raise ManifestInvalid(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{where}: the manifest must be a JSON object")
    files = raw.get("files")
    if not isinstance(files, list) or not files:
        raise ManifestInvalid(f"{where}: `files` must be a non-empty list")
    manifest = Manifest(
        name=_field(raw, "name", str, where),
        version=_field(raw, "version", str, where),
        licence=_field(raw, "licence", str, where),
        source_url=_field(raw, "source_url", str, where),
        fps=_field(raw, "fps", int, where),
        sample_rate_hz=_field(raw, "sample_rate_hz", int, where),
        lookahead_frames=_field(raw, "lookahead_frames", int, where),
        batch=_field(raw, "batch", int, where),
        entry_point=_field(raw, "entry_point", str, where),
        files=tuple(_file_entry(f, where, i) for i, f in enumerate(files)),
    )
    checks = [
        ("fps", 1 <= manifest.fps <= 120, "an integer 1-120"),
        ("sample_rate_hz", manifest.sample_rate_hz == SAMPLE_RATE_HZ, f"{SAMPLE_RATE_HZ}"),
        ("lookahead_frames", 0 <= manifest.lookahead_frames <= 25, "an integer 0-25"),
        ("batch", 1 <= manifest.batch <= 256, "an integer 1-256"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ManifestInvalid(
                f"{where}: `{key}` must be {expected}, got {getattr(manifest, key)!r}"
            )
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(plugin_dir: Path, manifest: Manifest) -> None:
    """Every listed file is present with its size and sha256, or a PluginError says which not."""
    missing = [plugin_dir / f.path for f in manifest.files if not (plugin_dir / f.path).is_file()]
    if missing:
        listed = "\n".join(
            f"  {plugin_dir / f.path} ({f.size} bytes)"
            for f in manifest.files
            if plugin_dir / f.path in missing
        )
        raise WeightsMissing(
            f"plug-in {manifest.name!r} is missing {len(missing)} file(s):\n{listed}\n"
            f"Nothing is downloaded automatically: get them by hand from {manifest.source_url} "
            f"and place them at the paths above (see models/README.md).",
            missing,
        )
    for f in manifest.files:
        path = plugin_dir / f.path
        size = path.stat().st_size
        if size != f.size:
            raise WeightsCorrupt(
                f"plug-in {manifest.name!r}: {path} is {size} bytes, the manifest says {f.size}; "
                f"the file is incomplete or a different version. Fetch it again from "
                f"{manifest.source_url}."
            )
        actual = _sha256(path)
        if actual != f.sha256:
            raise WeightsCorrupt(
                f"plug-in {manifest.name!r}: {path} has sha256 {actual}, the manifest says "
                f"{f.sha256}; refusing to load a corrupted or altered file. Fetch it again "
                f"from {manifest.source_url}."
            )


def discover(models_dir: Path) -> list[Path]:
    """Plug-in folders (those with a manifest) under `models_dir`, sorted by name."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if (p / MANIFEST_NAME).is_file())


def _to_frames(images: torch.Tensor, size: FrameSize) -> torch.Tensor:
    """float [B, 3, h, w] in [0, 1] → uint8 [B, H, W, 3] on the CPU at the session's size."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise PluginError(f"a plug-in returned {tuple(images.shape)}, expected [B, 3, H, W]")
    # To uint8 at the model's size, then resized as uint8 channels-last: 30x cheaper than
    # resizing floats to 720p (8.5 ms vs 258 ms for 4 frames on one CPU thread), ±1 level.
    frames = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    frames = frames.contiguous(memory_format=torch.channels_last)
    if frames.shape[-2:] != (size.height, size.width):
        frames = F.interpolate(
            frames, size=(size.height, size.width), mode="bilinear", align_corners=False
        )
    return frames.permute(0, 2, 3, 1).contiguous().cpu()


class ExportedPlugin:
    """A `torch.export` program: forward(params [b, N_PARAMS], audio [b, S]) → [b, 3, h, w].

    Runs in chunks of the manifest's `batch`, padding the last one, so programs exported with a
    fixed batch work as well as those with a dynamic one.
    """

    def __init__(self, plugin_dir: Path, manifest: Manifest, size: FrameSize, device: str) -> None:
        self.manifest = manifest
        self.size = size
        self.device = device
        file = manifest.entry_point.split(":", 1)[1]
        if file not in {f.path for f in manifest.files}:
            raise ManifestInvalid(
                f"{plugin_dir / MANIFEST_NAME}: `entry_point` file {file!r} is not in `files`"
            )
        self._module = torch.export.load(str(plugin_dir / file)).module().to(device)

    def render(self, params: torch.Tensor) -> torch.Tensor:
        audio = torch.zeros(params.shape[0], self.manifest.audio_window_samples)
        return self.render_audio(audio, params)

    @torch.inference_mode()
    def render_audio(self, audio: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        if params.ndim != 2 or params.shape[1] != N_PARAMS or audio.shape[0] != params.shape[0]:
            raise ValueError(f"need params [B, {N_PARAMS}] and audio [B, S] with the same B")
        out = []
        step = self.manifest.batch
        for start in range(0, params.shape[0], step):
            p = params[start : start + step].to(self.device, torch.float32)
            a = audio[start : start + step].to(self.device, torch.float32)
            n = p.shape[0]
            if n < step:
                p = torch.cat([p, p[-1:].expand(step - n, -1)])
                a = torch.cat([a, a[-1:].expand(step - n, -1)])
            out.append(_to_frames(self._module(p, a)[:n], self.size))
        return torch.cat(out)


def _python_factory(plugin_dir: Path, manifest: Manifest) -> Callable[..., PluginRenderer]:
    _, file, attr = manifest.entry_point.split(":", 2)
    if file not in {f.path for f in manifest.files}:
        raise ManifestInvalid(
            f"{plugin_dir / MANIFEST_NAME}: `entry_point` file {file!r} is not in `files`"
        )
    module_name = f"agenthuman_plugin_{manifest.name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, plugin_dir / file)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {plugin_dir / file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ManifestInvalid(f"{plugin_dir / file} has no callable {attr!r} (from `entry_point`)")
    return factory


def load_plugin(plugin_dir: Path, size: FrameSize, device: str = "cpu") -> PluginRenderer:
    """Verify the folder against its manifest, close the network, then load the plug-in."""
    manifest = read_manifest(plugin_dir)
    kind = manifest.entry_point.split(":", 1)[0]
    if kind not in {"torch.export", "python"} or manifest.entry_point.count(":") != (
        1 if kind == "torch.export" else 2
    ):
        raise ManifestInvalid(
            f"{plugin_dir / MANIFEST_NAME}: `entry_point` must be 'torch.export:<file>' or "
            f"'python:<file.py>:<factory>', got {manifest.entry_point!r}"
        )
    verify_files(plugin_dir, manifest)
    os.environ.update(OFFLINE_ENV)
    if kind == "torch.export":
        return ExportedPlugin(plugin_dir, manifest, size, device)
    return _python_factory(plugin_dir, manifest)(plugin_dir, manifest, size, device)
