"""Improved first-session adaptation (FSA) with do-no-harm: the CKA probe, the L_tune candidates, the cached frozen
blocks, staged training and the held-out decision (method/harm.py). Module functions over a ``PaceLearner``
(method/pace.py), which calls ``first_session`` for session 0; see that module's docstring for the method.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from edge_pace.method.cka import layerwise_cka
from edge_pace.method.harm import decision, held_out_score, holdout_split, rank_key
from edge_pace.method.lora import add_lora, drop_lora, freeze_backbone, lora_parameters
from edge_pace.method.perturb import spec_masks
from edge_pace.method.training import autocast

Learner = Any  # a PaceLearner (method/pace.py imports this module, so it is not imported here)


def choose_l_tune(cka: Sequence[float], rho_layer: float) -> int:
    """1-based L_tune from per-block CKA values s_0..s_{L-1} (0-based blocks).

    k* = argmax_k [s_k < rho_layer] (the first block below rho_layer), L_tune = k* + 1; blocks
    L_tune..L (1-based) are adapted. No block below rho_layer -> L_tune = L (only the last block).
    """
    if len(cka) == 0:
        raise ValueError("choose_l_tune needs at least one CKA value")
    below = [k for k, s in enumerate(cka) if s < rho_layer]
    return (below[0] + 1) if below else len(cka)


class FromBlock(nn.Module):
    """The backbone from block ``start`` on (``embed_from``): cached activations of the frozen blocks below in,
    embeddings out. Holds no parameters of its own; LoRA lives in the backbone's blocks."""

    def __init__(self, backbone: nn.Module, start: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.start = int(start)

    def embed_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed_from(x, self.start)


def probe(learner: Learner, feats: torch.Tensor, y: torch.Tensor, n_classes: int, g: torch.Generator,
          metrics: dict[str, Any], emb: torch.Tensor | None = None, layers: list[torch.Tensor] | None = None
          ) -> list[float]:
    """The CKA probe: a copy of the backbone with LoRA on every block, trained at ``probe_lr``; linear CKA per block
    between its pooled block outputs and the pretrained model's (the copy is discarded). ``emb`` / ``layers``: the
    pretrained model's embeddings and pooled block outputs of ``feats`` when already computed."""
    cfg = learner.config
    model = copy.deepcopy(learner.backbone)
    freeze_backbone(model)
    add_lora(model, range(learner.n_blocks), cfg.lora_rank, cfg.lora_alpha, 0, learner.lora_targets, g)
    head = learner._new_head(n_classes, g)
    learner._train_head(head, model, feats, y, g, "probe: head", emb)  # LoRA starts at B = 0: pretrained features
    st = learner._train_backbone(model, head, [(lora_parameters(model, 0), cfg.probe_lr)], feats, y, cfg.e0, g,
                                 cfg.probe_boundary_loss and cfg.use_boundary_loss, "probe: LoRA, all blocks")
    n = len(feats)
    sub = torch.randperm(n, generator=g)[:cfg.cka_max_samples].sort().values if n > cfg.cka_max_samples \
        else torch.arange(n)
    ref = [x[sub] for x in layers] if layers is not None else learner._layer_features(learner.backbone, feats[sub])[1]
    new = learner._layer_features(model, feats[sub])[1]
    del model
    cka = layerwise_cka(new, ref)
    metrics["probe_loss"] = st["loss"]
    return cka


def held_out(learner: Learner, emb: torch.Tensor, labels: list[str], split, ref: dict[str, Any] | None = None,
             side: torch.Tensor | None = None) -> dict[str, Any]:
    """The held-out score (harm.py) of backbone embeddings [n, D] of all session-0 clips, as the classifier sees
    them: with a multi-branch backbone the frozen branches' embeddings ``side`` are appended and conditioned per
    branch (the learner's own ``_conditioning``). Margins at the frozen backbone's gammas (``ref``) when given."""
    cfg = learner.config
    stats = None
    if side is not None:
        emb = torch.cat([emb.float(), side.to(emb.device).float()], dim=1)
        stats = learner._conditioning
    return held_out_score(emb.float().cpu().numpy(), labels, split, cfg.d_proj, cfg.proj_seed, cfg.standardize,
                          cfg.gamma_fallback, cfg.gamma_grid, cfg.gamma_criterion,
                          None if ref is None else ref["gammas"], stats)


def can_cache(learner: Learner, start: int) -> bool:
    """Whether FSA can run from block ``start`` on cached activations (``cache_stem``, a backbone with ``stem``)."""
    return (learner.config.cache_stem and start > 0 and hasattr(learner.backbone, "stem")
            and hasattr(learner.backbone, "embed_from"))


@torch.no_grad()
def _batched(learner: Learner, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], amp: bool) -> torch.Tensor:
    """``fn`` over ``x`` in ``embed_batch`` chunks on the device: float32, or, with ``amp``, computed and kept in the
    training steps' precision (``autocast``; bfloat16 where it applies)."""
    out, batch = [], learner.config.embed_batch
    for i in range(0, len(x), batch):
        with autocast(learner.device, amp):
            a = fn(x[i:i + batch].to(learner.device))
        out.append(a if amp else a.float())
    return torch.cat(out)


