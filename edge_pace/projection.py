"""The fixed random projection + ReLU of the analytic classifier: z = ReLU(f(x) W_proj).

W_proj is drawn from a seeded numpy generator (standard normal, as RanPAC), so the same (seed, in_dim,
out_dim) gives the same matrix on any machine. Export puts this module inside the ONNX graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def projection_matrix(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((in_dim, out_dim)).astype(np.float32)


class RandomProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, seed: int = 0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self.register_buffer("weight", torch.from_numpy(projection_matrix(in_dim, out_dim, seed)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.relu(f @ self.weight)
