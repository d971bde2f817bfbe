"""Pretrained audio backbones. Each is an ``nn.Module`` mapping a mono waveform [B, S] at its
``sample_rate`` to an embedding [B, embed_dim], with its frontend inside (``.frontend``), its layers
exposed as ``.blocks`` (for LoRA and the CKA probe), ``layer_features(wave)`` and ``min_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    description: str
    licence: str
    sample_rate: int
    embed_dim: int
    parameters: str
    weights: str  # how pretrained weights are obtained


BACKBONES: dict[str, BackboneInfo] = {
    "aisfx": BackboneInfo("aisfx", "sound-effects CNN (Ma & Lerch, ISMIR 2022), the shipped default",
                          "CC BY 4.0, (c) 2022 A.B. Ma and A. Lerch", 44100, 512, "4.69 M",
                          "PyPI wheel aisfx==0.1.2 -> `edge-pace backbones fetch`"),
    "eat-base": BackboneInfo("eat-base", "EAT-style ViT-B (12 blocks, 768-d) over 128-bin Kaldi fbank",
                             "weights: those of the checkpoint you supply (EAT: MIT)", 16000, 768, "85.3 M",
                             "local EAT checkpoint: --weights PATH"),
    "eat-tiny": BackboneInfo("eat-tiny", "EAT-style ViT, tiny configuration for tests and CPU demos",
                             "random init (no weights)", 16000, 64, "0.22 M", "none"),
}


def get_backbone(name: str, pretrained: bool = True, weights: str | None = None):
    """Build a backbone by name; ``pretrained`` loads its weights (raises with the fetch command if absent)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    builders: dict[str, Callable] = {"aisfx": _aisfx, "eat-base": _eat, "eat-tiny": _eat}
    return builders[name](name, pretrained, weights)


def _aisfx(name: str, pretrained: bool, weights: str | None):
    from safetensors.torch import load_file

    from edge_pace.backbones.aisfx_cnn import AisfxCNN
    from edge_pace.backbones.weights import require_aisfx

    model = AisfxCNN()
    if pretrained or weights:
        model.load_state_dict(load_file(weights or str(require_aisfx())), strict=True)
    return model.eval()


def _eat(name: str, pretrained: bool, weights: str | None):
    from edge_pace.backbones import eat_vit

    model = eat_vit.EATViT(eat_vit.CONFIGS[name.split("-", 1)[1]])
    if weights:
        eat_vit.load_eat_checkpoint(model, weights)
    elif pretrained and name == "eat-base":
        raise FileNotFoundError("eat-base has no weights that can be fetched here; pass a local EAT checkpoint "
                                "with --weights PATH, or use pretrained=False")
    return model.eval()


def weights_present(name: str) -> bool:
    if name == "aisfx":
        from edge_pace.backbones.weights import aisfx_path

        return aisfx_path().is_file()
    return name == "eat-tiny"