def stem_activations(learner: Learner, feats: torch.Tensor, start: int, amp: bool = False) -> torch.Tensor:
    """[n, T, F] -> the frozen blocks' activations entering block ``start`` (on the device; precision: ``_batched``)."""
    return _batched(learner, feats, lambda f: learner.backbone.stem(f, start), amp)


@torch.no_grad()
def stem_bank(learner: Learner, feats: torch.Tensor, start: int, g: torch.Generator) -> torch.Tensor:
    """N_p spectrogram-masked copies of each clip ([n, T, F] -> [n, N_p, ...] activations entering block
    ``start``): the masks are drawn once here (spec_masks, same widths), not every epoch. Only training steps read
    them, so they are computed and kept in the training precision (``amp``: bfloat16 halves their memory)."""
    cfg = learner.config
    step = max(1, cfg.embed_batch // max(1, cfg.n_perturb))
    out = []
    for i in range(0, len(feats), step):
        xb = feats[i:i + step]
        copies = spec_masks(xb, cfg.n_perturb, cfg.r_time, cfg.r_freq, g).reshape(-1, *xb.shape[1:])
        a = stem_activations(learner, copies, start, learner.config.amp)
        out.append(a.reshape(len(xb), cfg.n_perturb, *a.shape[1:]))
    return torch.cat(out)


@torch.no_grad()
def advance(learner: Learner, x: torch.Tensor, start: int, stop: int, bank: bool = False) -> torch.Tensor:
    """Activations entering block ``start`` -> those entering block ``stop`` (the pretrained blocks start..stop-1;
    no LoRA may be on them). ``x``: [n, ...] float32 (``stem_activations``) or, with ``bank``, a ``stem_bank``
    [n, N_p, ...], kept in the training precision as there."""
    def blocks(a: torch.Tensor) -> torch.Tensor:
        for block in learner.backbone.blocks[start:stop]:
            a = block(a)
        return a

    a = _batched(learner, x.reshape(-1, *x.shape[2:]) if bank else x, blocks, bank and learner.config.amp)
    return a.reshape(*x.shape[:2], *a.shape[1:]) if bank else a


def first_session(learner: Learner, feats: torch.Tensor, labels: list[str], g: torch.Generator,
                  metrics: dict[str, Any], side: torch.Tensor | None = None) -> torch.Tensor:
    """Improved FSA with do-no-harm validation (method/harm.py): probe, staged training on the adapted classes
    for each L_tune candidate and learning rate, early stopping by held-out-class score, adapted backbone kept
    only if it beats the frozen one there. BatchNorm statistics stay frozen (eval mode) throughout, steps are
    norm-clipped. With ``cache_stem`` the frozen blocks below L_tune run once (``FromBlock``): for the shallowest
    candidate, advanced to the deeper ones (``advance``; one set of masks for all). ``side``: a multi-branch
    backbone's frozen-branch embeddings of these clips, so that adaptation is judged on the combined features the
    classifier uses. Returns the backbone embeddings [n, D] of ``feats`` as the session's classifier sees them."""
    cfg = learner.config
    t = time.perf_counter()
    split = holdout_split(labels, cfg.holdout_fraction, g) if cfg.do_no_harm else None
    if cfg.do_no_harm and split is None:
        learner.frozen, learner.adaptation = True, decision(None, None, cfg.holdout_margin, None, (
            "session 0 cannot be split into adapted and held-out classes (needs >= 3 classes and a held-out "
            "class with >= 2 clips): nothing to validate adaptation on, frozen backbone kept"),
            cfg.holdout_margin_z)
        metrics.update(cka=None, l_tune=None, adapted=False, adaptation=learner.adaptation,
                       fsa_seconds=time.perf_counter() - t)
        return learner._embed(feats)
    train = split.train if split is not None else torch.arange(len(feats))
    classes = list(dict.fromkeys(labels[int(i)] for i in train))
    ft = feats[train]
    yt = torch.tensor([classes.index(labels[int(i)]) for i in train])
    # the pretrained model's features of every clip, once: the frozen held-out score, every head stage (LoRA
    # starts at B = 0, so an adapted model's features equal these before its first step) and the probe's CKA
    base, layers = learner._layer_features(learner.backbone, feats)
    base_train = base[train.to(base.device)]
    frozen = held_out(learner, base, labels, split, side=side) if split is not None else None
    if cfg.naive_fsa:
        learner.l_tune, learner.cka = 1, None
    else:
        learner.cka = probe(learner, ft, yt, len(classes), g, metrics, base_train, [x[train] for x in layers])
        learner.l_tune = choose_l_tune(learner.cka, cfg.rho_layer)
        metrics["probe_seconds"] = time.perf_counter() - t
    metrics["l_tune_cka"] = learner.l_tune
    # L_tune candidates: the probe's choice and up to l_tune_search earlier blocks (chosen on held-out classes),
    # trained shallowest first so that the deeper ones' cached activations are advanced from its
    search = cfg.l_tune_search if (split is not None and not cfg.naive_fsa) else 0
    candidates = sorted(learner.l_tune - i for i in range(search + 1) if learner.l_tune - i >= 1)
    best: dict[str, Any] | None = None
    curve: list[dict[str, Any]] = []
    st: dict[str, Any] = {}
    use_reg = cfg.use_boundary_loss and cfg.n_perturb > 0 and cfg.lambda_reg > 0
    lrs = cfg.fsa_lrs or (cfg.lr_backbone,)
    cached: tuple[int, torch.Tensor, torch.Tensor | None] | None = None  # (start, activations, bank)
    for l_tune in candidates:
        start = l_tune - 1
        drop_lora(learner.backbone)
        if can_cache(learner, start):  # the frozen blocks below `start` once: every session-0 clip, masked copies
            tc = time.perf_counter()
            if cached is None:
                cached = (start, stem_activations(learner, feats, start), stem_bank(learner, ft, start, g)
                          if use_reg else None)
            else:
                s0, x0, b0 = cached
                cached = (start, advance(learner, x0, s0, start), None if b0 is None else
                          advance(learner, b0, s0, start, bank=True))
                del x0, b0
            model: nn.Module = FromBlock(learner.backbone, start)
            x_all, bank = cached[1], cached[2]
            x_train = x_all[train.to(x_all.device)]
            metrics["cache_seconds"] = metrics.get("cache_seconds", 0.0) + time.perf_counter() - tc
        else:
            model, x_all, x_train, bank = learner.backbone, feats, ft, None
        for lr_rank, lr in enumerate(lrs):
            drop_lora(learner.backbone)
            adapters = add_lora(learner.backbone, range(start, learner.n_blocks), cfg.lora_rank, cfg.lora_alpha,
                                0, learner.lora_targets, g)
            head = learner._new_head(len(classes), g)
            groups = [(lora_parameters(learner.backbone, 0), lr)]
            if cfg.naive_fsa:  # no staging: head and LoRA together
                groups.insert(0, (list(head.parameters()), cfg.lr_head))
            else:
                metrics["head_loss"] = learner._train_head(head, model, x_train, yt, g, "FSA: head", base_train)

            def on_epoch(epoch: int, lr: float = lr, lr_rank: int = lr_rank, l_tune: int = l_tune,
                         model: nn.Module = model, x_all: torch.Tensor = x_all) -> None:
                nonlocal best
                if split is None:
                    return
                emb = learner._embed(x_all, model)
                r = {**held_out(learner, emb, labels, split, frozen, side), "epoch": epoch, "lr": lr,
                     "l_tune": l_tune}
                curve.append(r)
                # ties: the smaller change (fewer adapted blocks, then the earlier learning rate and epoch)
                key = (rank_key(r), l_tune, -lr_rank, -epoch)
                if best is None or key > best["key"]:
                    best = {**r, "key": key, "emb": emb,
                            "state": [p.detach().clone() for p in lora_parameters(learner.backbone, 0)]}

            st = learner._train_backbone(model, head, groups, x_train, yt, cfg.e0, g, cfg.use_boundary_loss,
                                         f"FSA: LoRA, blocks >= {l_tune}, lr {lr:g}", on_epoch, bank=bank)
        del x_all, x_train, bank
    del cached
    adapted, emb = True, None
    if split is not None:
        learner.adaptation = decision(frozen, best, cfg.holdout_margin, split, None if best is not None else
                                      "e0 = 0: no adaptation epoch to validate; frozen backbone kept",
                                      cfg.holdout_margin_z, max(1, len(curve)))
        learner.adaptation["curve"] = [{k: r[k] for k in ("l_tune", "epoch", "lr", "accuracy", "margin", "gamma")}
                                       for r in sorted(curve, key=lambda r: (-r["l_tune"], r["epoch"]))]
        learner.adaptation["l_tune_cka"] = metrics["l_tune_cka"]
        adapted = bool(learner.adaptation["kept"])
        drop_lora(learner.backbone)
        if adapted:  # the best candidate's adapters, rebuilt on its blocks; its embeddings are the session's
            learner.l_tune, emb = best["l_tune"], best["emb"]
            adapters = add_lora(learner.backbone, range(learner.tune_start, learner.n_blocks), cfg.lora_rank,
                                cfg.lora_alpha, 0, learner.lora_targets, g)
            with torch.no_grad():
                for p, v in zip(lora_parameters(learner.backbone, 0), best["state"]):
                    p.copy_(v)
        else:  # exactly the pretrained backbone, frozen for good
            adapters, learner.frozen, emb = {}, True, base
        metrics["adaptation"] = learner.adaptation
    metrics.update(cka=learner.cka, l_tune=learner.l_tune, adapted=adapted, adapted_layers=list(adapters),
                   train=st, fsa_seconds=time.perf_counter() - t)
    return learner._embed(feats) if emb is None else emb


__all__ = ["choose_l_tune", "FromBlock", "first_session", "probe", "held_out", "can_cache", "stem_activations",
           "stem_bank", "advance"]
