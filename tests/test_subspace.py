"""Input subspaces and gradient projection for MSA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_pace.backbones.aisfx_cnn import AisfxCNN
from edge_pace.method.lora import LoRALayer, add_lora, lora_layers, unlearned
from edge_pace.method.subspace import (GradientProjector, InputStats, basis_from_covariance, basis_from_rows,
                                collect_inputs, energy_rank, input_rows, project_rows)


def test_energy_rank_hand_cases() -> None:
    lam = torch.tensor([1.0, 50.0, 40.0, 9.0])  # sorted: 50, 40, 9, 1 -> cumulative .5 .9 .99 1
    assert energy_rank(lam, 0.5) == 1
    assert energy_rank(lam, 0.9) == 2
    assert energy_rank(lam, 0.91) == 3
    assert energy_rank(lam, 0.99) == 3
    assert energy_rank(lam, 1.0) == 4
    assert energy_rank(torch.tensor([1.0, 0.0, 1e-20]), 1.0) == 1  # numerically zero directions never count
    assert energy_rank(torch.zeros(3), 0.9) == 0
    with pytest.raises(ValueError, match="rho"):
        energy_rank(lam, 0.0)


def test_conv_rows_are_im2col_patches() -> None:
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    layer = LoRALayer(conv)
    x = torch.randn(1, 2, 4, 5, generator=g)
    rows = input_rows(layer, x)
    assert rows.shape == (20, 18)
    xp = nn.functional.pad(x, (1, 1, 1, 1))
    for i, (h, w) in enumerate([(h, w) for h in range(4) for w in range(5)]):
        patch = xp[0, :, h:h + 3, w:w + 3].reshape(-1)  # (in, kh, kw) order = the flattened kernel's
        assert torch.equal(rows[i], patch)
    # conv output = rows @ W_flat^T: the rows are what the kernel multiplies
    y = conv(x)[0].permute(1, 2, 0).reshape(-1, 3)
    torch.testing.assert_close(rows @ conv.weight.reshape(3, -1).T, y, atol=1e-5, rtol=0)


def test_gram_and_covariance_paths_agree() -> None:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(30, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 60, generator=g, dtype=torch.float64)
    P1, lam1 = basis_from_rows(X, 0.95)
    P2, lam2 = basis_from_covariance(X.T @ X, 0.95)
    assert P1.shape == P2.shape and P1.shape[1] <= 8
    torch.testing.assert_close(P1 @ P1.T, P2 @ P2.T, atol=1e-8, rtol=0)  # same subspace
    torch.testing.assert_close(P1.T @ P1, torch.eye(P1.shape[1], dtype=torch.float64), atol=1e-10, rtol=0)
    # hybrid store: switches to the covariance once rows exceed the dimension, same result
    st = InputStats(60)
    for chunk in X.split(7):
        st.add(chunk)
    assert st.cov is None and st.n == 30
    st.add(X)
    st.add(X)
    assert st.cov is not None and st.n == 90
    P3, _ = st.basis(0.95)
    torch.testing.assert_close(P3 @ P3.T, P2 @ P2.T, atol=1e-6, rtol=0)  # float32 products


def test_projection_modes() -> None:
    g = torch.Generator().manual_seed(2)
    P, _ = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64))
    M = torch.randn(4, 10, generator=g, dtype=torch.float64)
    inside, outside = project_rows(M, P, "principal"), project_rows(M, P, "orthogonal")
    torch.testing.assert_close(inside + outside, M)
    torch.testing.assert_close(inside @ (torch.eye(10, dtype=torch.float64) - P @ P.T), torch.zeros(4, 10, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(outside @ P, torch.zeros(4, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="mode"):
        project_rows(M, P, "sideways")


@pytest.mark.parametrize("mode", ["principal", "orthogonal"])
def test_projected_update_lies_in_subspace(mode: str) -> None:
    """Train a new session's LoRA with projected gradients: every row of dW = B A stays in span(P)
    ("principal") or orthogonal to it ("orthogonal"); the older adapter is untouched."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = AisfxCNN(width=4).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    old = add_lora(model, [2, 3], 2, 4.0, 0, generator=g)
    with torch.no_grad():
        for a in old.values():
            a.B.copy_(torch.randn(a.B.shape, generator=g) * 0.05)
    old_state = {n: (a.A.clone(), a.B.clone()) for n, a in old.items()}
    feats = torch.rand(6, 16, 96, generator=g)
    layers = lora_layers(model)
    with torch.no_grad(), unlearned(model), collect_inputs(layers) as stats:
        model.embed_features(feats)
    bases = {n: s.basis(0.9)[0] for n, s in stats.items()}
    assert all(0 < P.shape[1] < P.shape[0] for P in bases.values())  # a proper subspace
    new = add_lora(model, [2, 3], 2, 4.0, 1, generator=g)
    proj = GradientProjector(new, bases, mode)
    head = nn.Linear(model.embed_dim, 3)
    opt = torch.optim.SGD([p for a in new.values() for p in (a.A, a.B)], lr=0.5, momentum=0.9)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(5):
        loss = nn.functional.cross_entropy(head(model.embed_features(feats)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    proj.remove()
    for name, a in new.items():
        P = bases[name].float()
        dW = (a.B @ a.A.reshape(a.rank, -1)).detach()
        assert dW.abs().max() > 1e-4  # it did learn
        inside = dW @ P @ P.T
        off = (dW - inside) if mode == "principal" else inside
        assert off.abs().max() <= 1e-5 * dW.abs().max()
    for name, a in old.items():
        assert torch.equal(a.A, old_state[name][0]) and torch.equal(a.B, old_state[name][1])
    # hooks removed: a raw gradient is no longer projected
    a = next(iter(new.values()))
    a.A.grad = None
    a.A.requires_grad_(True)
    (a.A * torch.randn(a.A.shape, generator=g)).sum().backward()
    P = bases[next(iter(new))].float()
    g_rows = a.A.grad.reshape(a.rank, -1)
    assert (g_rows - g_rows @ P @ P.T).abs().max() > 1e-3


def test_subspace_is_computed_under_the_unlearned_model() -> None:
    """Inputs of block 4 differ between the adapted and the unlearned model once block 3 has an adapter."""
    g = torch.Generator().manual_seed(4)
    model = AisfxCNN(width=4).eval()
    old = add_lora(model, [2, 3], 2, 4.0, 0, generator=g)
    with torch.no_grad():
        for a in old.values():
            a.B.copy_(torch.randn(a.B.shape, generator=g))
    feats = torch.rand(3, 16, 96, generator=g)
    layers = {"conv_block4.conv1": lora_layers(model)["conv_block4.conv1"]}
    with torch.no_grad():
        with collect_inputs(layers) as full:
            model.embed_features(feats)
        with unlearned(model), collect_inputs(layers) as sub:
            model.embed_features(feats)
    c_full, c_sub = full["conv_block4.conv1"].covariance(), sub["conv_block4.conv1"].covariance()
    assert not np.allclose(c_full.numpy(), c_sub.numpy())


def test_projector_errors() -> None:
    layer = LoRALayer(nn.Linear(6, 4))
    a = layer.add_adapter(2, 2.0, 0)
    with pytest.raises(ValueError, match="no subspace basis"):
        GradientProjector({"x": a}, {})
    with pytest.raises(ValueError, match="dimension"):
        GradientProjector({"x": a}, {"x": torch.eye(5)[:, :2]})


pytestmark = pytest.mark.usefixtures("one_torch_thread")
