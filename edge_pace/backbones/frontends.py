"""Audio frontends in torch, exportable to ONNX by the dynamo exporter: no complex tensors.

Every frame-wise linear step (DC removal, pre-emphasis, window, DFT) is folded into the kernels of one
strided conv1d, so the STFT is a single real convolution producing [real; imag] channels.

* ``AisfxLogMel``: the aisfx CNN's input as its package computes it: peak normalisation, HTK-mel power
  spectrogram with unit-area filters (librosa ``norm=1.0``), 96 bins, window/hop 2048/1024 centred with
  zero padding, log10(1e4 S + 1), min-max normalised with (0, 9.457798957824707). Output [B, T, 96].
* ``KaldiFbank``: EAT/AST's Kaldi fbank (16 kHz, 128 bins, 25 ms / 10 ms, 'hanning' window, pre-emphasis
  0.97, DC removal, no dither, snip edges, after subtracting the clip mean) with EAT's normalisation (x + 4.268) / (2 * 4.569). [B, T, 128].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def check_waveform(wave: torch.Tensor, min_samples: int, name: str = "frontend") -> torch.Tensor:
    """Explicit input errors (Silero VAD style) instead of opaque failures deep inside torch."""
    if not isinstance(wave, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor waveform, got {type(wave).__name__}")
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise ValueError(f"{name}: expected a mono waveform of shape [batch, samples], got {tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise TypeError(f"{name}: expected float32 samples in [-1, 1], got {wave.dtype}")
    if wave.shape[-1] < min_samples:
        raise ValueError(f"{name}: audio too short: {wave.shape[-1]} samples, need at least {min_samples}")
    if not torch.isfinite(wave).all():
        raise ValueError(f"{name}: waveform contains NaN or Inf")
    return wave


def htk_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def htk_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
                       unit_area: bool = True) -> np.ndarray:
    """[n_fft//2+1, n_mels] triangular HTK-mel filters (librosa htk=True); unit_area = librosa norm=1.0."""
    fmax = sr / 2 if fmax is None else fmax
    fft_f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(htk_mel(np.array(fmin)), htk_mel(np.array(fmax)), n_mels + 2)
    hz = 700.0 * (10.0 ** (mel_pts / 2595.0) - 1.0)
    lower = (fft_f[None, :] - hz[:-2, None]) / np.diff(hz)[:-1, None]
    upper = (hz[2:, None] - fft_f[None, :]) / np.diff(hz)[1:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    if unit_area:
        fb = fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-12)
    return fb.T


def kaldi_mel_filterbank(sr: int, n_fft: int, n_mels: int, low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """[n_fft//2+1, n_mels] Kaldi mel banks (mel = 1127 ln(1 + f/700)), Nyquist column zero, as Kaldi."""
    high = sr / 2 + high if high <= 0 else high
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    lo, hi = mel(low), mel(high)
    delta = (hi - lo) / (n_mels + 1)
    b = np.arange(n_mels)[:, None]
    left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    m = mel(np.arange(n_fft // 2) * sr / n_fft)[None, :]
    fb = np.maximum(0.0, np.minimum((m - left) / (center - left), (right - m) / (right - center)))
    return np.concatenate([fb, np.zeros((n_mels, 1))], axis=1).T


class ConvPowerSTFT(nn.Module):
    """|DFT(frame_transform(frame) * window)|^2 of strided frames, via one conv1d (no complex tensors).

    ``frame_matrix`` ([win, win]) is applied to each raw frame before windowing (identity by default);
    it lets DC removal and pre-emphasis fold into the same kernels.
    """

    def __init__(self, n_fft: int, win_length: int, hop: int, window: np.ndarray,
                 frame_matrix: np.ndarray | None = None, center: bool = False) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop, self.center = n_fft, win_length, hop, center
        M = np.eye(win_length) if frame_matrix is None else frame_matrix
        k = np.arange(n_fft // 2 + 1)[:, None] * np.arange(win_length)[None, :]
        ang = 2 * math.pi * k / n_fft
        # rows: output bins; columns: raw frame samples; window applied after the frame transform
        cos = (np.cos(ang) * window[None, :]) @ M
        sin = (-np.sin(ang) * window[None, :]) @ M
        kernel = np.concatenate([cos, sin], axis=0)[:, None, :]
        self.register_buffer("kernel", torch.tensor(kernel, dtype=torch.float32), persistent=False)
        self.n_bins = n_fft // 2 + 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, T, n_bins]
        x = wave.unsqueeze(1)
        if self.center:
            pad = self.n_fft // 2
            x = nn.functional.pad(x, (pad, pad))
            if self.win_length < self.n_fft:  # window centred inside n_fft, as librosa/torch
                off = (self.n_fft - self.win_length) // 2
                x = x[..., off:]
        spec = nn.functional.conv1d(x, self.kernel, stride=self.hop)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        return (re * re + im * im).transpose(1, 2)


class AisfxLogMel(nn.Module):
    """The aisfx CNN's frontend (see module docstring)."""

    NORM_MAX = 9.457798957824707

    def __init__(self, sample_rate: int = 44100, n_fft: int = 2048, hop: int = 1024, n_mels: int = 96,
                 peak_normalise: bool = True) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.peak_normalise = peak_normalise
        window = np.hanning(n_fft + 1)[:-1]  # periodic Hann, as librosa / torch.hann_window
        self.stft = ConvPowerSTFT(n_fft, n_fft, hop, window, center=True)
        fb = htk_mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2, unit_area=True)
        self.register_buffer("mel", torch.tensor(fb, dtype=torch.float32), persistent=False)
        self.min_samples = n_fft // 2 + 1

    def frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.peak_normalise:
            peak = wave.abs().amax(dim=-1, keepdim=True)
            wave = wave / torch.where(peak > 0, peak, torch.ones_like(peak))
        power = self.stft(wave)
        mel = power @ self.mel
        return torch.log10(1e4 * mel + 1.0) / self.NORM_MAX


class KaldiFbank(nn.Module):
    """EAT/AST Kaldi fbank (see module docstring)."""

    EAT_MEAN, EAT_STD = -4.268, 4.569

    def __init__(self, sample_rate: int = 16000, n_mels: int = 128, frame_ms: float = 25.0, shift_ms: float = 10.0,
                 preemph: float = 0.97, normalise: bool = True) -> None:
        super().__init__()
        self.sample_rate, self.n_mels, self.normalise = sample_rate, n_mels, normalise
        self.win = int(sample_rate * frame_ms / 1000)
        self.hop = int(sample_rate * shift_ms / 1000)
        n_fft = 1 << (self.win - 1).bit_length()
        # DC removal then pre-emphasis (x[i] - p x[i-1], x[-1] := x[0]) as one matrix on the raw frame
        dc = np.eye(self.win) - np.full((self.win, self.win), 1.0 / self.win)
        shift = np.eye(self.win, k=-1)
        shift[0, 0] = 1.0
        pre = np.eye(self.win) - preemph * shift
        window = np.hanning(self.win)  # window_type='hanning' (symmetric), as EAT/AST call kaldi.fbank
        self.stft = ConvPowerSTFT(n_fft, self.win, self.hop, window, frame_matrix=pre @ dc, center=False)
        fb = kaldi_mel_filterbank(sample_rate, n_fft, n_mels)
        self.register_buffer("mel", torch.tensor(fb, dtype=torch.float32), persistent=False)
        self.min_samples = self.win

    def frames(self, n_samples: int) -> int:
        return 1 + (n_samples - self.win) // self.hop

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave - wave.mean(dim=-1, keepdim=True)  # EAT/AST subtract the clip mean first
        power = self.stft(wave)
        fb = torch.log(torch.clamp(power @ self.mel, min=torch.finfo(torch.float32).eps))
        if self.normalise:
            fb = (fb - self.EAT_MEAN) / (2 * self.EAT_STD)
        return fb
