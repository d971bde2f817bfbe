"""Linear CKA: identity, invariances, unrelated features, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_pace.method.cka import layerwise_cka, linear_cka


def _x(n: int = 200, p: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, p))


def test_identical_is_one() -> None:
    x = _x()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(torch.tensor(x, dtype=torch.float32), x) == pytest.approx(1.0, abs=1e-6)


def test_orthogonal_and_scale_invariance() -> None:
    x, y = _x(seed=1), _x(p=8, seed=2) + 0.5 * _x(seed=1)[:, :8]
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((12, 12)))
    base = linear_cka(x, y)
    assert 0.05 < base < 0.95
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, abs=1e-10)  # centred inside
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)


def test_not_invariant_to_anisotropic_scaling() -> None:
    x = _x(seed=4)
    d = np.diag(np.linspace(0.1, 10, 12))
    assert linear_cka(x, x @ d) < 0.9


def test_unrelated_is_low() -> None:
    x, y = _x(n=2000, seed=5), _x(n=2000, seed=6)
    assert linear_cka(x, y) < 0.02
    assert linear_cka(x, x[:, :6]) > 0.5 > linear_cka(x, y)


def test_gram_and_feature_paths_agree() -> None:
    x, y = _x(n=10, p=40, seed=7), _x(n=10, p=30, seed=8)  # n < p: Gram path
    xx, yy = x - x.mean(0), y - y.mean(0)
    expect = np.linalg.norm(yy.T @ xx) ** 2 / (np.linalg.norm(xx.T @ xx) * np.linalg.norm(yy.T @ yy))
    assert linear_cka(x, y) == pytest.approx(expect, rel=1e-10)


def test_errors_and_layerwise() -> None:
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(_x(n=5), _x(n=6))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(np.ones((5, 3)), _x(n=5))
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(np.ones(5), np.ones(5))
    a = [torch.randn(30, 4), torch.randn(30, 6)]
    assert layerwise_cka(a, a) == pytest.approx([1.0, 1.0])
