"""Resemblyzer's GE2E voice encoder as our own torch definition, loading the converted weights.

Weights: ``resemblyzer/pretrained.pt`` in the PyPI wheel ``Resemblyzer==0.1.4`` (Apache-2.0, Resemble AI /
Corentin Jemine), the speaker encoder of "Generalized End-to-End Loss for Speaker Verification" (Wan et
al., ICASSP 2018). See ``wheels.py`` for the fetch; the pickle is opened once, with torch's
``weights_only`` loader, at conversion time only.

What Resemblyzer 0.1.4 computes (read from its ``hparams.py``, ``audio.py`` and ``voice_encoder.py``):

* ``preprocess_wav``: resample to 16 kHz, raise the volume to -30 dBFS when quieter (``increase_only``),
  trim long silences with webrtcvad;
* ``wav_to_mel_spectrogram``: ``librosa.feature.melspectrogram`` with n_fft 400 (25 ms), hop 160 (10 ms),
  40 mel channels and librosa's defaults otherwise: periodic Hann window, ``center=True`` with zero
  padding (librosa >= 0.10), power 2, Slaney mel scale and Slaney area normalisation, 0 to 8 kHz. The
  encoder takes this mel power directly (not its log);
* the network: LSTM(40 -> 256, 3 layers), the last layer's final hidden state, Linear(256, 256), ReLU,
  L2 normalisation;
* ``embed_utterance``: partial utterances of 160 frames (1.6 s) every 77 frames (rate 1.3 / s), the last
  one dropped when it covers less than 75 % of its frames (unless it is the only one), the waveform
  zero-padded to the last partial's end; the mean of the partial embeddings, L2-normalised.

Ours (``VoiceEncoder.forward``): the volume rule (silence is given a finite gain instead of Resemblyzer's
division by zero), the same mel, the same partials and the same pooling, for any length; silence trimming
(webrtcvad) is left out: a 1 s window is classified as it is. For a 1 s window that is exactly one
partial: the second zero-padded to 1.6 s, as ``embed_utterance`` does. In ONNX export the three LSTM
layers become ONNX ``LSTM`` nodes (``torch.onnx.ops.symbolic``), because torch.export unrolls
``nn.LSTM`` over a fixed number of frames.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edge_pace.backbones.frontends import PowerSTFT, check_waveform

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40
HIDDEN, LAYERS, EMBED = 256, 3, 256
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_STEP = int(round((SAMPLE_RATE / 1.3) / HOP))  # 77 frames: embed_utterance's rate=1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
# zero padding after the waveform: >= 78 * 160 + 1 (the last kept partial's end), < 236 * 160 - 16000 (a 1 s
# window gives one window), and 160 frames from MIN_SAMPLES on: 1 + (MIN_SAMPLES + PAD) // 160 >= 160
PAD_SAMPLES = 21600
MIN_SAMPLES = PARTIAL_FRAMES * HOP - HOP - PAD_SAMPLES  # 3,840 (0.24 s)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """[n_fft//2+1, n_mels] triangular filters on the Slaney mel scale (linear to 1 kHz, logarithmic above),
    each scaled by 2 / bandwidth (Slaney's area normalisation) -- librosa.filters.mel's defaults."""
    fmax = sr / 2 if fmax is None else fmax
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges)
    lower = (fft_f[None, :] - edges[:-2, None]) / width[:-1, None]
    upper = (edges[2:, None] - fft_f[None, :]) / width[1:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.T


class ResemblyzerMel(nn.Module):
    """waveform [B, S] at 16 kHz -> mel power [B, 1 + S // 160, 40], as Resemblyzer's wav_to_mel_spectrogram."""

    def __init__(self) -> None:
        super().__init__()
        window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
        self.stft = PowerSTFT(N_FFT, N_FFT, HOP, window, center=True)
        fb = slaney_mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)
        self.register_buffer("mel", torch.tensor(fb, dtype=torch.float32), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # the mel matrix as a 1x1 conv on [B, 201, T] (a matmul on the transposed spectrogram makes
        # torch.export guard on batch != 1)
        power = self.stft(wave).transpose(1, 2)
        return nn.functional.conv1d(power, self.mel.t().unsqueeze(2)).transpose(1, 2)


def _gates_to_onnx(w: torch.Tensor) -> torch.Tensor:
    """torch's LSTM gate blocks (i, f, g, o) -> ONNX's (i, o, f, c), along dim 0."""
    h = w.shape[0] // 4
    return torch.cat([w[:h], w[3 * h:], w[h:2 * h], w[2 * h:3 * h]], dim=0)


class VoiceEncoder(nn.Module):
    """waveform [B, S] at 16 kHz -> L2-normalised 256-d speaker embedding [B, 256] (see module docstring)."""

    name = "voice"
    sample_rate = SAMPLE_RATE
    embed_dim = EMBED

    def __init__(self, normalise_volume: bool = True) -> None:
        super().__init__()
        self.frontend = ResemblyzerMel()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBED)
        self.normalise_volume = normalise_volume
        self.min_samples = MIN_SAMPLES

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.lstm, self.linear]

    # ------------------------------------------------------------------ the network on mel partials
    def _last_hidden(self, mels: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            _, (hidden, _) = self.lstm(mels)
            return hidden[-1]
        y = mels.transpose(0, 1)  # [T, N, F]: ONNX LSTM layout 0
        T, N = y.shape[0], y.shape[1]
        h_last = y
        for layer in range(LAYERS):
            W = _gates_to_onnx(getattr(self.lstm, f"weight_ih_l{layer}")).unsqueeze(0)
            R = _gates_to_onnx(getattr(self.lstm, f"weight_hh_l{layer}")).unsqueeze(0)
            B = torch.cat([_gates_to_onnx(getattr(self.lstm, f"bias_ih_l{layer}")),
                           _gates_to_onnx(getattr(self.lstm, f"bias_hh_l{layer}"))]).unsqueeze(0)
            Y, h_last = torch.onnx.ops.symbolic_multi_out(
                "::LSTM", [y, W, R, B], {"hidden_size": HIDDEN}, dtypes=[y.dtype, y.dtype],
                shapes=[[T, 1, N, HIDDEN], [1, N, HIDDEN]], version=14)
            y = Y.squeeze(1)
        return h_last[0]

    def embed_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """Resemblyzer's VoiceEncoder.forward: mel partials [N, T, 40] -> L2-normalised embeddings [N, 256]."""
        raw = torch.relu(self.linear(self._last_hidden(mels)))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------------------ waveform -> clip embedding
    def normalise(self, wave: torch.Tensor) -> torch.Tensor:
        """normalize_volume(wav, -30, increase_only=True), per row; silence gets a finite gain."""
        rms = wave.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-6)
        gain = torch.clamp((10.0 ** (TARGET_DBFS / 20.0)) / rms, min=1.0)
        return wave * gain

    def partial_mels(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """embed_utterance's partials: mel windows [B, K, 160, 40] and their weights [K, 256] (1 kept, 0 not;
        the same in every column).

        The waveform is zero-padded by a constant PAD_SAMPLES (no length-dependent padding, so the graph
        exports with a dynamic length): every partial embed_utterance keeps lies inside, a 1 s window
        yields exactly one window (no wasted LSTM run), and inputs of >= min_samples give >= 160 frames.
        Windows past the kept ones (a length-dependent few) are computed and given weight 0."""
        mel = self.frontend(nn.functional.pad(wave, (0, PAD_SAMPLES)))  # [B, T, 40], T = 1 + (n + PAD) // 160
        K = (mel.shape[1] - PARTIAL_FRAMES) // PARTIAL_STEP + 1
        # No tensor here has K elements: torch.export guards "K < 2" on a 1-D tensor of K elements (its
        # contiguity check) and so would specialise the graph to one window. Window starts are laid out
        # [K, 160] (frame indices) and [K, 256] (weights, one column per embedding dimension).
        start_f = (mel.new_ones(K, PARTIAL_FRAMES).cumsum(0) - 1) * PARTIAL_STEP  # [K, 160], all = 77 k
        idx = start_f.long() + torch.arange(PARTIAL_FRAMES, device=wave.device)
        win = mel[:, idx]  # [B, K, 160, 40]
        # the rule of compute_partial_slices, in tensor arithmetic (traceable for any n)
        n_t = torch.ones_like(wave[0]).sum()  # n as a float tensor
        n_frames = torch.ceil((n_t + 1) / HOP)
        steps = torch.clamp(n_frames - PARTIAL_FRAMES + PARTIAL_STEP + 1, min=1)
        start = (mel.new_ones(K, EMBED).cumsum(0) - 1) * PARTIAL_STEP  # [K, 256], all = 77 k
        inside = (start < steps).to(wave.dtype)
        count = inside.sum() / EMBED
        last_start = (count - 1) * PARTIAL_STEP
        coverage = (n_t - last_start * HOP) / (PARTIAL_FRAMES * HOP)
        drop = ((coverage < MIN_COVERAGE) & (count > 1)).to(wave.dtype)
        is_last = (start == last_start).to(wave.dtype)
        return win, inside * (1 - drop * is_last)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.normalise_volume:
            wave = self.normalise(wave)
        win, weight = self.partial_mels(wave)
        B, K = win.shape[0], win.shape[1]
        emb = self.embed_mels(win.reshape(B * K, PARTIAL_FRAMES, N_MELS)).reshape(B, K, EMBED)
        mean = (emb * weight).sum(dim=1) / weight.sum(dim=0)
        return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def check_input(self, wave: torch.Tensor) -> torch.Tensor:
        return check_waveform(wave, self.min_samples, self.name)


# ------------------------------------------------------------------------------------------ conversion

def tensors_from_checkpoint(raw: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Unpickle Resemblyzer's pretrained.pt with torch's weights_only loader; keep lstm.* and linear.*
    (the GE2E similarity scale/bias and the optimizer state are training-only)."""
    import io

    obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state = obj.get("model_state") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError("Resemblyzer checkpoint has no model_state")
    expected = {k: tuple(v.shape) for k, v in VoiceEncoder().state_dict().items()}
    tensors = {k: v.detach().float().contiguous() for k, v in state.items() if k in expected}
    wrong = {k: (tuple(tensors[k].shape) if k in tensors else None) for k in expected
             if k not in tensors or tuple(tensors[k].shape) != expected[k]}
    if wrong:
        raise ValueError(f"Resemblyzer checkpoint does not fit the GE2E encoder: {wrong}")
    return tensors, {"architecture": "GE2E LSTM 3x256 + linear 256, edge_pace/backbones/voice_encoder.py",
                     "step": str(obj.get("step", ""))}


def load_voice_encoder(weights: str | None = None, normalise_volume: bool = True) -> VoiceEncoder:
    """Our model with the converted weights (``weights`` or the cache; WeightsMissing names the fetch command)."""
    from safetensors.torch import load_file

    from edge_pace.backbones.wheels import require

    model = VoiceEncoder(normalise_volume)
    model.load_state_dict(load_file(weights or str(require("voice"))), strict=True)
    return model.eval()
