"""Causal log-mel features at 16 kHz in plain torch (no torchaudio, no scipy): a test-side
reference of what an audio-driven renderer might compute from the server's audio."""

from __future__ import annotations

import numpy as np
import torch

from agenthuman_local.audio import SAMPLE_RATE_HZ


def mel_filterbank(
    n_fft: int = 400, n_mels: int = 80, sample_rate_hz: int = SAMPLE_RATE_HZ
) -> torch.Tensor:
    """Triangular HTK-mel filters, [n_fft // 2 + 1, n_mels], area-normalised like Slaney's."""

    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    n_freqs = n_fft // 2 + 1
    freqs = torch.linspace(0.0, sample_rate_hz / 2, n_freqs, dtype=torch.float64)
    top = hz_to_mel(torch.tensor(sample_rate_hz / 2, dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rise = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    fall = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    fb = torch.clamp(torch.minimum(rise, fall), min=0.0)
    fb = fb * (2.0 / (upper - lower))[None, :]
    return fb.to(torch.float32)


class FeatureExtractor:
    """Causal log-mel and RMS at 16 kHz: 25 ms Hann windows every 10 ms, 80 mel bands.

    A window is emitted only once its last sample has arrived (no centre padding), carrying the
    last n_fft − hop samples over between pushes, so features never depend on future audio.
    """

    def __init__(
        self,
        n_fft: int = 400,
        hop: int = 160,
        n_mels: int = 80,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
    ) -> None:
        self.n_fft = n_fft
        self.hop = hop
        self.n_mels = n_mels
        self.sample_rate_hz = sample_rate_hz
        self._window = torch.hann_window(n_fft, periodic=True)
        self._mel = mel_filterbank(n_fft, n_mels, sample_rate_hz)
        self._pending = torch.zeros(0)

    def push(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (log10 mel power [T, n_mels], RMS [T]) for every window completed by this push."""
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))
        buf = torch.cat([self._pending, x])
        count = 0 if buf.numel() < self.n_fft else 1 + (buf.numel() - self.n_fft) // self.hop
        if count == 0:
            self._pending = buf
            return torch.zeros(0, self.n_mels), torch.zeros(0)
        frames = buf.unfold(0, self.n_fft, self.hop)[:count]
        self._pending = buf[count * self.hop :].clone()
        rms = torch.sqrt(torch.mean(frames * frames, dim=1))
        spec = torch.fft.rfft(frames * self._window, dim=1)
        power = spec.real**2 + spec.imag**2
        log_mel = torch.log10(torch.clamp(power @ self._mel, min=1e-10))
        return log_mel, rms
