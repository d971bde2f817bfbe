"""PACE checkpoints: a folder, written atomically (temp folder, fsync, rename), resumable per session.

Layout::

    config.json            format/version, backbone (name, weights path or null, how to rebuild it),
                           sample rate, PaceConfig, projection (in_dim, dim, seed), L_tune, CKA, sessions
                           done, frozen flag, samples seen (N_stop count), adapted flag, adaptation (the
                           do-no-harm record), window_seconds, hop_seconds, classes
    adapters.safetensors   every LoRA tensor, session-tagged ('<layer>.s<session>.A|B|alpha')
    classifier.safetensors the analytic classifier (``edge_pace.runtime.state.save_state``)
    metrics.json           per-session metrics (losses, CKA, subspace sizes, timings)
    backbone.safetensors   base weights, only when they cannot be rebuilt from a registry name + weights file

A multi-branch backbone (``aisfx+speech+voice``, edge_pace/backbones/branches.py): the LoRA tensors are the first
(trainable) branch's, named inside it; config.json's ``branches`` lists every branch (dims, weight, conditioning,
trainable / adapted) and ``backbone_spec.kwargs`` the parts, weights and conditioning; the projection takes the
combined embedding (``feature_in_dim``); ``backbone.safetensors``, when needed, holds every branch.

``load_adapted_model`` is what export calls: backbone with LoRA merged (eval), projection, classifier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from edge_pace import backbones
from edge_pace.method.config import PaceConfig
from edge_pace.method.lora import (base_state_dict, freeze_backbone, load_lora_state_dict, lora_layers, lora_state_dict,
                                   merge_lora)
from edge_pace.method.pace import PaceLearner
from edge_pace.method.projection import RandomProjection
from edge_pace.runtime.analytic import AnalyticClassifier
from edge_pace.runtime.atomic import write_dir
from edge_pace.runtime.state import load_state, state_to_bytes

CHECKPOINT_FORMAT = "edge-pace-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the folder and the problem."""


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def checkpoint_config(learner) -> dict[str, Any]:
    """The config.json dictionary of a learner."""
    spec = dict(learner.backbone_spec)
    if getattr(learner, "branches", None) is not None:  # the branch weights and conditioning in use now
        spec["kwargs"] = backbones.architecture(learner.branches)
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "backbone": spec["name"],
        "backbone_weights": "backbone.safetensors" if spec["store_base"] else spec["weights"],
        "backbone_spec": spec,
        "sample_rate": learner.sample_rate, "embed_dim": learner.embed_dim,
        "feature_in_dim": getattr(learner, "feature_in_dim", learner.embed_dim),
        "branches": learner.branch_description() if hasattr(learner, "branch_description") else None,
        "pace": learner.config.to_dict(),
        "projection": learner.projection.describe(),
        "l_tune": learner.l_tune, "cka": learner.cka,
        "sessions_done": learner.sessions_done, "frozen": learner.frozen,
        "msa_samples_seen": learner.msa_samples_seen,
        "adapted": bool(lora_layers(learner.backbone)), "adaptation": learner.adaptation,
        "window_seconds": learner.spec.window_seconds, "hop_seconds": learner.spec.hop_seconds,
        "classes": learner.classes,
        "lora": {"rank": learner.config.lora_rank, "alpha": learner.config.lora_alpha,
                 "targets": list(learner.lora_targets)},
    }


def save_checkpoint(learner: PaceLearner, folder: str | Path) -> Path:
    """Write ``learner`` to ``folder`` atomically: a complete new folder replaces any older checkpoint there."""
    from safetensors.torch import save as save_tensors

    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise FileExistsError(f"{folder} exists and is not an edge-pace checkpoint; refusing to replace it")
    files = {"config.json": json.dumps(_jsonable(checkpoint_config(learner)), indent=2).encode(),
             "adapters.safetensors": save_tensors(lora_state_dict(learner.backbone),
                                                  metadata={"format": "edge-pace-lora", "version": "1"})}
    if learner.classifier is not None:
        files["classifier.safetensors"] = state_to_bytes(learner.classifier)
    metrics = {"history": learner.history, "cka": learner.cka, "l_tune": learner.l_tune,
               "adaptation": learner.adaptation}
    files["metrics.json"] = json.dumps(_jsonable(metrics), indent=2).encode()
    if learner.backbone_spec["store_base"]:  # a multi-branch backbone: every branch
        files["backbone.safetensors"] = save_tensors(base_state_dict(getattr(learner, "full_backbone",
                                                                             learner.backbone)))
    return write_dir(folder, files)


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json, not an edge-pace checkpoint folder")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if cfg.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an edge-pace checkpoint (format {cfg.get('format')!r})")
    if cfg.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {cfg.get('version')} is not supported "
                              f"(this code reads version {CHECKPOINT_VERSION})")
    return cfg


