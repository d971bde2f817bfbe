"""EAT-style ViT backbone (Efficient Audio Transformer, Chen et al. 2024; data2vec 2.0 lineage).

Our own implementation of the EAT encoder as its public code computes it at inference:

* input: 16 kHz mono waveform -> ``KaldiFbank`` (128 bins, 25/10 ms, EAT normalisation) -> [B, T, 128];
* patch embedding: Conv2d(1, D, 16x16, stride 16) over the [T, 128] image; the frame axis is cropped
  down to a multiple of 16 (what a stride-16 convolution does anyway), so any length >= 16 frames works;
  tokens are ordered time-major (row t, frequency column f -> token t * 8 + f);
* fixed 2-D sin-cos positions added to the patch tokens (not to the CLS token), computed for the actual
  grid inside the graph: token (t, f) gets [sin(f w), cos(f w), sin(t w), cos(t w)] with
  w_k = 10000^(-k / (D/4)), identical to EAT's ``get_2d_sincos_pos_embed_flexible`` rows;
* one learned CLS token (EAT's ``extra_tokens``) prepended, then a LayerNorm (EAT's
  ``context_encoder.norm``, here ``pre_norm``), then ``depth`` data2vec ``AltBlock``s in post-norm
  form: x = x + attn(x); r = norm1(x); x = norm2(r + mlp(r)); no final norm; LayerNorm eps 1e-6;
  qkv with bias; exact GELU.

Pooling: ``"cls"`` (default) takes the CLS token of the last block, as EAT's utterance-level features
(``feature_extract.py --granularity utterance``) and its fine-tuning (``prediction_mode=CLS_TOKEN``) do.
``"mean"`` averages the patch tokens instead. ``layer_features`` pools every block's output the same way.

Checkpoints (fairseq and Hugging Face layouts): ``eat_checkpoint.load_eat_checkpoint``. EAT code and weights:
MIT licence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_pace.backbones.frontends import KaldiFbank, check_waveform


@dataclass(frozen=True)
class EATConfig:
    """Shape of an EAT-style ViT. ``max_patch_rows`` bounds the input length (768 rows of 16 frames
    = 122.9 s, EAT's ``max_length``); positions are computed on the fly, the bound is for ``check_input``."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    patch: int = 16
    n_mels: int = 128
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    pool: str = "cls"
    max_patch_rows: int = 768

    def __post_init__(self) -> None:
        if self.embed_dim % 4:
            raise ValueError(f"EATConfig: embed_dim must be divisible by 4 (2-D sin-cos positions), got {self.embed_dim}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"EATConfig: embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.n_mels % self.patch:
            raise ValueError(f"EATConfig: n_mels {self.n_mels} not divisible by patch {self.patch}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"EATConfig: pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.depth < 1 or self.max_patch_rows < 1:
            raise ValueError("EATConfig: depth and max_patch_rows must be >= 1")


CONFIGS: dict[str, EATConfig] = {
    "base": EATConfig("base", embed_dim=768, depth=12, num_heads=12),  # EAT-base, ~86 M parameters
    "large": EATConfig("large", embed_dim=1024, depth=24, num_heads=16),  # EAT-large
    "tiny": EATConfig("tiny", embed_dim=64, depth=4, num_heads=4),  # tests / CPU demos, ~0.22 M
}


class PatchEmbed(nn.Module):
    """Conv2d patchifier; ``proj`` keeps EAT's parameter name (``local_encoder.proj``)."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # [B, T, F] -> [B, D, T // p, F // p]
        return self.proj(feats.unsqueeze(1))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (nn.Linear, LoRA-wrappable)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale 1/sqrt(head_dim), as EAT
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """data2vec ``AltBlock`` with ``layer_norm_first=False`` (post-norm), as EAT is configured."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.norm1(x + self.attn(x))
        return self.norm2(r + self.mlp(r))


def sincos_positions_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[M] float positions -> [M, dim] = [sin(p w), cos(p w)], w_k = 10000^(-k / (dim/2)) (MAE/EAT)."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    out = pos.to(torch.float32)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


class EATViT(nn.Module):
    """Waveform [B, S] at 16 kHz -> embedding [B, embed_dim] (see module docstring).

    ``blocks`` are the transformer layers LoRA/CKA address (``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
    ``mlp.fc2`` are ``nn.Linear``).
    """

    sample_rate = 16000
    lora_targets = ("qkv", "proj", "fc1", "fc2")  # the nn.Linear layers of a block

    def __init__(self, config: EATConfig | None = None) -> None:
        super().__init__()
        cfg = CONFIGS["base"] if config is None else config
        self.config = cfg
        self.name = f"eat-{cfg.name}"
        self.embed_dim = cfg.embed_dim
        self.frontend = KaldiFbank(self.sample_rate, n_mels=cfg.n_mels)
        self.local_encoder = PatchEmbed(cfg.embed_dim, cfg.patch)
        self.extra_tokens = nn.Parameter(torch.randn(1, 1, cfg.embed_dim) * 0.02)  # the CLS token
        self.pre_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.qkv_bias) for _ in range(cfg.depth)
        )
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # column (frequency) half of the positions is fixed; the row half is computed for each length
        col = sincos_positions_1d(torch.arange(cfg.n_mels // cfg.patch), cfg.embed_dim // 2)
        self.register_buffer("pos_cols", col, persistent=False)
        # at least one row of patches; at most max_patch_rows rows
        self.min_samples = self.frontend.win + (cfg.patch - 1) * self.frontend.hop
        self.max_samples = self.frontend.win + (cfg.max_patch_rows * cfg.patch + cfg.patch - 1) * self.frontend.hop - 1

    # ---- features -------------------------------------------------------------------------------
    def positions(self, rows: int) -> torch.Tensor:
        """[rows * n_cols, D] positional embeddings for ``rows`` patch rows (traceable in ``rows``)."""
        cols, half = self.pos_cols.shape
        row = sincos_positions_1d(torch.arange(rows, device=self.pos_cols.device), half)
        grid = torch.cat([self.pos_cols[None].expand(rows, cols, half), row[:, None].expand(rows, cols, half)], -1)
        return grid.reshape(rows * cols, 2 * half)

    def _check_feats(self, feats: torch.Tensor) -> None:
        if torch.compiler.is_compiling():
            return
        cfg = self.config
        if feats.dim() != 3 or feats.shape[-1] != cfg.n_mels:
            raise ValueError(f"{self.name}: expected fbank features [batch, frames, {cfg.n_mels}], got {tuple(feats.shape)}")
        if feats.shape[1] < cfg.patch:
            raise ValueError(f"{self.name}: {feats.shape[1]} frames is too short, need at least {cfg.patch} "
                             f"(one patch row; {self.min_samples} samples at {self.sample_rate} Hz)")

    def tokens(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, T, n_mels] -> the tokens entering the first block [B, 1 + (T // p) * (n_mels // p), D] (CLS first).
        Frames beyond the last full patch row are dropped."""
        self._check_feats(feats)
        x = self.local_encoder(feats)  # [B, D, rows, cols]
        rows = x.shape[2]
        x = x.flatten(2).transpose(1, 2)  # time-major tokens
        x = x + self.positions(rows).to(x.dtype)
        x = torch.cat([self.extra_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return self.pre_norm(x)

    def encode(self, feats: torch.Tensor, return_layers: bool = False):
        """[B, T, n_mels] -> all tokens after the last block (CLS first), and each block's tokens when asked."""
        x = self.tokens(feats)
        layers = []
        for block in self.blocks:
            x = block(x)
            if return_layers:
                layers.append(x)
        return (x, layers) if return_layers else x

    def stem(self, feats: torch.Tensor, start: int) -> torch.Tensor:
        """[B, T, n_mels] -> the tokens entering block ``start`` (0-based)."""
        x = self.tokens(feats)
        for block in self.blocks[:start]:
            x = block(x)
        return x

    def embed_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The tokens entering block ``start`` (``stem``) -> [B, D]: blocks start.. and the pooling."""
        for block in self.blocks[start:]:
            x = block(x)
        return self.pool(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 1 + N, D] -> [B, D]: the CLS token (``pool='cls'``) or the mean of the patch tokens."""
        return tokens[:, 0] if self.config.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def embed_features(self, feats: torch.Tensor, return_layers: bool = False):
        """[B, T, n_mels] frontend features -> [B, D] (and pooled per-block features when asked)."""
        if return_layers:
            x, layers = self.encode(feats, return_layers=True)
            return self.pool(x), [self.pool(t) for t in layers]
        return self.pool(self.encode(feats))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():  # shape-only checks; check_input does the full validation
            if wave.dim() != 2:
                raise ValueError(f"{self.name}: expected a mono waveform of shape [batch, samples], got "
                                 f"{tuple(wave.shape)} (check_input adds the batch axis to a 1-D waveform)")
            if wave.shape[-1] < self.min_samples:
                raise ValueError(f"{self.name}: audio too short: {wave.shape[-1]} samples, need at least "
                                 f"{self.min_samples} (one row of {self.config.patch} frames)")
        return self.embed_features(self.frontend(wave))

    def layer_features(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """Pooled output of each block ([B, D] each, ``depth`` of them), for the CKA probe."""
        return self.embed_features(self.frontend(wave), return_layers=True)[1]

    def check_input(self, wave: torch.Tensor) -> torch.Tensor:
        """Validate a waveform ([S] or [B, S], float, finite, min_samples..max_samples); returns [B, S]."""
        wave = check_waveform(wave, self.min_samples, self.name)
        if wave.shape[-1] > self.max_samples:
            raise ValueError(f"{self.name}: audio too long: {wave.shape[-1]} samples, at most {self.max_samples} "
                             f"({self.config.max_patch_rows} patch rows); split it into windows")
        return wave

    def architecture(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready) that rebuild this architecture."""
        return {"config": asdict(self.config)}

    @classmethod
    def from_architecture(cls, arch: dict[str, Any]) -> "EATViT":
        return cls(EATConfig(**arch["config"]))
