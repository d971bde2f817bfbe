"""Numerical drift of the recursive analytic classifier: many single-example updates vs the exact joint ridge.

    .venv/bin/python benchmarks/drift.py                       # D = 256, 10^5 updates, float64 features
    .venv/bin/python benchmarks/drift.py --dim 2048 --updates 100000
    .venv/bin/python benchmarks/drift.py --dtype float32       # float32 features (as the ONNX embedder gives)
    .venv/bin/python benchmarks/drift.py --easy                # full-rank, moderately conditioned features

Features: z = ReLU(x W_p) of class-conditional Gaussians x in 64 dimensions with a common offset and a
decaying spectrum, projected to D (a low-rank, far-from-centred, ill-conditioned Gram matrix like real
embeddings: condition number of sum Z^T Z + gamma I about 10^10 at D = 256), generated block by block
from a seed (nothing of size n x D is stored). Every example is learned alone (``AnalyticClassifier.learn``
with one row: the rank-1 recursive update, pending factors folded every 64 rows). At checkpoints the exact
joint solution W* = (G + gamma I)^-1 B, R* = (G + gamma I)^-1 is computed from the same features
(G = sum Z^T Z and B = sum Z^T Y accumulated exactly in float64; Cholesky solve), and the script prints
max|W - W*| / max|W*| and max|R - R*| / max|R*|, plus the classifier's own cheap probe ``drift()`` where
features are kept (--keep-features). Figures measured here: see out/reliability.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge_pace.runtime.analytic import AnalyticClassifier


def feature_blocks(dim: int, classes: int, n: int, block: int, dtype: str, seed: int, hard: bool = True):
    """Yield (Z [b, dim], y [b]) blocks of ReLU random features: ``hard`` = low-rank, offset, decaying spectrum
    (ill-conditioned, like real embeddings); else full-rank class clusters (moderately conditioned)."""
    rng = np.random.default_rng(seed)
    if not hard:
        centres = rng.standard_normal((classes, dim))
        done = 0
        while done < n:
            b = min(block, n - done)
            y = rng.integers(0, classes, b)
            yield np.maximum(centres[y] + rng.standard_normal((b, dim)), 0.0).astype(dtype), y
            done += b
        return
    d_in = 64  # low intrinsic dimension, like a backbone embedding seen through a wide random projection
    scales = 1.0 / np.arange(1, d_in + 1) ** 1.5  # decaying spectrum
    offset = np.abs(rng.standard_normal(d_in))  # a common mean: ReLU features are far from centred
    centres = rng.standard_normal((classes, d_in)) * scales
    proj = rng.standard_normal((d_in, dim)) * 3.0
    done = 0
    while done < n:
        b = min(block, n - done)
        y = rng.integers(0, classes, b)
        x = offset + centres[y] + rng.standard_normal((b, d_in)) * scales
        yield np.maximum(x @ proj, 0.0).astype(dtype), y
        done += b


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def run(dim: int = 256, updates: int = 100_000, classes: int = 10, gamma: float = 1.0, dtype: str = "float64",
        seed: int = 0, checkpoints: tuple[int, ...] | None = None, keep_features: bool = False,
        hard: bool = True, log=print) -> list[dict]:
    """Learn ``updates`` single examples; return one dict of errors per checkpoint."""
    checkpoints = tuple(sorted(set(checkpoints or [c for c in (1000, 10_000, 100_000, 1_000_000) if c < updates]
                                   + [updates])))
    clf = AnalyticClassifier(dim, gamma, keep_features=keep_features)
    Zh, _ = next(feature_blocks(dim, classes, 1000, 1000, dtype, seed + 1, hard))  # held-out features for the scores
    Zh = Zh.astype(np.float64)
    labels = [f"c{k}" for k in range(classes)]
    G = np.zeros((dim, dim))
    B = np.zeros((dim, classes))
    seen, out, t0, t_learn = 0, [], time.perf_counter(), 0.0
    for Z, y in feature_blocks(dim, classes, updates, 1000, dtype, seed, hard):
        t = time.perf_counter()
        for i in range(len(Z)):
            clf.learn(Z[i : i + 1], labels[y[i]])
        t_learn += time.perf_counter() - t
        Z64 = Z.astype(np.float64)
        G += Z64.T @ Z64
        np.add.at(B.T, y, Z64)  # B[:, y_i] += z_i
        seen += len(Z)
        if seen in checkpoints:
            A = G + gamma * np.eye(dim)
            L = np.linalg.cholesky(A)
            Rx = np.linalg.solve(L.T, np.linalg.solve(L, np.eye(dim)))
            order = [int(c[1:]) for c in clf.classes]  # classes in first-seen order
            Wx = Rx @ B[:, order]
            V = np.random.default_rng(seed + 2).standard_normal((dim, 4))
            normA = np.linalg.norm(A)

            def backward(Rm: np.ndarray) -> float:  # ||A R v - v|| / (||A||_F ||R v||): ~eps for a stable inverse
                X = Rm @ V
                return float(np.max(np.linalg.norm(A @ X - V, axis=0) / (normA * np.linalg.norm(X, axis=0))))

            row = {"updates": seen, "dim": dim, "dtype": dtype, "rel_W": rel(clf.W, Wx), "rel_R": rel(clf.R, Rx),
                   "rel_scores": rel(Zh @ clf.W, Zh @ Wx), "backward_R": backward(clf.R),
                   "backward_R_joint": backward(Rx), "cond": float(np.linalg.cond(A)),
                   "us_per_update": 1e6 * t_learn / seen, "drift_probe": clf.drift() if keep_features else None}
            out.append(row)
            log(f"D={dim} {dtype} after {seen:>7d} single-example updates: rel err vs joint ridge: W {row['rel_W']:.1e}, "
                f"R {row['rel_R']:.1e}, held-out scores {row['rel_scores']:.1e}; backward error of R "
                f"{row['backward_R']:.1e} (joint's own {row['backward_R_joint']:.1e}); cond {row['cond']:.1e}; "
                f"{row['us_per_update']:.0f} us/update; {time.perf_counter() - t0:.0f} s"
                + (f"; drift() {row['drift_probe']:.1e}" if keep_features else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-features", action="store_true", help="store features and report the drift() probe")
    ap.add_argument("--easy", action="store_true", help="full-rank, moderately conditioned features")
    a = ap.parse_args()
    run(a.dim, a.updates, a.classes, a.gamma, a.dtype, a.seed, keep_features=a.keep_features, hard=not a.easy)


if __name__ == "__main__":
    main()
