"""The aisfx sound-effects CNN (Ma & Lerch, ISMIR 2022): 4 conv blocks (64-128-256-512 channels,
two 3x3 conv + BN + ReLU each, 2x2 max-pool after the first three), mean over frequency, max over time
-> 512-d embedding. Our own definition; parameter names match the checkpoint's ``embedding_net.*``.
Weights: CC BY 4.0, (c) 2022 A.B. Ma and A. Lerch.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_pace.backbones.frontends import AisfxLogMel, check_waveform


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pool = pool
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return nn.functional.max_pool2d(x, self.pool) if self.pool > 1 else x


class AisfxCNN(nn.Module):
    """Waveform [B, S] at 44.1 kHz -> embedding [B, 512]. ``blocks`` are the layers LoRA/CKA address."""

    name = "aisfx"
    sample_rate = 44100
    embed_dim = 512
    lora_targets = ("conv1", "conv2")  # the two 3x3 convolutions of a block

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.frontend = AisfxLogMel(self.sample_rate)
        w = [1, width, 2 * width, 4 * width, 8 * width]
        self.conv_block1 = ConvBlock(w[0], w[1], 2)
        self.conv_block2 = ConvBlock(w[1], w[2], 2)
        self.conv_block3 = ConvBlock(w[2], w[3], 2)
        self.conv_block4 = ConvBlock(w[3], w[4], 1)
        self.embed_dim = w[4]
        # three 2x time poolings need >= 8 frames: 1 + S // hop >= 8
        self.min_samples = 7 * self.frontend.hop

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4]

    def embed_features(self, feats: torch.Tensor, return_layers: bool = False):
        """[B, T, F] frontend features -> [B, D] (and pooled per-block features when asked)."""
        x = feats.unsqueeze(1)
        layers = []
        for block in self.blocks:
            x = block(x)
            if return_layers:
                layers.append(x.mean(dim=3).amax(dim=2))
        out = x.mean(dim=3).amax(dim=2)
        return (out, layers) if return_layers else out

    def stem(self, feats: torch.Tensor, start: int) -> torch.Tensor:
        """[B, T, F] frontend features -> the input of block ``start`` (0-based): blocks 0..start-1 applied."""
        x = feats.unsqueeze(1)
        for block in self.blocks[:start]:
            x = block(x)
        return x

    def embed_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The input of block ``start`` (``stem``) -> [B, D]: blocks start.. and the pooling.
        ``embed_from(stem(f, k), k) == embed_features(f)`` for every k."""
        for block in self.blocks[start:]:
            x = block(x)
        return x.mean(dim=3).amax(dim=2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.frontend(wave))

    def layer_features(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """Pooled output of each block ([B, C_l]), for the CKA probe."""
        return self.embed_features(self.frontend(wave), return_layers=True)[1]

    def check_input(self, wave: torch.Tensor) -> torch.Tensor:
        return check_waveform(wave, self.min_samples, self.name)

    def architecture(self) -> dict[str, int]:
        """Constructor arguments (JSON-ready) that rebuild this architecture."""
        return {"width": int(self.conv_block1.bn1.num_features)}

    @classmethod
    def from_architecture(cls, arch: dict[str, int]) -> "AisfxCNN":
        return cls(**arch)
