"""Several pretrained backbones as one embedder: each branch sees the waveform at its own rate.

``MultiBranch`` takes the waveform at the first branch's rate (aisfx: 44.1 kHz, the bundle's rate) and runs every
branch on it: a branch with another rate (speech, voice: 16 kHz) gets the waveform through ``SincResample``, a
fixed windowed-sinc polyphase resampler written as one strided ``Conv1d`` (torchaudio's ``resample`` kernel:
Hann-windowed sinc, 6 zero crossings, roll-off 0.99), so the resampling is inside the ONNX graph (a ``Conv``) and
the device feeds one waveform at one rate. The output is the concatenation of the branch embeddings [B, sum dims];
the branches keep their own definitions and references (aisfx_cnn.py, speech_embedding.py, voice_encoder.py).

Conditioning and weights (``branch_stats``): before the shared random projection the first branch is divided by its
RMS on the calibration audio (the bundle's "scalar" conditioning, edge_pace/method/projection.py: its energy is its
dimension) and every other branch is z-scored per dimension and divided by sqrt(its dimension), so a weight w gives
it energy w^2 whatever its size (measured: dividing the speech and voice embeddings by their RMS instead, which keeps
their large common offset, cost drum classes of the real recordings at every weight tried); each branch is then
multiplied by its weight. Means and scales are folded into the projection's mean and scale vectors, so the graph gains no op and the
runtime sees only z. The weights are chosen by measurement (README, "Words and voices"; benchmarks/branch_weights.py):
``DEFAULT_WEIGHTS``, or per export by the device's leave-one-clip-out rule (``choose_weights``).

PACE and branches (edge_pace/method/pace.py): the first branch is the trainable one; ``PaceLearner`` takes it as its
backbone (``trainable_branch``), so the CKA probe, FSA, MSA and LoRA touch it alone (the do-no-harm check scores
the combined features below, the frozen branches' embeddings appended), and the other branches stay frozen (their parameters never change: tested bit for bit). Their embeddings of a clip never
change either, so ``frozen_embeddings`` computes them once per session from the waveforms. The classifier's
features are those of the bundle: the concatenation [adapted first branch, frozen branches], conditioned per
branch (``branch_stats``, session-0 statistics instead of the calibration audio's) and weighted, folded into
the one random projection; gamma is chosen on these combined features by the device's leave-one-clip-out
rule. ``blocks``, ``lora_targets`` of ``MultiBranch`` are the first branch's (``frontend`` lists every branch's,
for int8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_CONDITIONING = "dims"  # the non-first branches: z-scored per dimension (``branch_stats``), measured below
# per-branch weights, measured (README "Words and voices"; benchmarks/branch_weights.py, D = 2048, speech and voice
# z-scored): of (speech, voice) = (2, 2), (4, 4), (2, 4) and the calibration set's leave-one-clip-out choice (8, 0.25),
# (4, 4) is the one that met issue 16's targets in both runs: keywords 99.4 %, speakers 95.4 %, real recordings +1.59
# points (projection seeds 0-2 x class orders 0-1) and +1.55 (seeds 0-7), no non-speech class lower; (2, 4) had the
# better speakers (97.7 %) but +1.52 / +1.38 on the real recordings
DEFAULT_WEIGHTS: dict[str, float] = {"aisfx": 1.0, "speech": 4.0, "voice": 4.0}
LOWPASS_WIDTH = 6  # zero crossings of the sinc on each side (torchaudio's default)
ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist frequency (torchaudio's default)


def sinc_kernel(orig: int, new: int, width: int = LOWPASS_WIDTH, rolloff: float = ROLLOFF) -> tuple[np.ndarray, int]:
    """torchaudio.functional.resample's "sinc_interp_hann" kernel for ``orig`` -> ``new`` (reduced by their gcd):
    [new, 1, 2 * pad + orig] float64, and the padding ``pad`` (in input samples) on each side."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff
    pad = math.ceil(width * orig / base)
    idx = np.arange(-pad, pad + orig, dtype=np.float64)[None, None] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None, None] / new + idx) * base
    t = np.clip(t, -width, width)
    window = np.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / np.where(t == 0, 1.0, t))
    return k * window * (base / orig), pad


