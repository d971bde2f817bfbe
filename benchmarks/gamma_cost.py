"""What re-choosing gamma costs on the device: one core, D = 2048 (the default bundle), 100 / 1,000 / 5,000
stored windows, measured side by side in one run.

Prints, per size: the leave-one-clip-out search (eigendecomposition of the smaller Gram matrix + the whole
grid), the exact refactorisation at the new gamma (``set_gamma``), and for comparison a single-example learn
that does not trigger a re-choice (the common case) and predict on one window's features.

    .venv/bin/python benchmarks/gamma_cost.py [--dim 2048] [--sizes 100,1000,5000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, as on a small device (before numpy loads BLAS)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from edge_pace.runtime.analytic import AnalyticClassifier  # noqa: E402
from edge_pace.runtime.gamma import select_gamma  # noqa: E402


def features(n: int, dim: int, classes: int, rng) -> tuple[np.ndarray, list[str]]:
    centres = rng.standard_normal((classes, 512))
    y = rng.integers(0, classes, n)
    emb = np.maximum(centres[y] + 0.7 * rng.standard_normal((n, 512)), 0)  # ReLU-pooled-like embeddings
    W = rng.standard_normal((512, dim)) / np.sqrt(512)
    return np.maximum(emb @ W, 0).astype(np.float32), [f"c{v}" for v in y]


def timed(fn, repeats: int = 1) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--classes", type=int, default=20)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"D = {args.dim}, one core (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})")
    print(f"{'windows':>8} {'search s':>9} {'refit s':>8} {'re-choice s':>11} {'learn ms':>9} {'predict ms':>10}")
    for n in (int(v) for v in args.sizes.split(",")):
        Z, labels = features(n + 1, args.dim, args.classes, rng)
        clf = AnalyticClassifier(args.dim, 1.0).learn(Z[:n], labels[:n])
        found = {}
        t_search = timed(lambda: found.setdefault("g", select_gamma(*clf.stored()[:3])))
        g = found["g"].gamma
        t_refit = timed(lambda: clf.set_gamma(g * 1.5))  # a different gamma: a real refactorisation
        learns = []
        for i in range(5):
            t = time.perf_counter()
            clf.learn(Z[n:n + 1], labels[n])
            learns.append(time.perf_counter() - t)
        t_pred = timed(lambda: clf.scores(Z[:1]), repeats=20)
        print(f"{n:>8} {t_search:>9.2f} {t_refit:>8.2f} {t_search + t_refit:>11.2f} {np.median(learns) * 1e3:>9.1f} "
              f"{t_pred * 1e3:>10.2f}", flush=True)
    print("re-choice = search + refit; it runs after a change of the class set or 25 % more stored clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
