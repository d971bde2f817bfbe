"""LoRA for nn.Conv2d and nn.Linear, several adapters per layer (one per session, older ones frozen).

Weight of a wrapped layer: W = W0 + sum_s scale_s * B_s A_s, with for a convolution
``A_s`` [r, in, kh, kw] (a conv in -> r with the base kernel, stride, padding and dilation) followed by
``B_s`` [out, r] (a 1x1 conv r -> out), so the merged kernel is dW[o,i,kh,kw] = scale * sum_r B[o,r] A[r,i,kh,kw];
for a linear layer ``A_s`` [r, in] and ``B_s`` [out, r]. A starts Kaiming-uniform (as LoRA), B at zero, so a
new adapter does not change the model.

"Unlearned" model (LoRA subtraction, as in LoRA-DRS): W0 - sum of the older adapters. ``unlearned(model)``
runs the whole model that way (every wrapped layer), which is how MSA collects layer inputs.

Batch norm stays in eval mode (frozen running statistics) during adaptation: sessions bring small,
class-skewed batches, and with no stored old data, re-estimated statistics would drift towards the new
classes and shift every old class's features, which no adapter could undo.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

_KEY = re.compile(r"^(?P<layer>.+)\.s(?P<session>\d+)\.(?P<part>A|B|alpha)$")


class LoRAAdapter(nn.Module):
    """One session's low-rank update of one layer: dW = (alpha / rank) * B A."""

    def __init__(self, base: nn.Conv2d | nn.Linear, rank: int, alpha: float, session: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.session, self.rank, self.alpha = int(session), int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        w = base.weight
        in_shape = tuple(w.shape[1:])  # conv: (in, kh, kw); linear: (in,)
        self.A = nn.Parameter(torch.empty(rank, *in_shape, dtype=w.dtype, device=w.device))
        self.B = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device))
        with torch.no_grad():  # LoRA's init: A like nn.Linear's weight (kaiming a=sqrt(5)) on the [r, fan_in] view
            a = torch.empty(rank, int(math.prod(in_shape)), dtype=torch.float32)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            self.A.copy_(a.view_as(self.A))
        self.is_conv = isinstance(base, nn.Conv2d)
        if self.is_conv:
            self.stride, self.padding, self.dilation = base.stride, base.padding, base.dilation

    @property
    def in_dim(self) -> int:
        """Length of one input row seen by A: in*kh*kw (conv, im2col patch) or in (linear)."""
        return int(math.prod(self.A.shape[1:]))

    def delta_weight(self) -> torch.Tensor:
        """scale * B A, shaped like the base weight."""
        d = self.B @ self.A.reshape(self.rank, -1)
        return (d * self.scale).reshape(self.B.shape[0], *self.A.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_conv:
            h = F.conv2d(x, self.A, None, self.stride, self.padding, self.dilation)
            return F.conv2d(h, self.B[:, :, None, None]) * self.scale
        return F.linear(F.linear(x, self.A), self.B) * self.scale


class LoRALayer(nn.Module):
    """A frozen base layer plus session adapters. ``mode`` is "full" (W0 + sum) or "unlearned"
    (W0 - sum of adapters with session < ``unlearn_before``)."""

    def __init__(self, base: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        if isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise ValueError(f"LoRA supports Conv2d with groups=1 only, got groups={base.groups}")
            if base.padding_mode != "zeros":
                raise ValueError(f"LoRA supports Conv2d with padding_mode='zeros' only, got {base.padding_mode!r}")
            if isinstance(base.padding, str):
                raise ValueError(f"LoRA needs numeric Conv2d padding, got padding={base.padding!r}")
        elif not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Conv2d or nn.Linear, got {type(base).__name__}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.adapters = nn.ModuleDict()
        self.mode = "full"
        self.unlearn_before: int | None = None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.base, nn.Conv2d)

    @property
    def weight(self) -> torch.Tensor:  # lets code that reads ``layer.weight`` keep working
        return self.base.weight

    def sessions(self) -> list[int]:
        return [a.session for a in self.adapters.values()]

    def add_adapter(self, rank: int, alpha: float, session: int,
                    generator: torch.Generator | None = None) -> LoRAAdapter:
        """Add session ``session``'s adapter (trainable); every older adapter is frozen."""
        key = f"s{int(session)}"
        if key in self.adapters:
            raise ValueError(f"this layer already has an adapter for session {session}")
        if self.adapters and session < max(self.sessions()):
            raise ValueError(f"session {session} is older than this layer's newest adapter ({max(self.sessions())})")
        for a in self.adapters.values():
            a.requires_grad_(False)
        self.adapters[key] = LoRAAdapter(self.base, rank, alpha, session, generator)
        return self.adapters[key]

    def _older(self, before_session: int | None) -> list[LoRAAdapter]:
        return [a for a in self.adapters.values() if before_session is None or a.session < before_session]

    def merged_weight(self) -> torch.Tensor:
        w = self.base.weight
        for a in self.adapters.values():
            w = w + a.delta_weight()
        return w

    def unlearned_weight(self, before_session: int | None = None) -> torch.Tensor:
        w = self.base.weight
        for a in self._older(before_session):
            w = w - a.delta_weight()
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.mode == "unlearned":
            for a in self._older(self.unlearn_before):
                y = y - a(x)
        else:
            for a in self.adapters.values():
                y = y + a(x)
        return y

    def to_plain(self) -> nn.Conv2d | nn.Linear:
        """A plain layer of the same kind with weight W0 + sum of all adapters."""
        plain = copy.deepcopy(self.base)
        with torch.no_grad():
            plain.weight.copy_(self.merged_weight())
        for p in plain.parameters():
            p.requires_grad_(False)
        return plain


# ---- model-level helpers -------------------------------------------------------------------------

def _blocks(model: nn.Module) -> Sequence[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(model).__name__} has no `.blocks`; LoRA targets layers inside a backbone's blocks")
    return list(blocks)


def _block_prefixes(model: nn.Module) -> list[str]:
    """Qualified module name of each block (e.g. 'conv_block1' or 'blocks.0')."""
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for i, b in enumerate(_blocks(model)):
        if id(b) not in names:
            raise TypeError(f"block {i} of {type(model).__name__} is not a registered submodule")
        out.append(names[id(b)])
    return out


def target_layers(model: nn.Module, layer_indices: Sequence[int],
                  targets: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """Qualified name -> layer (nn.Conv2d / nn.Linear / LoRALayer) of the targets inside the given blocks
    (0-based indices into ``model.blocks``). A target matches the last component of a module's name; no
    ``targets``: the backbone's own (``model.lora_targets``)."""
    targets = tuple(targets) if targets else tuple(getattr(model, "lora_targets", ()))
    blocks, prefixes = _blocks(model), _block_prefixes(model)
    found: dict[str, nn.Module] = {}
    for i in layer_indices:
        if not 0 <= int(i) < len(blocks):
            raise IndexError(f"block index {i} out of range: the model has {len(blocks)} blocks (0-based)")
        for name, m in blocks[i].named_modules():
            if "adapters" in name.split(".") or name.endswith(".base"):
                continue
            if name.split(".")[-1] in targets and isinstance(m, (nn.Conv2d, nn.Linear, LoRALayer)):
                found[f"{prefixes[i]}.{name}"] = m
    if not found:
        raise ValueError(f"no LoRA target {list(targets)} found in blocks {list(layer_indices)} of "
                         f"{type(model).__name__}")
    return found


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def add_lora(model: nn.Module, layer_indices: Sequence[int], rank: int, alpha: float, session: int,
             targets: Sequence[str] | None = None,
             generator: torch.Generator | None = None) -> dict[str, LoRAAdapter]:
    """Give every target layer of the given blocks (0-based) a new adapter for ``session``.

    Wraps plain layers in ``LoRALayer`` on first use; older adapters are frozen. Returns
    qualified layer name -> the new (trainable) adapter, in model order.
    """
    new: dict[str, LoRAAdapter] = {}
    for name, layer in target_layers(model, layer_indices, targets).items():
        if not isinstance(layer, LoRALayer):
            layer = LoRALayer(layer)
            _set_submodule(model, name, layer)
        new[name] = layer.add_adapter(rank, alpha, session, generator)
    return new


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALayer)}