class SincResample(nn.Module):
    """waveform [B, S] at ``orig`` Hz -> [B, ceil(S * new / orig)] at ``new`` Hz: one strided Conv1d with the
    fixed polyphase kernel of ``sinc_kernel`` (as torchaudio.functional.resample computes it)."""

    def __init__(self, orig: int, new: int) -> None:
        super().__init__()
        g = math.gcd(orig, new)
        self.orig, self.new = orig // g, new // g
        self.orig_rate, self.new_rate = int(orig), int(new)
        kernel, self.pad = sinc_kernel(orig, new)
        self.register_buffer("kernel", torch.from_numpy(kernel.astype(np.float32)), persistent=False)
        # interleaving the phases [B, new, frames] -> [B, frames * new] as a transposed conv with an identity
        # kernel (exact: each output is one input times 1): a transpose + reshape makes torch.export guard on
        # batch != 1
        self.register_buffer("interleave", torch.eye(self.new).unsqueeze(1), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.shape[1]
        x = nn.functional.pad(wave, (self.pad, self.pad + self.orig)).unsqueeze(1)
        y = nn.functional.conv1d(x, self.kernel, stride=self.orig)  # [B, new, frames]
        y = nn.functional.conv_transpose1d(y, self.interleave, stride=self.new).squeeze(1)  # [B, frames * new]
        # keep ceil(n * new / orig) samples; index_select rather than a slice: torch.export cannot prove the
        # slice's end <= the conv's length for every dynamic n and would refuse the export
        keep = torch.arange((n * self.new + self.orig - 1) // self.orig, device=wave.device)
        return y.index_select(1, keep)

    def input_samples(self, samples: int) -> int:
        """The fewest input samples whose resampled length is at least ``samples``."""
        return math.ceil(samples * self.orig / self.new)


class Branch(nn.Module):
    """One branch: (resampling to the model's rate) + the model. waveform [B, S] at ``rate`` -> [B, embed_dim]."""

    def __init__(self, model: nn.Module, rate: int) -> None:
        super().__init__()
        self.model = model
        self.name = str(getattr(model, "name", type(model).__name__))
        self.sample_rate = int(rate)
        self.embed_dim = int(model.embed_dim)
        self.resample = SincResample(rate, int(model.sample_rate)) if int(model.sample_rate) != rate else None
        need = int(model.min_samples)
        self.min_samples = self.resample.input_samples(need) if self.resample is not None else need

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.model(self.resample(wave) if self.resample is not None else wave)


class MultiBranch(nn.Module):
    """waveform [B, S] at the first branch's rate -> [B, sum of the branch dims]: the branches' embeddings side by
    side (see the module docstring)."""

    def __init__(self, models: Sequence[nn.Module], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        if len(models) < 2:
            raise ValueError("a multi-branch backbone needs at least two branches")
        rate = int(models[0].sample_rate)
        self.branches = nn.ModuleList(Branch(m, rate) for m in models)
        self.names = [b.name for b in self.branches]
        self.dims = [b.embed_dim for b in self.branches]
        self.name = "+".join(self.names)
        self.sample_rate = rate
        self.embed_dim = sum(self.dims)
        self.min_samples = max(b.min_samples for b in self.branches)
        self.weights = {n: float((weights or DEFAULT_WEIGHTS).get(n, 1.0)) for n in self.names}
        self.conditioning = DEFAULT_CONDITIONING

    @classmethod
    def from_parts(cls, parts: Sequence[str], weights: str | None = None, pretrained: bool = True) -> "MultiBranch":
        """The registered backbones ``parts`` as branches; ``weights`` (a file) is the first (trainable) one's."""
        from edge_pace import backbones

        models = [backbones.load(p, weights if i == 0 else None, pretrained=pretrained)[0] for i, p in enumerate(parts)]
        return cls(models).eval()

    # the trainable (first) branch, for PACE and int8: its layers and frontend
    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.branches[0].model.blocks)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return tuple(getattr(self.branches[0].model, "lora_targets", ()))

    @property
    def frontend(self) -> nn.ModuleList:
        """Every branch's frontend (their constant kernels: int8 keeps them in float)."""
        return nn.ModuleList([b.model.frontend for b in self.branches])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(wave) for b in self.branches], dim=1)

    def slices(self) -> dict[str, slice]:
        """Where each branch lies in the output."""
        out, start = {}, 0
        for n, d in zip(self.names, self.dims):
            out[n] = slice(start, start + d)
            start += d
        return out

    def architecture(self) -> dict:
        return {"parts": list(self.names), "weights": dict(self.weights), "conditioning": self.conditioning}

    @classmethod
    def from_architecture(cls, arch: dict) -> "MultiBranch":
        model = cls.from_parts(arch["parts"], pretrained=False)
        model.weights = {n: float(arch.get("weights", {}).get(n, 1.0)) for n in model.names}
        model.conditioning = arch.get("conditioning", DEFAULT_CONDITIONING)
        return model

    def check_input(self, wave: torch.Tensor) -> torch.Tensor:
        from edge_pace.backbones.frontends import check_waveform

        return check_waveform(wave, self.min_samples, self.name)


