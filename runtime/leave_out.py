"""Closed-form leave-one-clip-out scores of the analytic classifier (runtime/analytic.py): the score each stored
window would get from the ridge solution learned without its whole clip. Used by the unknown rule's calibration
(runtime/openset.py). numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def loo_scores(R: np.ndarray, W: np.ndarray, classes: Sequence[str], features: dict[str, list[np.ndarray]],
               P: np.ndarray | None = None, groups: dict[str, list[np.ndarray]] | None = None,
               chunk: int = 1024) -> dict[str, np.ndarray]:
    """Closed-form leave-one-clip-out own-class score of every stored example of a state (R, W, classes,
    features; R = R - P^T P when pending factors P are given): the score the row would get from the ridge
    solution learned without its whole group (clip). For a group g with rows Z_g, H_gg = Z_g R Z_g^T,
    s_g = Z_g W[:, c] and own-class targets 1:  s_loo = (I - H_gg)^-1 (s_g - H_gg 1); a group of one row gives
    the classic (s - h) / (1 - h). Without ``groups`` (or for a class without them) every row is its own group.
    A function of the arrays alone, so the device runtime calibrates from an immutable snapshot while another
    thread learns. Cost O(n D^2), memory O(chunk D)."""
    out = {}
    usep = P is not None and len(P) > 0
    for k, c in enumerate(classes):
        if c not in features:
            continue
        Z = np.vstack(features[c])
        n = len(Z)
        g = np.concatenate(groups[c]) if groups and c in groups else np.arange(n)
        if len(g) != n:
            raise ValueError(f"class {c!r}: {len(g)} group ids for {n} stored feature rows")
        order = np.argsort(g, kind="stable")  # rows of a group become contiguous
        gs = g[order]
        bounds = np.flatnonzero(np.diff(gs)) + 1
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [n]])
        res = np.empty(n)
        i = 0
        while i < len(starts):  # chunks of whole groups, about ``chunk`` rows each
            j = i + 1
            while j < len(starts) and ends[j] - starts[i] <= chunk:
                j += 1
            rows = order[starts[i] : ends[j - 1]]
            Zc = Z[rows].astype(np.float64)
            U = Zc @ R  # one BLAS matmul (einsum over three operands does not use BLAS)
            ZP = Zc @ P.T if usep else None
            s = Zc @ W[:, k]
            h = np.sum(U * Zc, axis=1) - (np.sum(ZP**2, axis=1) if usep else 0.0)
            loo = (s - h) / np.maximum(1.0 - h, 1e-12)
            off = starts[i]
            for a, b in zip(starts[i:j] - off, ends[i:j] - off):
                if b - a > 1:  # a clip of several rows: hold them out together
                    H = U[a:b] @ Zc[a:b].T - (ZP[a:b] @ ZP[a:b].T if usep else 0.0)
                    H = 0.5 * (H + H.T)
                    loo[a:b] = np.linalg.solve(np.eye(b - a) - H, s[a:b] - H.sum(axis=1))
            res[rows] = loo
            i = j
        out[c] = res
    return out