def lora_parameters(model: nn.Module, session: int | None = None) -> list[nn.Parameter]:
    """A and B of every adapter (of one session when given), in model order."""
    return [p for layer in lora_layers(model).values() for a in layer.adapters.values()
            if session is None or a.session == session for p in (a.A, a.B)]


def drop_lora(model: nn.Module) -> list[str]:
    """Remove every adapter: each LoRALayer is replaced by its (untouched) base layer, so the model computes
    exactly what it did before ``add_lora``. Returns the names of the layers unwrapped."""
    names = list(lora_layers(model))
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).base)
    return names


def freeze_backbone(model: nn.Module) -> None:
    """requires_grad=False everywhere and eval mode (batch norm running stats frozen, no dropout)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every LoRALayer is a plain layer with W0 + sum of its adapters
    (same forward up to float rounding; nothing of LoRA left). The input model is not changed."""
    merged = copy.deepcopy(model)
    for name, layer in list(lora_layers(merged).items()):
        _set_submodule(merged, name, layer.to_plain())
    return merged.eval()


def unlearned_weight(layer: LoRALayer, before_session: int | None = None) -> torch.Tensor:
    """W0 - sum of the adapters older than ``before_session`` (all adapters when None)."""
    if not isinstance(layer, LoRALayer):
        raise TypeError(f"expected a LoRALayer, got {type(layer).__name__}")
    return layer.unlearned_weight(before_session)