def build_backbone(cfg: dict[str, Any], folder: str | Path) -> nn.Module:
    """The base (LoRA-free) backbone a checkpoint was trained on, on CPU, in eval mode."""
    spec, folder = cfg["backbone_spec"], Path(folder)
    if not spec["store_base"]:
        weights = spec.get("weights")
        registered = backbones.BACKBONES.get(spec["name"])
        if weights and Path(weights).is_file():
            return _with_branch_settings(backbones.load(spec["name"], weights)[0], spec)
        if registered is not None and (registered.default_weights is not None or registered.parts):
            return _with_branch_settings(backbones.load(spec["name"])[0], spec)  # the cache file moved: fetch again
        raise CheckpointError(f"{folder}: backbone weights {weights!r} not found; the checkpoint needs them")
    try:
        model = backbones.rebuild(spec["class"], dict(spec.get("kwargs") or {}))
    except ValueError as exc:
        raise CheckpointError(f"{folder}: {exc}") from exc
    path = folder / "backbone.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{folder}: backbone.safetensors is missing")
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def _with_branch_settings(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """A multi-branch backbone gets the branch weights and conditioning it was trained with (backbone_spec's
    kwargs); any other model is returned as it is."""
    from edge_pace.backbones.branches import MultiBranch

    if isinstance(model, MultiBranch):
        kw = spec.get("kwargs") or {}
        model.weights = {n: float((kw.get("weights") or {}).get(n, model.weights[n])) for n in model.names}
        model.conditioning = kw.get("conditioning", model.conditioning)
    return model


def _load_adapters(model: nn.Module, folder: Path) -> list[int]:
    """The checkpoint's LoRA tensors into ``model`` (a multi-branch backbone: into its first branch, where PACE
    trained them)."""
    from safetensors.torch import load_file

    from edge_pace.backbones.branches import trainable_branch

    path = folder / "adapters.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{folder}: adapters.safetensors is missing")
    state = load_file(str(path))
    return load_lora_state_dict(trainable_branch(model)[0], state) if state else []


def load_checkpoint(folder: str | Path, device: str | None = None) -> PaceLearner:
    """A ``PaceLearner`` in the state ``save_checkpoint`` wrote; ``fit_session`` continues at the next session."""
    folder = Path(folder)
    cfg = read_config(folder)
    config = PaceConfig.from_dict(cfg["pace"])
    model = build_backbone(cfg, folder)
    _load_adapters(model, folder)
    learner = PaceLearner(model, config, device=device)
    learner.backbone_spec = dict(cfg["backbone_spec"])
    freeze_backbone(learner.backbone)
    proj = cfg["projection"]
    if (proj["in_dim"], proj["dim"], proj["seed"]) != (learner.feature_in_dim, config.d_proj, config.proj_seed):
        raise CheckpointError(f"{folder}: projection {dict(list(proj.items())[:3])} does not match the backbone/config")
    learner.projection = RandomProjection.from_description(proj).to(learner.device)
    if (folder / "classifier.safetensors").is_file():
        learner.classifier = load_state(folder / "classifier.safetensors")
    elif cfg["sessions_done"] > 0:
        raise CheckpointError(f"{folder}: classifier.safetensors is missing")
    learner.l_tune, learner.cka = cfg["l_tune"], cfg["cka"]
    learner.sessions_done, learner.frozen = int(cfg["sessions_done"]), bool(cfg["frozen"])
    learner.msa_samples_seen = int(cfg["msa_samples_seen"])
    learner.adaptation = cfg.get("adaptation")
    mpath = folder / "metrics.json"
    learner.history = json.loads(mpath.read_text()).get("history", []) if mpath.is_file() else []
    return learner


def load_adapted_model(folder: str | Path) -> tuple[nn.Module, RandomProjection, AnalyticClassifier, dict[str, Any]]:
    """(backbone with every LoRA merged into its weights, eval, CPU; the random projection; the
    analytic classifier; the config.json dictionary) -- the inputs of the export step."""
    folder = Path(folder)
    cfg = read_config(folder)
    model = build_backbone(cfg, folder)
    _load_adapters(model, folder)
    merged = merge_lora(model)
    freeze_backbone(merged)
    proj = cfg["projection"]
    projection = RandomProjection.from_description(proj).eval()
    path = folder / "classifier.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{folder}: classifier.safetensors is missing (no session learned yet?)")
    return merged, projection, load_state(path), cfg


__all__ = ["save_checkpoint", "load_checkpoint", "load_adapted_model", "read_config", "build_backbone",
           "checkpoint_config", "CheckpointError"]
