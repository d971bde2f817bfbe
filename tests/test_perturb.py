"""Spectrogram masks, boundary set, hinge loss in hand-made configurations."""

from __future__ import annotations

import pytest
import torch

from edge_pace.method.perturb import boundary_loss, boundary_mask, spec_masks


def test_masks_shape_spans_and_ratios() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(3, 40, 20) + 1.0  # strictly positive, so zeros mark masked cells
    out = spec_masks(feats, 5, 0.25, 0.1, g)
    assert out.shape == (3, 5, 40, 20)
    for b in range(3):
        for u in range(5):
            zero = out[b, u] == 0
            rows = zero.all(dim=1)  # fully masked frames (time mask)
            cols = zero.all(dim=0)  # fully masked bins (frequency mask)
            assert rows.sum() <= 10 and cols.sum() <= 2  # widths <= floor(r * length)
            for m in (rows, cols):
                idx = torch.nonzero(m).flatten()
                if len(idx):
                    assert idx[-1] - idx[0] + 1 == len(idx)  # one contiguous span
            # every zero cell lies in a masked row or column; the rest is untouched
            assert torch.equal(zero, rows[:, None] | cols[None, :])
            assert torch.equal(out[b, u][~zero], feats[b][~zero])
    # deterministic for a seed, and the copies differ from each other
    again = spec_masks(feats, 5, 0.25, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    big = spec_masks(feats, 64, 0.5, 0.5, torch.Generator().manual_seed(1))
    widths = (big == 0).all(dim=3).sum(dim=2).flatten()
    assert widths.min() == 0 and widths.max() == 20  # the full range 0..floor(0.5 * 40) is drawn


def test_masks_ratio_zero_is_identity_and_errors() -> None:
    feats = torch.rand(2, 8, 6) + 1
    assert torch.equal(spec_masks(feats, 3, 0.0, 0.0), feats[:, None].expand(2, 3, 8, 6))
    with pytest.raises(ValueError, match="frames, bins"):
        spec_masks(torch.rand(8, 6), 2, 0.1, 0.1)
    with pytest.raises(ValueError, match="ratios"):
        spec_masks(feats, 2, 1.5, 0.1)


def test_boundary_set_hand_case() -> None:
    # 3 samples, 4 copies, 2 classes; logits argmax per copy chosen by hand
    def logits(preds: list[int]) -> list[list[float]]:
        return [[1.0, 0.0] if p == 0 else [0.0, 1.0] for p in preds]

    copy_logits = torch.tensor([logits([1, 1, 1, 0]),   # label 0, 3/4 wrong -> boundary
                                logits([0, 0, 1, 1]),   # label 1, 2/4 wrong = 0.5, not > 0.5
                                logits([1, 1, 1, 1])])  # label 1, 0/4 wrong
    labels = torch.tensor([0, 1, 1])
    assert boundary_mask(copy_logits, labels, 0.5).tolist() == [True, False, False]
    assert boundary_mask(copy_logits, labels, 0.4).tolist() == [True, True, False]
    assert boundary_mask(copy_logits, labels, 0.75).tolist() == [False, False, False]


def _unit(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def test_loss_zero_when_no_boundary_samples() -> None:
    f_x = torch.randn(4, 3, requires_grad=True)
    f_u = torch.randn(4, 2, 3)
    loss = boundary_loss(f_x, f_u, torch.tensor([0, 0, 1, 1]), torch.zeros(4, dtype=torch.bool), 1.0)
    assert loss.item() == 0.0
    loss.backward()  # keeps a graph
    assert torch.equal(f_x.grad, torch.zeros_like(f_x))


def test_loss_zero_and_positive_hand_cases() -> None:
    e1, e2 = _unit(1, 0, 0), _unit(0, 1, 0)
    labels = torch.tensor([0, 0, 1])
    f_x = torch.stack([e1, e1, e2])
    boundary = torch.tensor([False, False, True])  # the class-1 sample is a boundary sample
    # views exactly at the class centre, boundary sample of the other class at squared distance 2:
    f_u = f_x[:, None].repeat(1, 2, 1)
    assert boundary_loss(f_x, f_u, labels, boundary, delta=0.5).item() == pytest.approx(0.0)
    # margin larger than the distance: samples 0 and 1 contribute delta - 2 = 0.5 each; sample 2 has no
    # candidate (only itself): L = (0.5 + 0.5 + 0) / 3
    assert boundary_loss(f_x, f_u, labels, boundary, delta=2.5).item() == pytest.approx(1.0 / 3)
    # spread views: sample 0's views at e2 and -e2 (before normalisation they are unit already):
    # mean ||u - e1||^2 = 2 -> term = 0.5 + 2 - 2 = 0.5; sample 1 as before (0)
    f_u2 = f_u.clone()
    f_u2[0, 0], f_u2[0, 1] = e2, -e2
    assert boundary_loss(f_x, f_u2, labels, boundary, delta=0.5).item() == pytest.approx(0.5 / 3)


def test_push_candidates_exclude_self_and_same_class() -> None:
    e1, e2 = _unit(1, 0), _unit(0, 1)
    f_x = torch.stack([e1, e1, e2])
    f_u = f_x[:, None].repeat(1, 1, 1)
    labels = torch.tensor([0, 0, 1])
    boundary = torch.tensor([True, False, False])  # sample 0 (class 0) is the boundary sample
    # other_classes: samples 0 and 1 have no candidate; sample 2: push = ||e2 - e1||^2 = 2
    assert boundary_loss(f_x, f_u, labels, boundary, 2.5).item() == pytest.approx(0.5 / 3)
    # any class: sample 1 (same class, distance 0) now pushes: 2.5 - 0 ; sample 2: 0.5; sample 0: none
    assert boundary_loss(f_x, f_u, labels, boundary, 2.5, other_classes=False).item() == pytest.approx(3.0 / 3)


def test_loss_gradient_pulls_views_and_pushes_sample() -> None:
    labels = torch.tensor([0, 1])
    f_x = torch.tensor([[1.0, 0.2], [0.0, 1.0]], requires_grad=True)
    f_u = torch.tensor([[[0.8, 0.6]], [[0.0, 1.0]]], requires_grad=True)
    loss = boundary_loss(f_x, f_u, labels, torch.tensor([False, True]), delta=4.0, normalise=False)
    loss.backward()
    # pull: sample 0's view moves towards its centre (1, 0.2); push: sample 0 moves away from (0, 1)
    centre, view = torch.tensor([1.0, 0.2]), f_u[0, 0].detach()
    assert torch.dot(-f_u.grad[0, 0], centre - view) > 0
    assert torch.dot(-f_x.grad[0], f_x[0].detach() - torch.tensor([0.0, 1.0])) > 0
