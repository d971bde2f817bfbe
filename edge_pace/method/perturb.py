"""Spectrogram boundary-aware perturbation (PACE section 4).

* ``spec_masks``: N_p SpecAugment-style copies of each frontend feature map [T, F]: one time mask of a
  width drawn uniformly from 0..floor(r_T * T) frames and one frequency mask of 0..floor(r_F * F) bins,
  at uniform positions, filled with 0. Vectorised; randomness from a CPU ``torch.Generator`` so a seed
  gives the same masks on any device.
* ``boundary_mask``: a sample is a boundary sample when the current model misclassifies more than a
  fraction rho_p of its copies.
* ``boundary_loss``: per sample i,
      L_i = max(0, delta + mean_u ||f(u) - mu_c||^2 - min_{b in B} ||f(x_i) - b||^2)
  mu_c = mean of the batch's clean features of class c (a constant: detached), B = clean features of
  the boundary samples (detached anchors). The candidates b for sample i exclude i itself and, with
  ``other_classes`` (default), boundary samples of i's own class. Samples without a candidate add 0;
  the loss is the mean over the batch, and 0 when B is empty.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _span_masks(n: int, length: int, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """[n, length] bool: one contiguous span per row, width uniform in 0..floor(ratio*length)."""
    max_w = int(ratio * length)
    u = torch.rand(2, n, generator=generator, dtype=torch.float64)
    width = torch.floor(u[0] * (max_w + 1)).long().clamp_(max=max_w)
    start = torch.floor(u[1] * (length - width + 1).double()).long()
    start = torch.minimum(start, length - width)
    pos = torch.arange(length)[None, :]
    return (pos >= start[:, None]) & (pos < (start + width)[:, None])


def spec_masks(feats: torch.Tensor, n_copies: int, r_time: float, r_freq: float,
               generator: torch.Generator | None = None, fill: float = 0.0) -> torch.Tensor:
    """[B, T, F] features -> [B, n_copies, T, F] masked copies (see module docstring)."""
    if feats.dim() != 3:
        raise ValueError(f"spec_masks expects [batch, frames, bins] features, got shape {tuple(feats.shape)}")
    if n_copies < 1:
        raise ValueError(f"n_copies must be >= 1, got {n_copies}")
    if not (0.0 <= r_time <= 1.0 and 0.0 <= r_freq <= 1.0):
        raise ValueError(f"mask ratios must lie in [0, 1], got r_time={r_time}, r_freq={r_freq}")
    B, T, Fq = feats.shape
    n = B * n_copies
    mt = _span_masks(n, T, r_time, generator).view(B, n_copies, T, 1)
    mf = _span_masks(n, Fq, r_freq, generator).view(B, n_copies, 1, Fq)
    mask = (mt | mf).to(feats.device)
    return feats[:, None].expand(B, n_copies, T, Fq).masked_fill(mask, fill)


def boundary_mask(copy_logits: torch.Tensor, labels: torch.Tensor, rho_p: float) -> torch.Tensor:
    """[B, N_p, K] logits of the copies and [B] labels -> [B] bool: misclassified fraction > rho_p."""
    if copy_logits.dim() != 3 or copy_logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected copy logits [B, N_p, K] and labels [B], got {tuple(copy_logits.shape)} "
                         f"and {tuple(labels.shape)}")
    wrong = (copy_logits.argmax(dim=-1) != labels[:, None]).double().mean(dim=1)
    return wrong > rho_p


def boundary_loss(f_x: torch.Tensor, f_u: torch.Tensor, labels: torch.Tensor, boundary: torch.Tensor,
                  delta: float, normalise: bool = True, other_classes: bool = True) -> torch.Tensor:
    """Hinge L_reg of PACE (see module docstring). f_x [B, D] clean features, f_u [B, N_p, D] features of
    the copies, labels [B], boundary [B] bool. Returns a scalar (0 with a graph when B is empty)."""
    if f_x.dim() != 2 or f_u.dim() != 3 or f_u.shape[0] != f_x.shape[0] or f_u.shape[2] != f_x.shape[1]:
        raise ValueError(f"expected f_x [B, D] and f_u [B, N_p, D], got {tuple(f_x.shape)} and {tuple(f_u.shape)}")
    if labels.shape != (f_x.shape[0],) or boundary.shape != (f_x.shape[0],):
        raise ValueError("labels and boundary must have one entry per sample")
    f_x, f_u = f_x.float(), f_u.float()
    if normalise:
        f_x, f_u = F.normalize(f_x, dim=-1), F.normalize(f_u, dim=-1)
    if not bool(boundary.any()):
        return f_x.sum() * 0.0
    classes, inv = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(inv, len(classes)).to(f_x.dtype)  # [B, C]
    centres = (onehot.T @ f_x.detach()) / onehot.sum(0)[:, None]  # [C, D]
    pull = (f_u - centres[inv][:, None, :]).pow(2).sum(-1).mean(1)  # [B]
    idx = torch.nonzero(boundary, as_tuple=True)[0]
    anchors = f_x.detach()[idx]  # [nb, D]
    d2 = (f_x[:, None, :] - anchors[None]).pow(2).sum(-1)  # [B, nb], exact gradient (no sqrt)
    valid = torch.arange(len(f_x), device=f_x.device)[:, None] != idx[None, :]
    if other_classes:
        valid &= labels[:, None] != labels[idx][None, :]
    push = d2.masked_fill(~valid, float("inf")).min(dim=1).values
    has = valid.any(dim=1)
    term = torch.where(has, F.relu(delta + pull - torch.where(has, push, torch.zeros_like(push))),
                       torch.zeros_like(pull))
    return term.mean()
