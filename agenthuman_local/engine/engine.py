"""The engine the app and the session runner hold: renderers, drivers and previews by avatar id.

`load()` warms the shipped avatars off the event loop at start-up, so the first session does
not pay for painting backgrounds; until then `ready` is False and the API answers try-again.
Photo avatars come from `engine/photo.py`, imported only when one is asked for. Plug-ins
(SPEC §9) are the folders under `engine.models_dir` that pass verification when the engine is
built; each one is the public avatar `avat_plugin_<name>`, known here by that id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from agenthuman_local.avatars import PLUGIN_AVATAR_PREFIX, SHIPPED_ROSTER
from agenthuman_local.config import Settings
from agenthuman_local.engine.base import N_PARAMS, FrameSize, Renderer
from agenthuman_local.engine.driver import Driver
from agenthuman_local.engine.plugins import PluginError, discover, load_plugin, read_manifest
from agenthuman_local.engine.plugins import verify_files as verify_plugin_files
from agenthuman_local.engine.procedural import ProceduralRenderer
from agenthuman_local.engine.procedural_styles import STYLES

# The shipped procedural avatars' names by id, from the roster (avatars.SHIPPED_ROSTER).
SHIPPED_AVATARS: dict[str, str] = {avatar_id: name for avatar_id, name, _ in SHIPPED_ROSTER}
PREVIEW_SIZE = FrameSize(500, 500)
# Sizes most sessions use (SPEC §3 defaults of both API eras), warmed at start-up.
WARM_SIZES = (FrameSize(1280, 720), FrameSize(960, 720))
log = logging.getLogger(__name__)


def plugin_avatar_id(plugin_name: str) -> str:
    """`avat_plugin_<name>`, the name lower-cased with anything but [a-z0-9_] as '_'."""
    return PLUGIN_AVATAR_PREFIX + re.sub(r"[^a-z0-9_]", "_", plugin_name.lower())


class UnknownAvatarError(LookupError):
    """No shipped avatar has this id (and it is not a photo avatar)."""


class Engine:
    def __init__(
        self,
        *,
        fps: int = 25,
        deterministic: bool = False,
        seed: int = 0,
        torch_threads: int | None = 1,
        warm_sizes: tuple[FrameSize, ...] = WARM_SIZES,
        models_dir: Path | None = None,
    ) -> None:
        self.fps = fps
        self.deterministic = deterministic
        self.seed = seed
        self.ready = False
        self._torch_threads = torch_threads
        self._warm_sizes = warm_sizes
        self._load_lock = asyncio.Lock()
        # avatar id → (plug-in folder, its name), for the plug-ins that passed verification.
        self.plugins: dict[str, tuple[Path, str]] = {}
        if models_dir is not None:
            self.plugins = find_plugins(models_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """From the `engine` and `video` sections of the config."""
        return cls(
            fps=settings.video.fps,
            deterministic=settings.engine.deterministic,
            seed=settings.engine.seed,
            models_dir=settings.engine.models_dir,
        )

    async def load(self) -> None:
        """Warm the shipped renderers on a worker thread; sets `ready`. Safe to await twice."""
        async with self._load_lock:
            if not self.ready:
                await asyncio.to_thread(self._warm)
                self.ready = True

    def _warm(self) -> None:
        if self._torch_threads is not None:
            # Per-frame work is many small tensor ops: extra intra-op threads only add
            # hand-off cost and fight the other sessions' render threads for the cores.
            torch.set_num_threads(self._torch_threads)
        jobs = [(a, size) for a in SHIPPED_AVATARS for size in self._warm_sizes]
        # Two painters: torch releases the GIL, and start-up has the cores to itself.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="engine-warm") as pool:
            list(pool.map(lambda job: _warm_one(*job), jobs))

    def make_driver(self, fps: int | None = None) -> Driver:
        return Driver(fps or self.fps, seed=self.seed, deterministic=self.deterministic)

    def make_renderer(
        self,
        avatar_id: str,
        size: FrameSize,
        device: str,
        avatar_kind: str = "procedural",
        avatar_dir: Path | None = None,
    ) -> Renderer:
        """A renderer for one session. Blocking (it may paint): call it off the event loop."""
        if avatar_kind == "plugin":
            if avatar_id not in self.plugins:
                raise UnknownAvatarError(avatar_id)
            return load_plugin(self.plugins[avatar_id][0], size, device)  # type: ignore[return-value]
        if avatar_kind == "photo":
            if avatar_dir is None:
                raise ValueError(f"photo avatar {avatar_id!r} needs its avatar_dir")
            from agenthuman_local.engine.photo import open_photo_renderer

            return open_photo_renderer(avatar_dir, size, device)
        if avatar_kind != "procedural":
            raise ValueError(f"unknown avatar kind {avatar_kind!r}")
        if avatar_id not in STYLES:
            raise UnknownAvatarError(avatar_id)
        return ProceduralRenderer(avatar_id, size, device)

    def render_preview(self, avatar_id: str) -> bytes:
        """A 500×500 PNG of a shipped avatar or plug-in at rest (for its preview URL). Blocking."""
        if avatar_id in self.plugins:
            plugin = load_plugin(self.plugins[avatar_id][0], PREVIEW_SIZE)
            return png_bytes(plugin.render(torch.zeros(1, N_PARAMS))[0].numpy())
        if avatar_id not in STYLES:
            raise UnknownAvatarError(avatar_id)
        return _preview_png(avatar_id)


def find_plugins(models_dir: Path) -> dict[str, tuple[Path, str]]:
    """The plug-ins under `models_dir` whose files verify, by avatar id. Blocking (hashes every
    file). A broken one is logged with what to do and skipped: it never stops the server."""
    found: dict[str, tuple[Path, str]] = {}
    for folder in discover(models_dir):
        try:
            manifest = read_manifest(folder)
            verify_plugin_files(folder, manifest)
        except PluginError as exc:
            log.error("plug-in %s is not available: %s", folder.name, exc)
            continue
        avatar_id = plugin_avatar_id(manifest.name)
        if avatar_id in found:
            log.error("plug-in %s: another plug-in is already %s; skipped", folder, avatar_id)
            continue
        found[avatar_id] = (folder, manifest.name)
        log.info("plug-in %s %s verified: avatar %s", manifest.name, manifest.version, avatar_id)
    return found


def _warm_one(avatar_id: str, size: FrameSize) -> None:
    ProceduralRenderer(avatar_id, size).render(torch.zeros(1, N_PARAMS))


@functools.lru_cache(maxsize=8)
def _preview_png(avatar_id: str) -> bytes:
    frame = ProceduralRenderer(avatar_id, PREVIEW_SIZE).render(torch.zeros(1, N_PARAMS))[0]
    return png_bytes(frame.numpy())


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] → PNG file bytes (stdlib only)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(np.ascontiguousarray(rows).tobytes(), 6))
        + chunk(b"IEND", b"")
    )
