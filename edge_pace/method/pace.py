"""PACE on the training side: first-session adaptation (FSA, improved), multi-session adaptation (MSA)
with subspace-projected LoRA, boundary-aware perturbation, and the analytic classifier.

Session 0 (``_fsa``):
  1. CKA probe: a copy of the pretrained backbone gets LoRA on every block and is trained like FSA
     (head stage, then e0 LoRA epochs). Per block, linear CKA s_k between the probe's and the pretrained
     model's pooled block outputs on session-0 clips. The paper's rule k* = argmax_k [s_k < rho_layer]
     (0-based k: argmax of the indicator = the first k below rho_layer), L_tune = k* + 1 (1-based), so
     the first block whose CKA falls below rho_layer and every later block are adapted. If no block
     falls below, only the last block is adapted (L_tune = number of blocks): the probe found no
     layer that needs to move, so adaptation stays minimal. The probe is discarded.
  2. Staged training: a linear head alone (backbone frozen) for head_epochs at lr_head, then the head
     frozen and LoRA on blocks >= L_tune for e0 epochs at lr_backbone, loss CE + lambda * L_reg. The head
     is by default a cosine head (linear on L2-normalised features, ``PaceConfig.head``), SGD + momentum.
  3. The head is dropped: z = ReLU(standardised f(x) W_proj) -> AnalyticClassifier, gamma re-chosen every session by
     leave-one-clip-out (runtime/gamma.py, the device's rule).
Sessions t >= 1 (``_msa``), while the backbone is not frozen: inputs of the adapted layers are collected
  on the session's data under the unlearned model (W0 - sum of older LoRAs); a fresh LoRA per layer
  (older frozen) is trained (head stage on the session's classes, then msa_epochs at msa_lr, CE +
  lambda * L_reg) with its input-side factor A kept in the principal input subspace (``subspace``).
  Adaptive stop: each session's training clips count once; when the count of MSA samples reaches
  n_stop the backbone freezes for good and later sessions only update the classifier.
Every session ends with a recursive (closed-form) classifier update on the session's features. After
the backbone has changed, old classes' statistics in the classifier are those computed with the older
backbone: this is the paper's design (no old data is stored to recompute them); it is why MSA stops early
and keeps updates inside the input subspace.

The backbone always runs in eval mode (batch norm running statistics frozen, no dropout; see ``lora``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge_pace import backbones
from edge_pace.method.cka import layerwise_cka
from edge_pace.method.config import PaceConfig
from edge_pace.method.lora import LoRAAdapter, add_lora, freeze_backbone, lora_layers, lora_parameters, unlearned
from edge_pace.method.perturb import boundary_loss, boundary_mask, spec_masks
from edge_pace.method.projection import RandomProjection, embedding_stats
from edge_pace.method.subspace import GradientProjector, collect_inputs
from edge_pace.method.training import (CosineHead, as_waves, autocast, embed_features, frontend_features, linear_head,
                                       resolve_device, run_epochs, sgd, trainable)
from edge_pace.runtime.analytic import AnalyticClassifier


def choose_l_tune(cka: Sequence[float], rho_layer: float) -> int:
    """1-based L_tune from per-block CKA values s_0..s_{L-1} (0-based blocks).

    k* = argmax_k [s_k < rho_layer] (the first block below rho_layer), L_tune = k* + 1; blocks
    L_tune..L (1-based) are adapted. No block below rho_layer -> L_tune = L (only the last block).
    """
    if len(cka) == 0:
        raise ValueError("choose_l_tune needs at least one CKA value")
    below = [k for k, s in enumerate(cka) if s < rho_layer]
    return (below[0] + 1) if below else len(cka)


class PaceLearner:
    """Class-incremental PACE learner over a pretrained backbone (see module docstring).

    ``backbone`` is a registry name (``edge_pace.backbones.load``) or a backbone module with the
    common interface (``frontend``, ``blocks``, ``embed_features``, ``embed_dim``, ``sample_rate``).
    """

    def __init__(self, backbone: str | nn.Module = backbones.DEFAULT, config: PaceConfig | None = None, *,
                 pretrained: bool = True, weights: str | None = None, device: str | None = None) -> None:
        self.config = config if config is not None else PaceConfig()
        self.config.validate()
        if isinstance(backbone, str):
            model, spec = backbones.load(backbone, weights, pretrained=pretrained)
            reproducible = spec.weights_file is not None
        else:
            model, spec, reproducible = backbone, backbones.spec_of(backbone), False
        name = spec.name
        for attr in ("frontend", "blocks", "embed_features", "embed_dim", "sample_rate"):
            if not hasattr(model, attr):
                raise TypeError(f"backbone {name!r} lacks `{attr}`: PACE needs frontend, blocks, embed_features, "
                                "embed_dim and sample_rate")
        self.spec = spec  # window/hop, LoRA targets, licence, ... (edge_pace.backbones)
        self.lora_targets = tuple(self.config.lora_targets) or spec.lora_targets
        self.backbone_spec: dict[str, Any] = {
            "name": name, "weights": str(Path(spec.weights_file).resolve()) if reproducible else None,
            "class": backbones.class_path(model), "kwargs": backbones.architecture(model),
            "store_base": not reproducible}
        self.device = resolve_device(device or self.config.device)
        self.backbone = model.to(self.device)
        freeze_backbone(self.backbone)
        self.embed_dim = int(model.embed_dim)
        self.projection = RandomProjection(self.embed_dim, self.config.d_proj, self.config.proj_seed).to(self.device)
        self.classifier: AnalyticClassifier | None = None
        self.l_tune: int | None = None  # 1-based first adapted block
        self.cka: list[float] | None = None
        self.sessions_done = 0
        self.frozen = False
        self.msa_samples_seen = 0
        self.history: list[dict[str, Any]] = []

    # ---- properties ------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.backbone.sample_rate)

    @property
    def n_blocks(self) -> int:
        return len(self.backbone.blocks)

    @property
    def tune_start(self) -> int | None:
        """0-based index of the first adapted block (L_tune - 1)."""
        return None if self.l_tune is None else self.l_tune - 1

    @property
    def classes(self) -> list[str]:
        return [] if self.classifier is None else list(self.classifier.classes)

    # ---- helpers ----------------------------------------------------------------------------------------
    def _progress(self, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            disable=self.config.quiet, transient=False)
        task = progress.add_task(description, total=total, info="")
        return progress, task

    @torch.no_grad()
    def frontend_features(self, waves: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[n, S] waveforms -> [n, T, F] frontend features (float32, on CPU), computed in float32."""
        return frontend_features(self.backbone, waves, self.config.embed_batch, self.device)

    def _embed(self, feats: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """[n, T, F] -> [n, D] backbone features (float32, on the device)."""
        return embed_features(self.backbone if model is None else model, feats, self.config.embed_batch, self.device,
                              self.config.amp)

    @torch.no_grad()
    def _layer_features(self, model: nn.Module, feats: torch.Tensor) -> list[torch.Tensor]:
        per_batch = []
        for i in range(0, len(feats), self.config.embed_batch):
            with autocast(self.device, self.config.amp):
                _, layers = model.embed_features(feats[i:i + self.config.embed_batch].to(self.device),
                                                 return_layers=True)
            per_batch.append([x.float().cpu() for x in layers])
        return [torch.cat([b[k] for b in per_batch]) for k in range(len(per_batch[0]))]

    @torch.no_grad()
    def _project(self, emb: torch.Tensor) -> np.ndarray:
        return self.projection(emb.to(self.device).float()).cpu().numpy().astype(np.float32)

    def _new_head(self, n_classes: int, g: torch.Generator) -> nn.Module:
        cfg = self.config
        if cfg.head == "cosine":
            head: nn.Module = CosineHead(self.embed_dim, n_classes, cfg.head_scale, g)
        else:
            head = linear_head(self.embed_dim, n_classes, g)
        head.requires_grad_(False)  # each training stage switches on what it trains
        return head.to(self.device)

    def _optimizer(self, groups: list[tuple[list[nn.Parameter], float]]) -> torch.optim.Optimizer:
        return sgd(groups, self.config.momentum, self.config.weight_decay)

    # ---- training loops -------------------------------------------------------------------------------
    def _train_head(self, head: nn.Module, model: nn.Module, feats: torch.Tensor, y: torch.Tensor,
                    g: torch.Generator, description: str) -> list[float]:
        """Stage 1: the head alone on frozen-backbone features (computed once)."""
        cfg = self.config
        if cfg.head_epochs == 0:
            return []
        emb = self._embed(feats, model)
        head.requires_grad_(True)
        opt = self._optimizer([(list(head.parameters()), cfg.lr_head)])

        def step(idx: torch.Tensor):
            return F.cross_entropy(head(emb[idx.to(self.device)]), y[idx].to(self.device)), {}

        n = len(feats)
        progress, task = self._progress(description, cfg.head_epochs * -(-n // cfg.batch_size))
        with progress:
            epochs = run_epochs(opt, n, cfg.batch_size, cfg.head_epochs, g, step, progress=lambda loss: progress.update(
                task, advance=1, info=f"loss {loss:.3f}"))
        head.requires_grad_(False)
        return [e["loss"] / n for e in epochs]

    def _train_backbone(self, model: nn.Module, head: nn.Module, groups: list[tuple[list[nn.Parameter], float]],
                        feats: torch.Tensor, y: torch.Tensor, epochs: int, g: torch.Generator,
                        use_reg: bool, description: str) -> dict[str, Any]:
        """LoRA (and, for naive FSA, head) training with CE + lambda * L_reg on [n, T, F] features."""
        cfg = self.config
        params = [p for ps, _ in groups for p in ps]
        trainable(params, True)
        opt = self._optimizer(groups)
        n, npt = len(feats), cfg.n_perturb
        use_reg = use_reg and npt > 0 and cfg.lambda_reg > 0
        stats: dict[str, Any] = {"loss": [], "ce": [], "reg": [], "boundary": []}
        if epochs == 0:
            return stats

        def step(idx: torch.Tensor):
            xb, yb = feats[idx], y[idx].to(self.device)
            b = len(idx)
            if use_reg:
                copies = spec_masks(xb, npt, cfg.r_time, cfg.r_freq, g)
                xb = torch.cat([xb, copies.reshape(-1, *xb.shape[1:])])
            with autocast(self.device, cfg.amp):
                f = model.embed_features(xb.to(self.device)).float()
            f_x = f[:b]
            ce = F.cross_entropy(head(f_x), yb)
            sums = {"ce": float(ce.detach()) * b, "reg": 0.0, "boundary": 0}
            if not use_reg:
                return ce, sums
            f_u = f[b:].reshape(b, npt, -1)
            with torch.no_grad():
                bmask = boundary_mask(head(f_u), yb, cfg.rho_p)
            reg = boundary_loss(f_x, f_u, yb, bmask, cfg.delta, cfg.reg_normalise, cfg.push_other_classes)
            sums.update(reg=float(reg.detach()) * b, boundary=int(bmask.sum()))
            return ce + cfg.lambda_reg * reg, sums

        progress, task = self._progress(description, epochs * -(-n // cfg.batch_size))
        with progress:
            totals = run_epochs(opt, n, cfg.batch_size, epochs, g, step, what=description,
                                progress=lambda loss: progress.update(task, advance=1, info=f"loss {loss:.3f}"))
        for tot in totals:
            for k in ("loss", "ce", "reg"):
                stats[k].append(tot[k] / n)
            stats["boundary"].append(tot["boundary"])
        trainable(params, False)
        return stats

    # ---- FSA ------------------------------------------------------------------------------------------
    def _probe(self, feats: torch.Tensor, y: torch.Tensor, n_classes: int, g: torch.Generator,
               metrics: dict[str, Any]) -> list[float]:
        cfg = self.config
        probe = copy.deepcopy(self.backbone)
        freeze_backbone(probe)
        add_lora(probe, range(self.n_blocks), cfg.lora_rank, cfg.lora_alpha, 0, self.lora_targets, g)
        head = self._new_head(n_classes, g)
        self._train_head(head, probe, feats, y, g, "probe: head")
        st = self._train_backbone(probe, head, [(lora_parameters(probe, 0), cfg.lr_backbone)], feats, y, cfg.e0, g,
                                  cfg.probe_boundary_loss and cfg.use_boundary_loss, "probe: LoRA, all blocks")
        n = len(feats)
        sub = torch.randperm(n, generator=g)[:cfg.cka_max_samples].sort().values if n > cfg.cka_max_samples \
            else torch.arange(n)
        ref = self._layer_features(self.backbone, feats[sub])
        new = self._layer_features(probe, feats[sub])
        del probe
        cka = layerwise_cka(new, ref)
        metrics["probe_loss"] = st["loss"]
        return cka

    def _fsa(self, feats: torch.Tensor, y: torch.Tensor, n_classes: int, g: torch.Generator,
             metrics: dict[str, Any]) -> None:
        cfg = self.config
        t = time.perf_counter()
        if cfg.naive_fsa:
            self.l_tune, self.cka = 1, None
            adapters = add_lora(self.backbone, range(self.n_blocks), cfg.lora_rank, cfg.lora_alpha, 0,
                                self.lora_targets, g)
            head = self._new_head(n_classes, g)
            st = self._train_backbone(self.backbone, head, [(list(head.parameters()), cfg.lr_head),
                                                            (lora_parameters(self.backbone, 0), cfg.lr_backbone)],
                                      feats, y, cfg.e0, g, cfg.use_boundary_loss, "naive FSA: head + LoRA")
        else:
            self.cka = self._probe(feats, y, n_classes, g, metrics)
            self.l_tune = choose_l_tune(self.cka, cfg.rho_layer)
            metrics["probe_seconds"] = time.perf_counter() - t
            adapters = add_lora(self.backbone, range(self.tune_start, self.n_blocks), cfg.lora_rank,
                                cfg.lora_alpha, 0, self.lora_targets, g)
            head = self._new_head(n_classes, g)
            metrics["head_loss"] = self._train_head(head, self.backbone, feats, y, g, "FSA: head")
            st = self._train_backbone(self.backbone, head, [(lora_parameters(self.backbone, 0), cfg.lr_backbone)], feats,
                                      y, cfg.e0, g,
                                      cfg.use_boundary_loss, f"FSA: LoRA, blocks >= {self.l_tune}")
        metrics.update(cka=self.cka, l_tune=self.l_tune, adapted=True, adapted_layers=list(adapters),
                       train=st, fsa_seconds=time.perf_counter() - t)

    # ---- MSA ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def session_subspaces(self, feats: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
        """Principal input subspace (energy rho_svd) of every adapted layer on these clips, under the
        unlearned model (W0 - sum of all current adapters). Returns bases and {layer: [k, d]}."""
        layers = lora_layers(self.backbone)
        if not layers:
            raise RuntimeError("the backbone has no LoRA layers yet: run session 0 first")
        with unlearned(self.backbone), collect_inputs(layers) as stats:
            self._embed(feats)
        bases = {n: s.basis(self.config.rho_svd)[0] for n, s in stats.items()}
        dims = {n: [int(P.shape[1]), int(P.shape[0])] for n, P in bases.items()}
        return bases, dims

    def _msa(self, session: int, feats: torch.Tensor, y: torch.Tensor, n_classes: int, g: torch.Generator,
             metrics: dict[str, Any]) -> None:
        cfg = self.config
        t = time.perf_counter()
        bases, dims = self.session_subspaces(feats)
        metrics["subspace_seconds"] = time.perf_counter() - t
        metrics["subspace"] = dims
        adapters: dict[str, LoRAAdapter] = add_lora(self.backbone, range(self.tune_start, self.n_blocks),
                                                    cfg.lora_rank, cfg.lora_alpha, session, self.lora_targets, g)
        if set(adapters) != set(bases):
            raise RuntimeError(f"MSA layers {sorted(adapters)} differ from the FSA layers {sorted(bases)}")
        projector = GradientProjector(adapters, bases, cfg.msa_projection)
        try:
            head = self._new_head(n_classes, g)
            metrics["head_loss"] = self._train_head(head, self.backbone, feats, y, g, f"MSA {session}: head")
            st = self._train_backbone(self.backbone, head, [(lora_parameters(self.backbone, session), cfg.msa_lr)],
                                      feats, y, cfg.msa_epochs, g,
                                      cfg.use_boundary_loss, f"MSA {session}: LoRA")
        finally:
            projector.remove()
        self.msa_samples_seen += len(feats)
        if self.msa_samples_seen >= cfg.n_stop:
            self.frozen = True
        metrics.update(adapted=True, train=st, msa_seconds=time.perf_counter() - t)

    # ---- public API -----------------------------------------------------------------------------------
    def fit_session(self, session_index: int, waves: np.ndarray | torch.Tensor,
                    labels: Sequence[str]) -> dict[str, Any]:
        """Learn one session: FSA on session 0, MSA (while not frozen) afterwards, then the recursive
        classifier update. Sessions must come in order 0, 1, 2, ...; returns this session's metrics."""
        if session_index != self.sessions_done:
            raise ValueError(f"expected session {self.sessions_done} next (sessions are learned in order), "
                             f"got session {session_index}")
        labels = [str(x) for x in labels]
        w = as_waves(self.backbone, waves)
        if len(labels) != len(w):
            raise ValueError(f"got {len(w)} waveforms but {len(labels)} labels")
        if len(w) == 0:
            raise ValueError("a session needs at least one clip")
        cfg = self.config
        t0 = time.perf_counter()
        # all randomness of a session (LoRA init, heads, shuffles, masks) comes from this generator, so a
        # run resumed from a checkpoint repeats an uninterrupted one exactly
        g = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + session_index)
        classes = list(dict.fromkeys(labels))
        y = torch.tensor([classes.index(c) for c in labels])
        metrics: dict[str, Any] = {"session": session_index, "n_train": len(w), "classes": classes, "adapted": False}
        feats = self.frontend_features(w)
        if session_index == 0:
            self._fsa(feats, y, len(classes), g, metrics)
        elif cfg.use_msa and not self.frozen and self.msa_samples_seen < cfg.n_stop:
            self._msa(session_index, feats, y, len(classes), g, metrics)
        if session_index == 0 and not cfg.use_msa:
            self.frozen = True
        if cfg.use_msa and self.msa_samples_seen >= cfg.n_stop:
            self.frozen = True
        emb = self._embed(feats)
        if session_index == 0 and cfg.standardize != "none" and len(emb) >= 2:  # of the (adapted) embedding
            mean, scale = embedding_stats(emb.float().cpu().numpy(), cfg.standardize)
            self.projection = RandomProjection(self.embed_dim, cfg.d_proj, cfg.proj_seed, mean, scale).to(self.device)
        Z = self._project(emb)
        if self.classifier is None:
            self.classifier = AnalyticClassifier(cfg.d_proj, cfg.gamma_fallback, keep_features=cfg.keep_features)
        self.classifier.learn(Z, labels)
        if cfg.keep_features:  # the device's own rule, every session (runtime/gamma.py)
            found = self.classifier.choose_gamma(cfg.gamma_fallback, cfg.gamma_grid, cfg.gamma_criterion)
            metrics["gamma_search"] = {k: v for k, v in found.as_dict().items() if k != "grid"}
        metrics["gamma"] = self.classifier.gamma
        self.sessions_done += 1
        metrics.update(frozen=self.frozen, msa_samples_seen=self.msa_samples_seen,
                       seconds=time.perf_counter() - t0)
        self.history.append(metrics)
        return metrics

    def embed(self, waves: np.ndarray | torch.Tensor) -> np.ndarray:
        """Backbone features f(x) [n, D] (float32), before the random projection."""
        return self._embed(self.frontend_features(waves)).cpu().numpy().astype(np.float32)

    def features(self, waves: np.ndarray | torch.Tensor) -> np.ndarray:
        """Classifier features z = ReLU(f(x) W_proj) [n, d_proj] (float32)."""
        return self._project(self._embed(self.frontend_features(waves)))

    def scores(self, waves: np.ndarray | torch.Tensor) -> np.ndarray:
        if self.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.classifier.scores(self.features(waves))

    def predict(self, waves: np.ndarray | torch.Tensor) -> list[str]:
        if self.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.classifier.predict(self.features(waves))
