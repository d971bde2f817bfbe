"""Frontends held against torchaudio (the reference implementations) with stated tolerances."""

import numpy as np
import pytest
import torch
import torchaudio

from edge_pace.backbones.frontends import (AisfxLogMel, KaldiFbank, PowerSTFT, check_waveform, fft_factors,
                                          htk_mel_filterbank)


def _signal(sr: int, seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.4 * np.sin(2 * np.pi * (300 + 1500 * t) * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(len(t))
    return torch.tensor(x, dtype=torch.float32)


def test_htk_filterbank_matches_torchaudio_unit_area():
    ours = htk_mel_filterbank(44100, 2048, 96, 0.0, 22050.0, unit_area=True)
    ref = torchaudio.functional.melscale_fbanks(1025, 0.0, 22050.0, 96, 44100, norm=None, mel_scale="htk").numpy()
    ref = ref / ref.sum(axis=0, keepdims=True)  # librosa norm=1.0: each filter has unit area
    assert np.abs(ours - ref).max() < 1e-5  # torchaudio builds it in float32


@pytest.mark.parametrize("seconds", [0.2, 1.0, 2.3])
def test_aisfx_logmel_matches_torchaudio_melspectrogram(seconds):
    """Tolerance: 1e-4 absolute on the normalised log-mel (values in [0, ~1])."""
    sr = 44100
    wave = _signal(sr, seconds)[None]
    ours = AisfxLogMel(sr)(wave)[0]
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=2048, hop_length=1024, n_mels=96, f_min=0.0,
                                               f_max=sr / 2, power=2.0, center=True, pad_mode="constant",
                                               mel_scale="htk", norm=None)
    fb = mel.mel_scale.fb
    mel.mel_scale.fb = fb / fb.sum(dim=0, keepdim=True)
    w = wave / wave.abs().max()
    ref = (torch.log10(1e4 * mel(w)[0] + 1) / AisfxLogMel.NORM_MAX).T
    assert ours.shape == ref.shape == (1 + wave.shape[1] // 1024, 96)
    assert (ours - ref).abs().max().item() < 1e-4


def test_aisfx_logmel_peak_normalisation_and_silence():
    fe = AisfxLogMel()
    wave = _signal(44100, 0.5)[None]
    assert torch.allclose(fe(wave), fe(0.01 * wave), atol=1e-4)  # level invariant: peak-normalised
    silent = fe(torch.zeros(1, 44100))
    assert torch.isfinite(silent).all() and silent.abs().max() == 0


@pytest.mark.parametrize("seconds", [0.025, 1.0, 3.07])
def test_kaldi_fbank_matches_torchaudio_compliance(seconds):
    """Tolerance: 5e-4 absolute on the normalised fbank (values in ~[-1.3, 1.5]; measured 1.5e-4)."""
    sr = 16000
    wave = _signal(sr, seconds, seed=1)
    ours = KaldiFbank(sr)(wave[None])[0]
    w = wave - wave.mean()
    ref = torchaudio.compliance.kaldi.fbank(w[None], htk_compat=True, sample_frequency=sr, use_energy=False,
                                            window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    ref = (ref - KaldiFbank.EAT_MEAN) / (2 * KaldiFbank.EAT_STD)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 5e-4


def test_bad_waveforms_give_clear_errors():
    with pytest.raises(ValueError, match="too short"):
        check_waveform(torch.zeros(1, 10), 400)
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_waveform(torch.full((1, 500), float("nan")), 400)
    with pytest.raises(TypeError, match="float32"):
        check_waveform(torch.zeros(1, 500, dtype=torch.int16), 400)
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        check_waveform(torch.zeros(1, 2, 500), 400)


@pytest.mark.parametrize("n_fft,win,hop,center", [(2048, 2048, 1024, True), (512, 400, 160, False),
                                                  (400, 400, 160, True), (2048, 2048, 512, True), (257, 257, 100, True)])
def test_power_stft_is_torch_stft_power(n_fft, win, hop, center):
    """The two-step FFT equals torch.stft's power to float32 rounding (1e-5 of the peak), for power-of-two, composite
    (400 = 16 x 25) and prime (257: a plain DFT) sizes, centred or not, and with the block-reshaping framing
    (hop dividing n_fft) or the generic one; its constants are a few percent of a stored DFT kernel."""
    window = np.hanning(win + 1)[:-1]
    stft = PowerSTFT(n_fft, win, hop, window, center=center)
    wave = _signal(16000, 1.3, seed=2)[None].repeat(2, 1)
    ours = stft(wave)
    w = torch.zeros(n_fft, dtype=torch.float64)
    off = (n_fft - win) // 2 if center else 0  # torch centres a short window inside n_fft
    w[off : off + win] = torch.tensor(window)
    x = wave.double() if center else torch.nn.functional.pad(wave.double(), (0, n_fft - win))
    ref = torch.stft(x, n_fft, hop, window=w, center=center, pad_mode="constant", return_complex=True).abs() ** 2
    ref = ref.transpose(1, 2)
    if not center:  # Kaldi-style frames: win samples then zeros; torch's frame count on the padded signal
        ref = ref[:, : 1 + (wave.shape[1] - win) // hop]
    assert ours.shape == ref.shape
    assert ((ours.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5
    consts = sum(b.numel() for b in stft.buffers())
    assert consts < 0.1 * (n_fft + 2) * win or n_fft < 300
    n1, n2 = fft_factors(n_fft)
    assert n1 * n2 == n_fft and n1 <= n2


def test_aisfx_frame_count_is_one_plus_samples_over_hop_for_every_length():
    """The block-reshaping framing trims its right padding to the frame count: check lengths around multiples."""
    fe = AisfxLogMel()
    for n in (7168, 7169, 8191, 8192, 8193, 44100):
        assert fe(torch.ones(1, n) * 0.1).shape[1] == 1 + n // 1024 == fe.frames(n)
