"""The lower bound of the bench: fine-tuning with cross-entropy on each session's data in turn."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_pace.backbones import DEFAULT as DEFAULT_BACKBONE
from edge_pace.evaluation.base import check_session
from edge_pace.method.config import PaceConfig


class FineTune:
    """Lower bound: LoRA on every block (or the full backbone, ``full=True``) + a growing linear head,
    trained together with cross-entropy on each session's data in turn. Batch norm stays in eval mode, steps are
    norm-clipped to ``grad_clip`` and run under the same bfloat16 autocast as PACE's (``amp``), so the comparison
    isolates the classifier and the training objective."""

    def __init__(self, config: PaceConfig | None = None, backbone: str = DEFAULT_BACKBONE, *,
                 weights: str | None = None, device: str | None = None, full: bool = False,
                 name: str = "finetune") -> None:
        import torch

        from edge_pace import backbones
        from edge_pace.method.lora import add_lora, freeze_backbone, lora_parameters
        from edge_pace.method.training import device_name, resolve_device

        self.name = name
        self.config = config if config is not None else PaceConfig()
        cfg = self.config
        self.torch_device = resolve_device(device or cfg.device)
        self.device = device_name(self.torch_device)
        self.model, spec = backbones.load(backbone, weights)
        freeze_backbone(self.model)
        g = torch.Generator().manual_seed(int(cfg.seed))
        if full:
            self.params = [p for b in self.model.blocks for p in b.parameters()]
        else:
            add_lora(self.model, range(len(self.model.blocks)), cfg.lora_rank, cfg.lora_alpha, 0,
                     cfg.lora_targets or spec.lora_targets, g)
            self.params = lora_parameters(self.model, 0)
        self.model.to(self.torch_device).eval()
        self.embed_dim = int(self.model.embed_dim)
        self.head: torch.nn.Linear | None = None
        self.classes: list[str] = []
        self.sessions_done = 0

    def _frontend(self, waves: np.ndarray):
        from edge_pace.method.training import frontend_features

        return frontend_features(self.model, waves, self.config.embed_batch, self.torch_device)

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        import torch
        from torch.nn import functional as F

        from edge_pace.method.training import autocast, linear_head, run_epochs, sgd, trainable

        check_session(self.sessions_done, index, waves, labels, keys)
        cfg = self.config
        t0 = time.perf_counter()
        seed = int(cfg.seed) * 1_000_003 + index
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        labels = [str(x) for x in labels]
        self.classes += [c for c in dict.fromkeys(labels) if c not in self.classes]
        self.head = linear_head(self.embed_dim, len(self.classes), g, old=self.head).to(self.torch_device)
        y = torch.tensor([self.classes.index(c) for c in labels])
        feats = self._frontend(waves)
        epochs = cfg.e0 if index == 0 else cfg.msa_epochs
        head_params = list(self.head.parameters())
        trainable(self.params + head_params, True)
        opt = sgd([(self.params, cfg.lr_backbone), (head_params, cfg.lr_head)], cfg.momentum, cfg.weight_decay)

        def step(idx: torch.Tensor):
            with autocast(self.torch_device, cfg.amp):
                f = self.model.embed_features(feats[idx].to(self.torch_device)).float()
            logits = self.head(f)
            return F.cross_entropy(logits, y[idx].to(self.torch_device)), {}

        n = len(feats)
        totals = run_epochs(opt, n, cfg.batch_size, epochs, g, step, what=f"finetune session {index}",
                            clip=cfg.grad_clip)
        trainable(self.params + head_params, False)
        self.sessions_done += 1
        return {"session": index, "n_train": n, "loss": [t["loss"] / n for t in totals],
                "seconds": time.perf_counter() - t0}

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        import torch

        if not self.classes:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        feats = self._frontend(waves)
        bs = self.config.embed_batch
        out = []
        with torch.no_grad():
            for i in range(0, len(feats), bs):
                out.append(self.head(self.model.embed_features(feats[i:i + bs].to(self.torch_device)).float())
                           .argmax(1).cpu())
        return [self.classes[int(i)] for i in torch.cat(out)]


__all__ = ["FineTune"]