# ------------------------------------------------------------------------------------------ PACE

def trainable_branch(model: nn.Module) -> tuple[nn.Module, "MultiBranch | None"]:
    """(the module PACE adapts, the multi-branch backbone or None): a ``MultiBranch``'s first branch model (the
    same object, so LoRA added to it is inside the multi-branch module too); any other backbone is itself."""
    if isinstance(model, MultiBranch):
        return model.branches[0].model, model
    return model, None


@torch.no_grad()
def frozen_embeddings(model: MultiBranch, waves: torch.Tensor, batch: int = 64,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """[n, S] waveforms at the first branch's rate -> [n, sum of the other branches' dims] (float32, on
    ``device``): the frozen branches' embeddings side by side (resampled inside each branch), ``batch`` clips at a
    time, in float32 (no autocast: they are what the exported graph computes)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    waves = model.check_input(torch.as_tensor(waves).float())
    out = [torch.cat([b(waves[i:i + batch].to(device)).float() for b in model.branches[1:]], dim=1)
           for i in range(0, len(waves), batch)]
    return torch.cat(out) if out else torch.zeros(0, model.embed_dim - model.dims[0], device=device)


def describe_branches(model: MultiBranch, adapted: bool | None = None) -> dict:
    """What a checkpoint and a bundle record of a multi-branch PACE backbone: per branch its dims in the combined
    embedding, weight, conditioning and whether PACE trains it (the first) or keeps it frozen."""
    out = {}
    for i, (n, s) in enumerate(model.slices().items()):
        out[n] = {"dims": [s.start, s.stop], "weight": model.weights[n],
                  "conditioning": "the learner's (standardize)" if i == 0 else model.conditioning,
                  "trainable": i == 0, "adapted": bool(adapted) if i == 0 else False}
    return out


# ------------------------------------------------------------------------------------------ conditioning

def branch_rms(model: MultiBranch, emb: np.ndarray) -> dict[str, float]:
    """Each branch's RMS (uncentred) over calibration embeddings [n, embed_dim]."""
    emb = np.asarray(emb, dtype=np.float64)
    return {n: max(float(np.sqrt(np.mean(emb[:, s] ** 2))), 1e-6) for n, s in model.slices().items()}


def branch_stats(model: MultiBranch, emb: np.ndarray, weights: dict[str, float] | None = None, mode: str = "scalar",
                 others: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) for RandomProjection, per branch, each scale divided by the branch's weight (``weights``,
    default: the model's). The first branch gets the conditioning ``mode`` of edge_pace/method/projection.py
    ("scalar": zeros and its RMS, so its energy is its dimension d_1; "dims": per-dimension z-scores); the others
    ``others`` (default: ``model.conditioning``): "dims" = per-dimension z-scores divided by sqrt(d_b), so a
    branch of weight w adds energy w^2 whatever its size; "scalar" = divided by its RMS (energy d_b w^2)."""
    from edge_pace.method.projection import embedding_stats

    weights = model.weights if weights is None else weights
    others = getattr(model, "conditioning", DEFAULT_CONDITIONING) if others is None else others
    emb = np.asarray(emb, dtype=np.float64)
    means, scales = [], []
    for i, (n, s) in enumerate(model.slices().items()):
        rule = mode if i == 0 else others
        m, sc = embedding_stats(emb[:, s], rule)
        if i > 0 and rule == "dims":
            sc = sc * np.float32(np.sqrt(s.stop - s.start))
        means.append(m)
        scales.append(sc / np.float32(weights.get(n, 1.0)))
    return np.concatenate(means).astype(np.float32), np.concatenate(scales).astype(np.float32)


WEIGHT_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # candidate weights of each non-first branch (the first keeps 1)


def choose_weights(model: MultiBranch, emb: np.ndarray, labels, groups, dim: int = 2048, seed: int = 0,
                   grid: Sequence[float] = WEIGHT_GRID, conditionings: Sequence[str] = ("dims", "scalar")
                   ) -> tuple[dict[str, float], list[dict], str]:
    """Branch weights by the device's own rule: for every conditioning of the non-first branches
    (``branch_stats``'s ``others``) and every combination of candidate weights (the first branch fixed at 1), the
    leave-one-clip-out squared error at its best gamma (runtime/gamma.py ``select_gamma``) of the
    random-projection features on labelled clips ``emb`` [n, embed_dim]; the least wins. Returns the weights, the
    table of every candidate and the conditioning."""
    import itertools

    from edge_pace.method.projection import RandomProjection
    from edge_pace.runtime.gamma import select_gamma

    table = []
    for cond, ws in itertools.product(conditionings, itertools.product(grid, repeat=len(model.names) - 1)):
        weights = {model.names[0]: 1.0, **dict(zip(model.names[1:], map(float, ws)))}
        mean, scale = branch_stats(model, emb, weights, others=cond)
        z = RandomProjection(model.embed_dim, dim, seed, mean, scale).numpy(emb)
        found = select_gamma(z, labels, groups)
        i = int(np.argmin(found.mse))
        table.append({"conditioning": cond, "weights": weights, "loo_mse": float(found.mse[i]),
                      "loo_accuracy": float(found.accuracy[i])})
    best = min(table, key=lambda r: r["loo_mse"])
    return dict(best["weights"]), table, best["conditioning"]


def set_weights(model: MultiBranch, weights: str | dict[str, float], emb: np.ndarray, labels, groups, dim: int,
                seed: int) -> dict:
    """Set ``model.weights`` (and ``model.conditioning``): "loo" (``choose_weights`` on labelled calibration
    embeddings ``emb``) or an explicit {branch: weight, optionally "conditioning": "dims" | "scalar"} (the other
    branches keep theirs). Returns what was done (for the manifest)."""
    if weights == "loo":
        if labels is None:
            raise ValueError("branch weights 'loo' need labelled calibration clips (--audio DIR/<class>/*)")
        model.weights, table, model.conditioning = choose_weights(model, emb, labels, groups, dim, seed)
        return {"rule": "leave-one-clip-out", "weights": dict(model.weights), "conditioning": model.conditioning,
                "grid": list(WEIGHT_GRID), "search": table}
    weights = dict(weights)
    cond = weights.pop("conditioning", model.conditioning)
    unknown = sorted(set(weights) - set(model.names))
    if unknown or not all(float(w) > 0 for w in weights.values()) or cond not in ("dims", "scalar"):
        raise ValueError(f"branch weights {weights} (conditioning {cond!r}): {model.name} has the branches "
                         f"{model.names}, weights > 0, conditioning 'dims' or 'scalar'")
    model.weights = {n: float(weights.get(n, model.weights[n])) for n in model.names}
    model.conditioning = cond
    return {"rule": "given", "weights": dict(model.weights), "conditioning": cond}


__all__ = ["trainable_branch", "frozen_embeddings", "describe_branches", "DEFAULT_CONDITIONING", "set_weights", "choose_weights", "WEIGHT_GRID", "MultiBranch", "Branch", "SincResample", "sinc_kernel", "branch_stats", "branch_rms", "DEFAULT_WEIGHTS"]
