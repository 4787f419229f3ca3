"""The engine's shared vocabulary: the face-parameter space and what a session needs of a
renderer and a driver (the `Renderer`, `AudioRenderer` and `FrameDriver` protocols), and what a
render worker may answer a submit with (`WorkerFull`, `WorkerClosed`).

Every renderer (procedural, photo, plug-in) draws from the same per-frame parameter vector, so the
driver, the runner and the tests never care which one is behind a session. Pure: no torch here;
renderers take and return torch tensors, typed loosely as `Any` to keep this module light.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# Defined in the pure layer (`agenthuman_local.audio`); the engine's modules read them here.
from agenthuman_local.audio import SAMPLE_RATE_HZ as SAMPLE_RATE_HZ
from agenthuman_local.audio import frame_sample_range as frame_sample_range

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np


class P(enum.IntEnum):
    """Index of each face parameter in a `[B, N_PARAMS]` float32 tensor.

    Ranges: JAW, SPREAD, ROUND, CLOSURE, BLINK, LISTEN in [0, 1]; BROW, YAW, PITCH, ROLL, TX, TY,
    BREATH, GAZE_X, GAZE_Y in [-1, 1] (0 = neutral, gaze 0 = at the camera). Head pose values are
    normalised; a renderer maps them to its own angles and pixel offsets (small: a few degrees, a
    few % of the frame).
    """

    JAW = 0  # jaw / mouth opening
    SPREAD = 1  # lip spread (ee)
    ROUND = 2  # lip rounding (oo)
    CLOSURE = 3  # bilabial closure pressing the lips together (m, b, p)
    BLINK = 4  # 1 = lids closed
    BROW = 5  # brow raise (+) / frown (-)
    YAW = 6
    PITCH = 7
    ROLL = 8
    TX = 9  # sway, horizontal
    TY = 10  # sway, vertical
    BREATH = 11  # shoulders / chest rise
    LISTEN = 12  # attentive listening pose weight
    GAZE_X = 13  # eyes glance right (+) / left (-), in the picture
    GAZE_Y = 14  # eyes glance down (+) / up (-)


N_PARAMS = len(P)


class WorkerFull(Exception):
    """The device's job queue is full; the caller shows its frame late instead of waiting."""


class WorkerClosed(Exception):
    """The render worker (or its pool) is closed."""


@dataclass(frozen=True)
class FrameSize:
    width: int
    height: int


class Renderer(Protocol):
    """Draws whole output frames from face parameters.

    Implementations render a face crop (≤ 384×384) over a cached full-size background and move the
    paste for head sway (SPEC §9). `render` is called on the device's render worker thread, never
    on the event loop, and must be safe to call with any batch size ≥ 1.
    """

    size: FrameSize
    device: str

    def render(self, params: Any) -> Any:
        """`params`: float32 tensor [B, N_PARAMS] → uint8 tensor [B, H, W, 3] on the CPU."""
        ...


class AudioManifest(Protocol):
    @property
    def audio_window_samples(self) -> int:
        """Samples in each frame's audio window: the frame's own, then its look-ahead."""
        ...


@runtime_checkable
class AudioRenderer(Protocol):
    """A renderer driven by each frame's audio too, not only its params (a plug-in, SPEC §9)."""

    manifest: AudioManifest

    def render_audio(self, audio: Any, params: Any) -> Any:
        """`audio`: float32 [B, audio_window_samples] at 16 kHz; `params` as `render`'s."""
        ...


def audio_window_samples(renderer: Renderer) -> int:
    """Each frame's audio window for an `AudioRenderer`; 0 for a renderer driven by params only."""
    manifest = renderer.manifest if isinstance(renderer, AudioRenderer) else None
    return manifest.audio_window_samples if manifest is not None else 0


class FrameDriver(Protocol):
    """Steps the face parameters one frame at a time from the audio (`engine.driver.Driver`).

    A session deep-copies it before each step, so that throwing frames away can put it back:
    it holds plain state only.
    """

    lookahead_frames: int  # how many following frames' audio `step` wants to see

    def step(
        self,
        current: np.ndarray | None,
        lookahead: Sequence[np.ndarray] = (),
        *,
        listening: bool = False,
    ) -> np.ndarray:
        """`current`: the frame's float32 samples in [-1, 1] (None: none) → float32 [N_PARAMS]."""
        ...
