"""Linear centred kernel alignment (Kornblith et al., 2019), used by the FSA probe to find L_tune.

With column-centred features X [n, p] and Y [n, q] (same n examples, any widths):

    CKA(X, Y) = HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T)) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

(the 1/(n-1)^2 factors of HSIC cancel). 1 for identical features, invariant to orthogonal transforms
and isotropic scaling of either side, near 0 for unrelated features (for n >> p, q).
"""

from __future__ import annotations

import numpy as np
import torch


def _as_double(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [examples, features] array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA between two feature matrices of the same examples ([n, p] and [n, q])."""
    X, Y = _as_double(x, "x"), _as_double(y, "y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"x and y must describe the same examples: {X.shape[0]} vs {Y.shape[0]} rows")
    if X.shape[0] < 2:
        raise ValueError("CKA needs at least 2 examples")
    X = X - X.mean(dim=0, keepdim=True)
    Y = Y - Y.mean(dim=0, keepdim=True)
    # work with the smaller Gram side: ||Y^T X||_F^2 = <XX^T, YY^T> when n is small
    if X.shape[0] < max(X.shape[1], Y.shape[1]):
        Kx, Ky = X @ X.T, Y @ Y.T
        hsic_xy, hsic_xx, hsic_yy = (Kx * Ky).sum(), (Kx * Kx).sum(), (Ky * Ky).sum()
    else:
        hsic_xy = (Y.T @ X).pow(2).sum()
        hsic_xx = (X.T @ X).pow(2).sum()
        hsic_yy = (Y.T @ Y).pow(2).sum()
    denom = torch.sqrt(hsic_xx * hsic_yy)
    if denom <= 0:
        raise ValueError("CKA is undefined for constant features (zero variance on one side)")
    return float(hsic_xy / denom)


def layerwise_cka(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    """CKA of each pair of layers (e.g. probe vs pretrained ``layer_features``)."""
    if len(a) != len(b):
        raise ValueError(f"got {len(a)} and {len(b)} layers")
    return [linear_cka(x, y) for x, y in zip(a, b)]