@contextmanager
def unlearned(model: nn.Module, before_session: int | None = None) -> Iterator[nn.Module]:
    """Run ``model`` as W0 - sum of older adapters in every wrapped layer (LoRA subtraction)."""
    layers = list(lora_layers(model).values())
    saved = [(layer.mode, layer.unlearn_before) for layer in layers]
    try:
        for layer in layers:
            layer.mode, layer.unlearn_before = "unlearned", before_session
        yield model
    finally:
        for layer, (mode, before) in zip(layers, saved):
            layer.mode, layer.unlearn_before = mode, before


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Session-tagged adapter tensors: '<layer>.s<session>.A', '.B', and '.alpha' (shape [1])."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        for a in layer.adapters.values():
            key = f"{name}.s{a.session}"
            out[f"{key}.A"] = a.A.detach().cpu().contiguous().clone()
            out[f"{key}.B"] = a.B.detach().cpu().contiguous().clone()
            out[f"{key}.alpha"] = torch.tensor([a.alpha], dtype=torch.float32)
    return out


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor], trainable: bool = False) -> list[int]:
    """Recreate the adapters of ``lora_state_dict`` in a model without them (wrapping layers as needed).
    Returns the sessions found. Adapters are frozen unless ``trainable``."""
    groups: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if not m:
            raise ValueError(f"not a LoRA tensor name: {key!r} (expected '<layer>.s<session>.A|B|alpha')")
        groups.setdefault((m["layer"], int(m["session"])), {})[m["part"]] = value
    for (name, session), parts in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if set(parts) != {"A", "B", "alpha"}:
            raise ValueError(f"LoRA state for {name} session {session} is incomplete: has {sorted(parts)}")
        try:
            layer = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"LoRA state names layer {name!r}, which this model does not have") from exc
        if not isinstance(layer, LoRALayer):
            layer = LoRALayer(layer)
            _set_submodule(model, name, layer)
        A, B = parts["A"], parts["B"]
        if tuple(A.shape[1:]) != tuple(layer.base.weight.shape[1:]) or B.shape != (layer.base.weight.shape[0], A.shape[0]):
            raise ValueError(f"LoRA state for {name} session {session} has shapes A{tuple(A.shape)} B{tuple(B.shape)}, "
                             f"which do not fit the layer's weight {tuple(layer.base.weight.shape)}")
        adapter = layer.add_adapter(int(A.shape[0]), float(parts["alpha"].reshape(-1)[0]), session)
        with torch.no_grad():
            adapter.A.copy_(A)
            adapter.B.copy_(B)
        adapter.requires_grad_(trainable)
    return sorted({s for _, s in groups})


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state without LoRA: adapters dropped, wrapped layers under their original names
    (what the model's own ``load_state_dict`` expects)."""
    prefixes = [n + "." for n in lora_layers(model)]
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        p = next((p for p in prefixes if key.startswith(p)), None)
        if p is None:
            out[key] = value.detach().cpu().contiguous()
        elif key.startswith(p + "base."):
            out[p + key[len(p) + len("base."):]] = value.detach().cpu().contiguous()
    return out
