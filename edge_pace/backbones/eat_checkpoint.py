"""Local EAT checkpoints for ``EATViT``: the fairseq layout of github.com/cwx-worst-one/EAT
(``modality_encoders.IMAGE.*`` + ``blocks.*``, optionally under ``model`` and prefixed ``model.``) or the Hugging
Face port's layout (``model.local_encoder.*``, ``model.extra_tokens``, ``model.pre_norm.*``, ``model.blocks.*``),
as ``.pt``/``.pth`` (unpickled with a restricted unpickler) or ``.safetensors``. EAT code and weights: MIT licence.
"""

from __future__ import annotations

import math
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_pace.backbones.eat_vit import EATViT

class EATCheckpointError(ValueError):
    """A checkpoint that does not fit the model: wrong keys, shapes or positional embeddings."""


@dataclass
class LoadReport:
    """What ``load_eat_checkpoint`` did: source layout, loaded model keys, ignored and leftover keys."""

    layout: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # known training-only parts (decoder, EMA, head, ...)
    missing: list[str] = field(default_factory=list)  # non-strict only
    unexpected: list[str] = field(default_factory=list)  # non-strict only


_FAIRSEQ_PREFIX = "modality_encoders.IMAGE."
_RENAMES = {  # checkpoint name (after dropping 'model.'/'module.') -> ours
    _FAIRSEQ_PREFIX + "local_encoder.proj.weight": "local_encoder.proj.weight",
    _FAIRSEQ_PREFIX + "local_encoder.proj.bias": "local_encoder.proj.bias",
    _FAIRSEQ_PREFIX + "extra_tokens": "extra_tokens",
    _FAIRSEQ_PREFIX + "context_encoder.norm.weight": "pre_norm.weight",
    _FAIRSEQ_PREFIX + "context_encoder.norm.bias": "pre_norm.bias",
}
_POSITION_KEYS = (_FAIRSEQ_PREFIX + "fixed_positional_encoder.positions", "fixed_positional_encoder.positions")
# parts of EAT checkpoints that the inference encoder does not use
_IGNORED_PREFIXES = (_FAIRSEQ_PREFIX + "decoder.", "_ema", "shared_decoder.", "cls_proj.", "recon_proj.",
                     "fc_norm.", "head.")
_IGNORED_KEYS = ("center",)


def _list(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class _Opaque(dict):
    """Stand-in for any class a checkpoint pickles besides tensors (configs, namespaces, numpy, enums).
    Records the arguments it was given; never runs the original class's code."""

    _origin = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs, self.state, self.items_ = args, kwargs, None, []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items_.append(item)

    def extend(self, items: Any) -> None:
        self.items_.extend(items)

    def __repr__(self) -> str:
        return f"<opaque {self._origin}>"


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "Tensor"): torch.Tensor,
    ("torch", "device"): torch.device,
    ("torch.nn.parameter", "Parameter"): nn.Parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding globals; every other class or function becomes an inert stand-in."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Opaque,), {"_origin": f"{module}.{name}"})


_restricted_pickle = types.ModuleType("edge_pace_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of a checkpoint file and its other (non-tensor) entries, from the state dict's level.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``, falling back,
    for fairseq checkpoints whose metadata pickles other classes, to a restricted unpickler that
    rebuilds tensors and replaces every other object with an inert stand-in (no foreign code runs).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EAT checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    if not isinstance(obj, Mapping):
        raise EATCheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = {k: v for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    if not tensors:
        raise EATCheckpointError(f"{path}: no tensors found (top-level keys: {_list(sorted(map(str, obj)))})")
    return tensors, others


def _strip(key: str) -> str:
    for prefix in ("module.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_eat_checkpoint(model: EATViT, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a local EAT checkpoint (fairseq or Hugging Face layout, .pt or .safetensors) into ``model``.

    Maps the checkpoint's names to ours, skips known training-only parts (decoder, EMA teacher,
    fine-tuning head: listed in the report), checks stored sin-cos positions against ours, and with
    ``strict`` raises ``EATCheckpointError`` listing missing keys, unexpected keys and shape mismatches.
    """
    tensors, others = read_checkpoint(path)
    own = model.state_dict()
    layout = "fairseq" if any(_strip(k).startswith(_FAIRSEQ_PREFIX) for k in tensors) else "hf"
    report = LoadReport(layout=layout)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    positions: torch.Tensor | None = None
    for key, value in tensors.items():
        k = _strip(key)
        k = _RENAMES.get(k, k)
        if k in _POSITION_KEYS:
            positions = value
            report.ignored.append(key)
        elif k.startswith(_IGNORED_PREFIXES) or k in _IGNORED_KEYS:
            report.ignored.append(key)
        elif k in own:
            mapped[k] = value
        else:
            unexpected.append(key)
    for key in others:
        (report.ignored if _strip(key).startswith(_IGNORED_PREFIXES) else unexpected).append(key)
    missing = [k for k in own if k not in mapped]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in mapped.items() if v.shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        hint = ""
        cls = next((v for k, v in mapped.items() if k == "extra_tokens"), None)
        blocks = [_strip(k).split(".") for k in tensors if _strip(k).startswith("blocks.")]
        depth = 1 + max((int(b[1]) for b in blocks if b[1].isdigit()), default=-1)
        if cls is not None:
            hint = (f"\nThe checkpoint looks like embed_dim={cls.shape[-1]}, depth={depth}; the model is "
                    f"embed_dim={model.embed_dim}, depth={len(model.blocks)} ({model.name}).")
        parts = [f"{path}: does not fit {model.name} ({layout} layout)."]
        if missing:
            parts.append(f"missing ({len(missing)}): {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected ({len(unexpected)}): {_list(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_list(shapes, 6)}")
        raise EATCheckpointError("\n".join(parts) + hint)
    if positions is not None:
        _check_positions(model, positions, path)
    with torch.no_grad():  # state_dict() tensors share storage with the parameters
        for k, v in mapped.items():
            own[k].copy_(v.to(own[k].dtype))
    report.loaded = sorted(mapped)
    report.missing, report.unexpected = missing, unexpected
    return report


def _check_positions(model: EATViT, positions: torch.Tensor, path: str | Path) -> None:
    """The checkpoint's stored position table must be the sin-cos table the model computes."""
    table = positions.reshape(-1, positions.shape[-1]).float()
    cols = model.pos_cols.shape[0]
    if table.shape[-1] != model.embed_dim or table.shape[0] % cols:
        raise EATCheckpointError(f"{path}: positions {tuple(positions.shape)} do not fit a [rows * {cols}, "
                                 f"{model.embed_dim}] grid")
    rows = table.shape[0] // cols
    ours = model.positions(rows).float().to(table.device)
    err = (table - ours).abs().max().item()
    if not math.isfinite(err) or err > 1e-3:
        raise EATCheckpointError(f"{path}: the checkpoint's positional embeddings differ from the fixed 2-D "
                                 f"sin-cos table this model computes (max |diff| {err:.3g}); not an EAT layout")
