"""PACE on the training side: first-session adaptation (FSA, improved), multi-session adaptation (MSA)
with subspace-projected LoRA, boundary-aware perturbation, and the analytic classifier.

Session 0 (``_fsa``), with do-no-harm (``do_no_harm``, method/harm.py): ~1/3 of its classes are held out;
  steps 1-2 see only the others, and after every FSA epoch the device classifier is scored on the held-out
  classes (two folds, the device's gamma rule; accuracy, then per-clip ridge margins). The best epoch, L_tune
  candidate (and learning rate of ``fsa_lrs``) is kept only if it beats the frozen backbone there by a paired
  test at ``holdout_margin_z``, Bonferroni-corrected for the candidates tried (on accuracy, or, accuracy not lower,
  on the per-clip margins; ``harm.better``); otherwise the adapters are dropped and the pretrained backbone
  stays, frozen for good. The decision is ``self.adaptation`` (metrics, checkpoint, bundle manifest).
  1. CKA probe: a copy of the pretrained backbone gets LoRA on every block and is trained like FSA at the
     probe's own small rate (``probe_lr``, clipped steps, so it does not destroy what it measures). Per
     block, linear CKA s_k between the probe's and the pretrained model's pooled block outputs. k* = argmax_k
     [s_k < rho_layer] (the first block below), L_tune = k* + 1 (1-based): that block and every later one are
     adapted; none below -> only the last block. The probe is discarded. The probe's L_tune and up to
     ``l_tune_search`` earlier blocks are the candidates, each trained as in step 2 and scored on the held-out
     classes.
  2. Staged training: a head alone (backbone frozen) for head_epochs at lr_head, then LoRA on blocks >=
     L_tune for e0 epochs at lr_backbone, loss CE + lambda * L_reg, gradient norm clipped to grad_clip.
     ``cache_stem``: the frozen blocks below L_tune run once per candidate (every session-0 clip, and N_p
     spectrogram-masked copies of each training clip, masks drawn once rather than every epoch); training and
     the held-out scoring then run only the adapted blocks (``fsa.FromBlock``).
  3. The head is dropped: z = ReLU(standardised f(x) W_proj) -> AnalyticClassifier, gamma re-chosen every
     session by leave-one-clip-out (runtime/gamma.py, the device's rule).
Sessions t >= 1 (``_msa``), while the backbone is not frozen: a fresh LoRA per layer (older frozen), head stage
  on the session's classes (exemplar-free, so a one-class session has nothing to learn and is skipped), then
  msa_epochs at msa_lr, its input-side factor A kept in the principal subspace of the session's layer inputs
  under the unlearned model (W0 - sum of older LoRAs; ``subspace``). N_stop: training samples are counted from
  session 0 on; once the count exceeds n_stop the backbone freezes for good (a session 0 larger than n_stop:
  no MSA at all).
Every session ends with a recursive (closed-form) classifier update on the session's features. After
the backbone has changed, old classes' statistics in the classifier are those computed with the older
backbone: this is the paper's design (no old data is stored to recompute them); it is why MSA stops early
and keeps updates inside the input subspace.

The backbone always runs in eval mode, also while adapting (BatchNorm running statistics frozen, no dropout).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge_pace import backbones
from edge_pace.backbones.branches import (MultiBranch, branch_stats, describe_branches, frozen_embeddings,
                                          trainable_branch)
from edge_pace.method.config import PaceConfig
from edge_pace.method.fsa import choose_l_tune, first_session  # noqa: F401  (choose_l_tune: public here too)
from edge_pace.method.lora import LoRAAdapter, add_lora, freeze_backbone, lora_layers, lora_parameters, unlearned
from edge_pace.method.perturb import boundary_loss, boundary_mask, spec_masks
from edge_pace.method.projection import RandomProjection, embedding_stats
from edge_pace.method.subspace import GradientProjector, collect_inputs
from edge_pace.method.training import (CosineHead, as_waves, autocast, embed_features, frontend_features, linear_head,
                                       resolve_device, run_epochs, sgd, trainable)
from edge_pace.runtime.analytic import AnalyticClassifier


class PaceLearner:
    """Class-incremental PACE learner over a pretrained backbone (see module docstring).

    ``backbone`` is a registry name (``edge_pace.backbones.load``) or a backbone module with the
    common interface (``frontend``, ``blocks``, ``embed_features``, ``embed_dim``, ``sample_rate``).
    """

    def __init__(self, backbone: str | nn.Module = backbones.DEFAULT, config: PaceConfig | None = None, *,
                 pretrained: bool = True, weights: str | None = None, device: str | None = None) -> None:
        """A multi-branch ``backbone`` ("aisfx+speech+voice", or a ``MultiBranch``; edge_pace/backbones/branches.py):
        PACE adapts its first (trainable) branch only -- ``self.backbone`` is that branch, the same module as inside
        ``self.branches``, so the CKA probe, FSA, MSA and every LoRA adapter see it alone (the do-no-harm check
        scores the combined features: the frozen branches' embeddings appended, ``fsa.held_out``), and export
        merges the LoRA into the bundle's branch. The other branches stay frozen; their embeddings are computed once
        per session from the waveforms. The classifier's features are the bundle's: the projection takes every
        branch side by side (``feature_in_dim``), conditioned per branch and weighted (``branch_stats``, from session
        0), and the analytic classifier and its leave-one-clip-out gamma work on those combined z unchanged.
        ``weights``: the first branch's weights file."""
        self.config = config if config is not None else PaceConfig()
        self.config.validate()
        if isinstance(backbone, str):
            model, spec = backbones.load(backbone, weights, pretrained=pretrained)
            reproducible = spec.weights_file is not None
            if spec.parts and pretrained:  # a multi-branch backbone: every part from its fetched (pinned) weights
                first = backbones.get_spec(spec.parts[0]).default_weights
                spec = dataclasses.replace(spec, weights_file=weights or (str(first()) if first else None))
                reproducible = spec.weights_file is not None
        else:
            model, spec, reproducible = backbone, backbones.spec_of(backbone), False
        name = spec.name
        # a multi-branch backbone (aisfx+speech+voice, edge_pace/backbones/branches.py): PACE adapts its first
        # branch (self.backbone: the probe, FSA, do-no-harm, MSA and LoRA see only it); the other branches stay
        # frozen and add their embeddings, computed once per session, to the classifier's features
        self.branches: MultiBranch | None = None
        full = model
        model, self.branches = trainable_branch(model)
        for attr in ("frontend", "blocks", "embed_features", "embed_dim", "sample_rate"):
            if not hasattr(model, attr):
                raise TypeError(f"backbone {name!r} lacks `{attr}`: PACE needs frontend, blocks, embed_features, "
                                "embed_dim and sample_rate")
        self.spec = spec  # window/hop, LoRA targets, licence, ... (edge_pace.backbones)
        self.lora_targets = tuple(self.config.lora_targets) or spec.lora_targets
        self.backbone_spec: dict[str, Any] = {
            "name": name, "weights": str(Path(spec.weights_file).resolve()) if reproducible else None,
            "class": backbones.class_path(full), "kwargs": backbones.architecture(full),
            "store_base": not reproducible}
        self.device = resolve_device(device or self.config.device)
        full.to(self.device)
        freeze_backbone(full)  # every branch: eval mode, no gradients (LoRA switches on its own parameters)
        self.backbone = model  # the trainable backbone (a multi-branch backbone's first branch)
        self.embed_dim = int(model.embed_dim)  # the trainable backbone's (heads, probe)
        self.feature_in_dim = int(full.embed_dim)  # what the random projection takes: every branch side by side
        self.projection = RandomProjection(self.feature_in_dim, self.config.d_proj,
                                           self.config.proj_seed).to(self.device)
        self.classifier: AnalyticClassifier | None = None
        self.l_tune: int | None = None  # 1-based first adapted block
        self.cka: list[float] | None = None
        self.sessions_done = 0
        self.frozen = False
        self.msa_samples_seen = 0  # training samples seen from session 0 on (the N_stop count)
        self.adaptation: dict[str, Any] | None = None  # the do-no-harm record of session 0 (method/harm.py)
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
        return embed_features(self.backbone if model is None else model, feats, self.config.embed_batch, self.device)

    @torch.no_grad()
    def _layer_features(self, model: nn.Module, feats: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[n, T, F] -> the embeddings [n, D] (float32, on the device) and the pooled output of every block
        ([n, C_l] each, on CPU; the CKA probe's), in one float32 pass."""
        emb, per_batch = [], []
        for i in range(0, len(feats), self.config.embed_batch):
            e, layers = model.embed_features(feats[i:i + self.config.embed_batch].to(self.device), return_layers=True)
            emb.append(e.float())
            per_batch.append([x.float().cpu() for x in layers])
        return torch.cat(emb), [torch.cat([b[k] for b in per_batch]) for k in range(len(per_batch[0]))]

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
                    g: torch.Generator, description: str, emb: torch.Tensor | None = None) -> list[float]:
        """Stage 1: the head alone on frozen-backbone features (computed once; ``emb``: already computed)."""
        cfg = self.config
        if cfg.head_epochs == 0:
            return []
        emb = self._embed(feats, model) if emb is None else emb.to(self.device)
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
                        use_reg: bool, description: str, on_epoch=None, bank: torch.Tensor | None = None
                        ) -> dict[str, Any]:
        """LoRA (and, for naive FSA, head) training with CE + lambda * L_reg on [n, T, F] features (or, through a
        ``FromBlock`` model (method/fsa.py), cached activations [n, ...] with their masked copies' activations
        ``bank`` [n, N_p, ...]); gradient norm clipped to ``grad_clip``; the backbone stays in eval mode
        (BatchNorm statistics frozen, no dropout)."""
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
                copies = bank[idx] if bank is not None else spec_masks(xb, npt, cfg.r_time, cfg.r_freq, g)
                xb = torch.cat([xb, copies.to(xb.dtype).reshape(-1, *xb.shape[1:])])
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
                                progress=lambda loss: progress.update(task, advance=1, info=f"loss {loss:.3f}"),
                                clip=cfg.grad_clip, on_epoch=on_epoch)
        for tot in totals:
            for k in ("loss", "ce", "reg"):
                stats[k].append(tot[k] / n)
            stats["boundary"].append(tot["boundary"])
        trainable(params, False)
        return stats

    # ---- FSA (method/fsa.py) ----------------------------------------------------------------------------
    def _fsa(self, feats: torch.Tensor, labels: list[str], g: torch.Generator, metrics: dict[str, Any],
             side: torch.Tensor | None = None) -> torch.Tensor:
        return first_session(self, feats, labels, g, metrics, side)

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
        # a multi-branch backbone: the frozen branches' embeddings, once per session (FSA judges on them too)
        side = self._frozen_branches(w) if self.branches is not None else None
        emb = None  # FSA returns the session's embeddings (computed while validating it)
        if session_index == 0:
            emb = self._fsa(feats, labels, g, metrics, side)
        elif cfg.use_msa and not self.frozen and len(classes) < 2:
            # the MSA head covers the session's classes only (exemplar-free, as in the paper): with one class
            # cross-entropy is constant and no sample can be a boundary sample, so LoRA would get no gradient
            metrics["msa_skipped"] = "one class: nothing for the session head to learn"
        elif cfg.use_msa and not self.frozen:
            self._msa(session_index, feats, y, len(classes), g, metrics)
        # N_stop counts the training samples seen from session 0 on (paper: sum_{t=0}^{T3} N_t > N_stop)
        self.msa_samples_seen += len(w)
        if not cfg.use_msa or self.msa_samples_seen > cfg.n_stop:
            self.frozen = True
        if emb is None:
            emb = self._embed(feats)
        if side is not None:  # + the frozen branches' embeddings
            emb = torch.cat([emb, side], dim=1)
        if session_index == 0 and cfg.standardize != "none" and len(emb) >= 2:  # of the (adapted) embedding
            mean, scale = self._conditioning(emb.float().cpu().numpy())
            self.projection = RandomProjection(self.feature_in_dim, cfg.d_proj, cfg.proj_seed, mean,
                                               scale).to(self.device)
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
        """Backbone features f(x) [n, D] (float32), before the random projection; a multi-branch backbone: every
        branch side by side (the adapted first one, then the frozen ones), as its exported graph computes them."""
        return self._combined(waves).cpu().numpy().astype(np.float32)

    def features(self, waves: np.ndarray | torch.Tensor) -> np.ndarray:
        """Classifier features z = ReLU(f(x) W_proj) [n, d_proj] (float32); f(x) conditioned (per branch for a
        multi-branch backbone) as the projection's mean and scale say."""
        return self._project(self._combined(waves))

    def scores(self, waves: np.ndarray | torch.Tensor) -> np.ndarray:
        if self.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.classifier.scores(self.features(waves))

    def predict(self, waves: np.ndarray | torch.Tensor) -> list[str]:
        if self.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.classifier.predict(self.features(waves))

    # ---- multi-branch backbones (issue 16; edge_pace/backbones/branches.py) ------------------------------------
    def _frozen_branches(self, waves: torch.Tensor) -> torch.Tensor:
        """[n, S] -> [n, dims of the frozen branches] (float32, on the device)."""
        return frozen_embeddings(self.branches, waves, self.config.embed_batch, self.device)

    def _combined(self, waves: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[n, S] -> f(x) [n, feature_in_dim]: the trainable backbone's embedding (+ the frozen branches')."""
        if self.branches is None:
            return self._embed(self.frontend_features(waves))
        w = as_waves(self.branches, waves)
        return torch.cat([self._embed(self.frontend_features(w)), self._frozen_branches(w)], dim=1)

    def _conditioning(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The projection's (mean, scale) from session-0 embeddings: ``cfg.standardize`` of the whole embedding;
        a multi-branch backbone: per branch (``branch_stats``: the first by ``cfg.standardize``, the frozen ones
        as the bundle conditions them, each divided by its weight), exactly what a frozen export folds in."""
        if self.branches is None:
            return embedding_stats(emb, self.config.standardize)
        return branch_stats(self.branches, emb, mode=self.config.standardize)

    @property
    def full_backbone(self) -> nn.Module:
        """What the bundle exports: the multi-branch backbone (its first branch = ``backbone``), else ``backbone``."""
        return self.backbone if self.branches is None else self.branches

    def branch_description(self) -> dict[str, Any] | None:
        """Per branch: dims, weight, conditioning, trainable / adapted (None for a single backbone)."""
        if self.branches is None:
            return None
        return describe_branches(self.branches, bool(lora_layers(self.backbone)))
