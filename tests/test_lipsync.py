"""Lip sync measured from rendered pixels against the audio envelope (research/models.md §3.1).

One check, the same bounds, for every renderer: both shipped avatars and the photo avatar (the
astronaut photo through the real upload-face pipeline; its mouth region comes from the rig and
follows the head frame by frame).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from agenthuman_local.audio import pcm16_to_float
from agenthuman_local.engine.base import N_PARAMS, FrameSize
from agenthuman_local.engine.faces import prepare_face, save_avatar
from agenthuman_local.engine.photo import PhotoRenderer, open_photo_renderer
from agenthuman_local.engine.procedural import ProceduralRenderer
from tests import photos
from tests.lipsync_check import (
    drive,
    envelope_db,
    measure_sync,
    mouth_fraction,
    silent_mask,
)

SPEECH_WAV = Path(__file__).parent / "data" / "speech.wav"
FPS = 25

# Many small tensor ops: one intra-op thread is fastest and keeps CI stable on 2 cores.
torch.set_num_threads(1)


def _speech() -> np.ndarray:
    with wave.open(str(SPEECH_WAV)) as w:
        return pcm16_to_float(w.readframes(w.getnframes()))


def _photo_renderer(avatar_dir: Path) -> PhotoRenderer:
    save_avatar(prepare_face(photos.encode(photos.astronaut())), avatar_dir)
    renderer = open_photo_renderer(avatar_dir, FrameSize(640, 480))
    assert isinstance(renderer, PhotoRenderer)  # the mesh rig's renderer
    return renderer


@pytest.fixture(scope="module", params=["avat_local_ada", "avat_local_ben", "photo"])
def measured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[np.ndarray, np.ndarray, float]:
    """The speech's envelope, the mouth's dark fraction per frame, and that fraction at rest
    (a smiling photo shows dark mouth corners with its lips closed)."""
    samples = _speech()
    renderer: ProceduralRenderer | PhotoRenderer
    if request.param == "photo":
        renderer = _photo_renderer(tmp_path_factory.mktemp("avatars") / "avat_astronaut")
    else:
        renderer = ProceduralRenderer(request.param, FrameSize(256, 256))
    mouth = []
    for frames, params in drive(renderer, samples, FPS):
        regions = [renderer.mouth_region(row) for row in params.tolist()]
        mouth.append(mouth_fraction(frames, regions))
    rest = torch.zeros(1, N_PARAMS)
    at_rest = mouth_fraction(
        renderer.render(rest).numpy(), [renderer.mouth_region(rest[0].tolist())]
    )
    return envelope_db(samples, FPS), np.concatenate(mouth), float(at_rest[0])


def test_mouth_follows_the_speech_envelope(measured: tuple[np.ndarray, np.ndarray, float]) -> None:
    envelope, mouth, _ = measured
    report = measure_sync(envelope, mouth)
    assert report.r_best >= 0.6, report
    assert abs(report.best_lag) <= 1, report


def test_unrelated_audio_does_not_correlate(measured: tuple[np.ndarray, np.ndarray, float]) -> None:
    envelope, mouth, _ = measured
    unrelated = np.roll(envelope, 2 * FPS)  # the same speech, 2 s off
    assert measure_sync(unrelated, mouth).r_at_zero < 0.2


def test_a_late_video_is_measured_late(measured: tuple[np.ndarray, np.ndarray, float]) -> None:
    # Proves the measurement can fail: the same frames shown 3 frames later read as lag 3.
    envelope, mouth, _ = measured
    late = np.concatenate([np.full(3, mouth[0]), mouth[:-3]])
    report = measure_sync(envelope, late)
    assert abs(report.best_lag - 3) <= 1, report
    assert report.r_at_zero < report.r_best - 0.1


def test_mouth_is_closed_in_silence(measured: tuple[np.ndarray, np.ndarray, float]) -> None:
    envelope, mouth, rest = measured
    silent = silent_mask(envelope)
    assert 20 <= silent.sum() <= len(envelope) - 100  # the clip has both
    # Opening: the dark fraction past the face's own at rest.
    opening = mouth - rest
    speaking = opening[~silent].mean()
    assert speaking > 0.02
    assert opening[silent].mean() < 0.1 * speaking
    # Only the frame or two as the lips close after a word may show any opening at all.
    assert (opening[silent] > 0.2 * speaking).sum() <= 0.1 * silent.sum()


def test_the_photo_mouth_region_follows_the_head(tmp_path: Path) -> None:
    renderer = _photo_renderer(tmp_path / "a")
    still = renderer.mouth_region([0.0] * 13)
    moved = renderer.mouth_region([0.0] * 6 + [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # TX = 1
    assert moved[0] > still[0] and moved[2] > still[2]
    assert moved[1] == still[1]
    anywhere = renderer.mouth_region()
    assert anywhere[0] <= moved[0] and anywhere[2] >= moved[2]
    assert torch.tensor(anywhere).min() >= 0
