"""What every training-side learner shares (PACE, its ablations, the fine-tuning baseline): the torch device,
batched frontend and backbone passes without gradients, heads and their initialisation, SGD, and the one
loop of shuffled minibatch epochs.

The loop (``run_epochs``) draws one ``torch.randperm`` per epoch from the caller's generator, so a run seeded
the same way repeats exactly; ``step(idx)`` computes a batch's loss (and any per-batch sums to report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" = CUDA when available, else CPU; "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def device_name(device) -> str:
    """A device for tables: "cuda (<GPU name>)" or "cpu (<n> threads)"."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"


@lru_cache(maxsize=1)
def cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively through oneDNN (AVX512-BF16 or AMX): there bfloat16 autocast
    makes training steps ~2.5x faster (measured on this project's 2-core AMD EPYC); elsewhere it would be slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, amp: bool = True):
    """bfloat16 autocast for training steps when ``amp``: on CUDA, and on CPUs with native bfloat16
    (``cpu_bf16``); nothing otherwise. Features the classifier or the held-out check sees are computed in float32,
    outside it (they must match what the exported float32 graph computes)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if amp and device.type == "cpu" and cpu_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def as_waves(model: nn.Module, waves: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[n, S] (or [S]) waveforms as a float32 tensor, checked by the backbone (``check_input``) when it can."""
    w = torch.as_tensor(np.asarray(waves, dtype=np.float32) if not isinstance(waves, torch.Tensor) else waves)
    if w.dim() == 1:
        w = w[None]
    if hasattr(model, "check_input"):
        w = model.check_input(w.float())
    return w.float()


@torch.no_grad()
def frontend_features(model: nn.Module, waves: np.ndarray | torch.Tensor, batch: int,
                      device: torch.device) -> torch.Tensor:
    """[n, S] waveforms -> [n, T, F] frontend features (float32, on CPU), computed in float32, ``batch`` at a time."""
    w = as_waves(model, waves)
    return torch.cat([model.frontend(w[i:i + batch].to(device)).float().cpu() for i in range(0, len(w), batch)])


@torch.no_grad()
def embed_features(model: nn.Module, feats: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """[n, T, F] -> [n, D] backbone features (float32, computed in float32, on ``device``), ``batch`` at a time."""
    return torch.cat([model.embed_features(feats[i:i + batch].to(device)).float() for i in range(0, len(feats), batch)])


class CosineHead(nn.Module):
    """logits = scale * cos(f, w_c): a linear head on L2-normalised features with unit-norm class weights
    (RanPAC's CosineLinear lineage), with a fixed scale. Rows start as random unit vectors."""

    def __init__(self, dim: int, n_classes: int, scale: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(F.normalize(torch.randn(n_classes, dim, generator=generator), dim=-1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(f.float(), dim=-1) @ F.normalize(self.weight, dim=-1).T


def linear_head(dim: int, n_classes: int, generator: torch.Generator, old: nn.Linear | None = None) -> nn.Linear:
    """A linear head, weights uniform in +-1/sqrt(dim) (from ``generator``), bias zero; the rows of ``old`` (a
    head for the first classes) are kept."""
    head = nn.Linear(dim, n_classes)
    bound = 1.0 / np.sqrt(dim)
    with torch.no_grad():
        head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
        head.bias.zero_()
        if old is not None:
            head.weight[:old.out_features] = old.weight.cpu()
            head.bias[:old.out_features] = old.bias.cpu()
    return head


def sgd(groups: Sequence[tuple[list[nn.Parameter], float]], momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD over (parameters, learning rate) groups; empty groups are left out."""
    return torch.optim.SGD([{"params": p, "lr": lr} for p, lr in groups if p], momentum=momentum,
                           weight_decay=weight_decay)


def run_epochs(opt: torch.optim.Optimizer, n: int, batch_size: int, epochs: int, g: torch.Generator,
               step: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]], *, what: str | None = None,
               progress: Callable[[float], None] | None = None, clip: float = 0.0,
               on_epoch: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """``epochs`` passes over ``n`` samples in shuffled minibatches: ``step(idx)`` returns the batch's loss and
    sums to add up (e.g. ``{"ce": ce * len(idx)}``). Returns per epoch ``{"loss": sum of loss * batch size, ...}``.
    ``what`` names the run in the error raised when the loss stops being finite (None: no check);
    ``progress(loss)`` is called after every step. ``clip`` > 0: the gradient's global L2 norm (over the
    optimiser's parameters) is clipped to ``clip`` before every step. ``on_epoch(epoch)`` (1-based) runs after
    every epoch (e.g. validation for early stopping)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    out = []
    for _ in range(epochs):
        perm, tot = torch.randperm(n, generator=g), {"loss": 0.0}
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss, sums = step(idx)
            if what is not None and not torch.isfinite(loss):
                raise FloatingPointError(f"{what}: the training loss became {float(loss.detach())}; "
                                         "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            tot["loss"] += float(loss.detach()) * len(idx)
            for k, v in sums.items():
                tot[k] = tot.get(k, 0) + v
            if progress is not None:
                progress(float(loss.detach()))
        out.append(tot)
        if on_epoch is not None:
            on_epoch(len(out))
    return out


def trainable(params: Sequence[nn.Parameter], on: bool) -> None:
    for p in params:
        p.requires_grad_(on)


__all__ = ["resolve_device", "device_name", "cpu_bf16", "autocast", "as_waves", "frontend_features", "embed_features",
           "CosineHead", "linear_head", "sgd", "run_epochs", "trainable"]
