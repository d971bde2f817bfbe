"""Audio frontends in torch, exportable to ONNX by the dynamo exporter: no complex tensors.

The STFT is a two-step FFT written with real matmuls (``PowerSTFT``): small constant DFT matrices instead of a
stored DFT kernel, a tenth of the work of a direct DFT, and plain MatMul/Mul nodes in ONNX.

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


def fft_factors(n_fft: int) -> tuple[int, int]:
    """n_fft = n1 * n2 with n1 the largest divisor <= sqrt(n_fft) (n1 = 1 for a prime: a plain DFT)."""
    n1 = max(d for d in range(1, math.isqrt(n_fft) + 1) if n_fft % d == 0)
    return n1, n_fft // n1


class PowerSTFT(nn.Module):
    """|DFT(window * frame_transform(frame))|^2 of strided frames, as a two-step FFT made of matmuls.

    n_fft = n1 * n2 (Cooley-Tukey with one split, "four-step FFT"): n1-point DFTs over the frame reshaped to
    [n1, n2], a twiddle product, then n2-point DFTs computing only the bins up to n_fft / 2. Everything is a
    real matmul or an element-wise product (no complex tensors, exportable by the dynamo exporter), the
    constants are O(n1^2 + n2^2) instead of a stored [n_fft + 2, win] DFT kernel, and the work per frame is
    about n_fft (n1 + n2) instead of n_fft * win multiply-adds (aisfx: 0.4 M instead of 4.2 M).
    ``remove_dc`` and ``preemph`` are Kaldi's per-frame steps before the window (x - mean(x), then
    x[i] - p x[i-1] with x[-1] := x[0]); frames shorter than n_fft are zero-padded at the end (as Kaldi).
    """

    def __init__(self, n_fft: int, win_length: int, hop: int, window: np.ndarray,
                 center: bool = False, remove_dc: bool = False, preemph: float = 0.0) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop, self.center = n_fft, win_length, hop, center
        self.remove_dc, self.preemph = remove_dc, float(preemph)
        self.n_bins = n_fft // 2 + 1
        n1, n2 = fft_factors(n_fft)
        self.n1, self.n2 = n1, n2
        k2 = (n_fft // 2) // n1 + 1  # the n2-point DFT outputs needed for bins k = k1 + n1 k2 <= n_fft / 2
        f1 = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1)  # [k1, j1]
        tw = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n2)) / n_fft)  # [k1, j2]
        f2 = np.exp(-2j * np.pi * np.outer(np.arange(n2), np.arange(k2)) / n2)  # [j2, k2]
        buf = lambda a: torch.tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
        self.register_buffer("f1", buf(np.concatenate([f1.real, f1.imag])), persistent=False)  # [2 n1, n1]
        self.register_buffer("tw_re", buf(tw.real), persistent=False)
        self.register_buffer("tw_im", buf(tw.imag), persistent=False)
        self.register_buffer("f2", buf(np.block([[f2.real, f2.imag], [-f2.imag, f2.real]])), persistent=False)
        self.register_buffer("window", buf(window), persistent=False)

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, S] -> [B, T, win] strided frames. Centred frames whose hop divides n_fft (aisfx) come from
        reshaping the padded signal into hop-long blocks and concatenating neighbours (the right padding is
        trimmed so that the blocks end with the last frame): a quarter of the cost of the Gather that
        ``unfold`` exports to, which serves every other case."""
        x = wave
        if self.center and self.win_length == self.n_fft and self.n_fft % self.hop == 0:
            pad = self.n_fft // 2
            r = self.n_fft // self.hop
            n_blocks = x.shape[-1] // self.hop + r  # the frame count stays 1 + S // hop for the exporter
            x = nn.functional.pad(x, (pad, pad - x.shape[-1] % self.hop))
            torch._check(x.shape[-1] == n_blocks * self.hop)
            blocks = x.reshape(x.shape[0], n_blocks, self.hop)
            n = n_blocks - r + 1
            return torch.cat([blocks[:, i : i + n] for i in range(r)], dim=-1)
        if self.center:
            pad = self.n_fft // 2
            x = nn.functional.pad(x, (pad, pad))
            if self.win_length < self.n_fft:  # window centred inside n_fft, as librosa/torch
                x = x[..., (self.n_fft - self.win_length) // 2:]
        return x.unfold(-1, self.win_length, self.hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, T, n_bins]
        frames = self.frames(wave)  # [B, T, win]
        if self.remove_dc:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemph:
            frames = frames - self.preemph * torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames * self.window
        if self.win_length < self.n_fft:
            frames = nn.functional.pad(frames, (0, self.n_fft - self.win_length))
        b, t = frames.shape[0], frames.shape[1]
        a = self.f1 @ frames.reshape(b, t, self.n1, self.n2)  # [B, T, 2 n1, n2]: n1-point DFTs (re; im)
        a_re, a_im = a[:, :, : self.n1], a[:, :, self.n1 :]
        b_re = a_re * self.tw_re - a_im * self.tw_im
        b_im = a_re * self.tw_im + a_im * self.tw_re
        spec = torch.cat([b_re, b_im], dim=-1) @ self.f2  # [B, T, n1, 2 k2]: n2-point DFTs (re | im)
        k2 = spec.shape[-1] // 2
        power = spec[..., :k2] ** 2 + spec[..., k2:] ** 2  # [B, T, k1, k2], bin k = k1 + n1 k2
        return power.transpose(2, 3).reshape(b, t, k2 * self.n1)[..., : self.n_bins]


class AisfxLogMel(nn.Module):
    """The aisfx CNN's frontend (see module docstring)."""

    NORM_MAX = 9.457798957824707

    def __init__(self, sample_rate: int = 44100, n_fft: int = 2048, hop: int = 1024, n_mels: int = 96,
                 peak_normalise: bool = True) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.peak_normalise = peak_normalise
        window = np.hanning(n_fft + 1)[:-1]  # periodic Hann, as librosa / torch.hann_window
        self.stft = PowerSTFT(n_fft, n_fft, hop, window, center=True)
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
        window = np.hanning(self.win)  # window_type='hanning' (symmetric), as EAT/AST call kaldi.fbank
        self.stft = PowerSTFT(n_fft, self.win, self.hop, window, center=False, remove_dc=True, preemph=preemph)
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
