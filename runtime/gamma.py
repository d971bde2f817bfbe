"""Choosing the ridge regularisation gamma of the analytic classifier: closed-form leave-one-clip-out error
over a log grid, from one eigendecomposition. numpy only; the device and the training side use this one
function (the device re-chooses gamma as its stored data grows, the server in every session).

For features Z [n, D] and one-hot targets Y, the ridge fit at gamma has the hat matrix
H = Z (Z^T Z + gamma I)^-1 Z^T. With the eigendecomposition of the smaller Gram matrix,

    n <= D:  Z Z^T = U diag(lam) U^T,   H = U diag(lam / (lam + gamma)) U^T
    n >  D:  Z^T Z = V diag(lam) V^T,   H = (Z V) diag(1 / (lam + gamma)) (Z V)^T

so H = M diag(w(gamma)) M^T with M fixed and only the weights w changing along the grid. The leave-one-clip-out
residual of clip g (its rows Z_g, all held out together: overlapping windows of one clip are near copies) is
e_g = (I - H_gg)^-1 (Y_g - Yhat_g) with Yhat = H Y, exact for ridge. Every grid point then costs
O(n r c) for the fitted scores (r = min(n, D), c classes) plus the diagonal blocks H_gg (O(n r) for clips of
one window). Rows with an all-zero target (no class) take part like any other row.

Criterion (``CRITERIA``): "mse" (the default) is the mean squared leave-one-clip-out residual (PRESS);
"accuracy" the leave-one-clip-out top-1 accuracy, ties broken by the squared error; the "-1se" forms take the
largest gamma within one standard error of the best. Measured on five benchmarks (README, "Regularisation";
benchmarks/gamma_bench.py): "mse" was as good as or better than the others in average accuracy on every one;
accuracy is a step function of gamma, so on few clips whole stretches of the grid tie and the squared error,
which is smooth, decides better; the one-standard-error rule over-regularised (up to -1 point).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The grid is relative to the features' scale: gamma = c * mean ||z||^2 over the stored rows, c on this grid
# (1e-6 .. 1e2, half decades), so one grid serves any bundle. The best gammas in hindsight on the five benchmarks
# lie at c ~ 1e-3 .. 1e-1. Below 1e-6 the fit is practically ridgeless: R = (Z^T Z + gamma I)^-1 then holds
# eigenvalues 1/gamma in the directions no clip spans, which a later learn multiplies into its update.
GAMMA_GRID: tuple[float, ...] = tuple(float(10.0 ** (k / 2)) for k in range(-12, 5))
CRITERIA = ("mse", "accuracy", "mse-1se", "accuracy-1se")
DEFAULT_CRITERION = "mse"
MSE_TIE = 0.01  # "mse": the largest gamma whose error is within 1 % of the least (flat curves: prefer stability)
MIN_CLIPS = 2  # a class takes part in the selection with at least this many clips (groups)


@dataclass(frozen=True)
class GammaSearch:
    """The outcome of a gamma selection: the chosen gamma, the criterion and the curves along the grid.
    ``source`` is "loo" (chosen by leave-one-clip-out) or "prior" (too few clips: the prior was kept)."""

    gamma: float
    source: str
    criterion: str = DEFAULT_CRITERION
    grid: tuple[float, ...] = ()
    mse: tuple[float, ...] = ()
    accuracy: tuple[float, ...] = ()
    rows: int = 0
    clips: int = 0
    classes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"gamma": self.gamma, "source": self.source, "criterion": self.criterion, "rows": self.rows,
                "clips": self.clips, "classes": self.classes, "seconds": round(self.seconds, 4),
                "grid": list(self.grid), "mse": list(self.mse), "accuracy": list(self.accuracy)}


def enough_clips(y: np.ndarray, groups: np.ndarray, min_clips: int = MIN_CLIPS) -> bool:
    """At least two classes with ``min_clips`` clips each (rows with y < 0 have no class and do not count)."""
    ok = 0
    for k in np.unique(y[y >= 0]):
        ok += len(np.unique(groups[y == k])) >= min_clips
    return ok >= 2


def _blocks(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Row indices of the clips of one row, and [G, m] index arrays of the clips of m > 1 rows, per m."""
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    size = counts[inv]
    singles = np.flatnonzero(size == 1)
    multi = []
    for m in np.unique(size[size > 1]):
        rows = np.flatnonzero(size == m)
        order = rows[np.argsort(inv[rows], kind="stable")]  # the rows of each clip become contiguous
        multi.append(order.reshape(-1, int(m)))
    return singles, multi


def loo_curves(Z: np.ndarray, y: np.ndarray, n_classes: int, groups: np.ndarray | None = None,
               grid: Sequence[float] = GAMMA_GRID, with_se: bool = False):
    """Leave-one-clip-out mean squared residual and top-1 accuracy of the ridge fit at every gamma of ``grid``.
    ``y``: class index per row (-1: a row without class, target all zeros; it is left out of the accuracy).
    ``groups``: clip id per row (default: every row its own clip). Returns (mse [len(grid)], acc [len(grid)]),
    and with ``with_se`` also the standard errors of both over clips; a gamma at which some I - H_gg is
    singular (possible for tiny gamma) gets mse = inf, acc = -1."""
    Z = np.asarray(Z, dtype=np.float64)
    n, D = Z.shape
    y = np.asarray(y, dtype=np.int64)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if y.shape != (n,) or groups.shape != (n,):
        raise ValueError(f"need one label and one group per row: {n} rows, {y.shape} labels, {groups.shape} groups")
    Y = np.zeros((n, n_classes))
    has = y >= 0
    Y[np.flatnonzero(has), y[has]] = 1.0
    if n <= D:  # U is square and orthogonal: I - H = U diag(gamma / (lam + gamma)) U^T, free of cancellation
        lam, M = np.linalg.eigh(Z @ Z.T)
        lam = np.maximum(lam, 0.0)
        weight = lambda g: g / (lam + g)  # noqa: E731  (weights of I - H)
        complement = True
    else:
        lam, V = np.linalg.eigh(Z.T @ Z)
        lam = np.maximum(lam, 0.0)
        M = Z @ V
        weight = lambda g: 1.0 / (lam + g)  # noqa: E731  (weights of H)
        complement = False
    MY, M2 = M.T @ Y, M * M
    singles, multi = _blocks(groups)
    Mb = [M[idx] for idx in multi]  # [G, m, r] per clip size m
    mse, acc = np.empty(len(grid)), np.empty(len(grid))
    mse_se, acc_se = np.zeros(len(grid)), np.zeros(len(grid))
    _, clip_of = np.unique(groups, return_inverse=True)
    n_clips = int(clip_of.max()) + 1 if n else 0
    for i, g in enumerate(grid):
        w = weight(float(g))
        if complement:
            resid = M @ (w[:, None] * MY)
            one_minus_h = M2[singles] @ w
        else:
            resid = Y - M @ (w[:, None] * MY)
            one_minus_h = 1.0 - M2[singles] @ w
        e = np.empty_like(resid)
        ok = bool(np.all(one_minus_h > 1e-10))
        e[singles] = resid[singles] / np.maximum(one_minus_h, 1e-10)[:, None]
        for idx, Mg in zip(multi, Mb):
            B = (Mg * w) @ Mg.transpose(0, 2, 1)
            try:
                e[idx] = np.linalg.solve(B if complement else np.eye(idx.shape[1]) - B, resid[idx])
            except np.linalg.LinAlgError:
                ok = False
        if not ok or not np.isfinite(e).all():
            mse[i], acc[i] = np.inf, -1.0
            continue
        sq = np.sum(e * e, axis=1)
        hit = np.argmax(Y[has] - e[has], axis=1) == y[has]
        mse[i] = float(np.mean(sq))
        acc[i] = float(np.mean(hit)) if has.any() else 0.0
        if with_se and n_clips > 1:  # spread of the per-clip means (clips are the independent units)
            per_clip = np.bincount(clip_of, weights=sq, minlength=n_clips) / np.bincount(clip_of, minlength=n_clips)
            mse_se[i] = float(per_clip.std(ddof=1) / np.sqrt(n_clips))
            acc_se[i] = float(np.sqrt(max(acc[i] * (1 - acc[i]), 0.0) / max(len(np.unique(clip_of[has])), 1)))
    return (mse, acc, mse_se, acc_se) if with_se else (mse, acc)


def pick(grid: Sequence[float], mse: np.ndarray, acc: np.ndarray, criterion: str = DEFAULT_CRITERION,
         mse_se: np.ndarray | None = None, acc_se: np.ndarray | None = None) -> float:
    """The gamma of the grid that the criterion prefers: least squared error (the largest gamma within MSE_TIE of
    it), or best accuracy (ties: least squared error, then the larger gamma); the "-1se" forms take the largest gamma within one standard error of
    the best (Breiman's one-standard-error rule: the most regularised fit that the data cannot tell apart)."""
    if criterion not in CRITERIA:
        raise ValueError(f"gamma criterion must be one of {CRITERIA}, got {criterion!r}")
    grid = np.asarray(grid, dtype=np.float64)
    if criterion == "mse":  # on a flat curve the least error is a coin toss: take the most regularised near-tie
        return float(grid[mse <= np.min(mse) * (1.0 + MSE_TIE)].max())
    if criterion == "mse-1se":
        b = int(np.argmin(mse))
        return float(grid[mse <= mse[b] + (0.0 if mse_se is None else mse_se[b])].max())
    if criterion == "accuracy-1se":
        b = np.flatnonzero(acc == acc.max())
        b = int(b[np.argmin(mse[b])])
        return float(grid[acc >= acc[b] - (0.0 if acc_se is None else acc_se[b])].max())
    best = np.flatnonzero(acc == acc.max())
    return float(grid[best[np.lexsort((-grid[best], mse[best]))[0]]])


def select_gamma(Z: np.ndarray, labels: Sequence[str | None], groups: Sequence[int] | np.ndarray | None = None,
                 grid: Sequence[float] = GAMMA_GRID, criterion: str = DEFAULT_CRITERION,
                 prior: float | None = None, min_clips: int = MIN_CLIPS) -> GammaSearch:
    """Choose gamma by closed-form leave-one-clip-out error over ``grid`` (module docstring). ``grid`` is relative:
    the gammas tried are c * mean ||z||^2 for c in ``grid`` (the returned search lists the absolute values).

    ``labels``: one per row (None: a row without class, e.g. background). ``groups``: clip id per row.
    With fewer than two classes of ``min_clips`` clips the selection cannot be made: ``prior`` is returned
    (source "prior"), or ValueError is raised when no prior is given."""
    t0 = time.perf_counter()
    if criterion not in CRITERIA:
        raise ValueError(f"gamma criterion must be one of {CRITERIA}, got {criterion!r}")
    grid = tuple(float(g) for g in grid)
    if not grid or not all(np.isfinite(g) and g > 0 for g in grid):
        raise ValueError(f"the gamma grid must be positive finite numbers, got {grid}")
    Z = np.asarray(Z)
    if Z.ndim != 2 or len(Z) != len(labels):
        raise ValueError(f"features [n, D] and one label per row needed, got {Z.shape} and {len(labels)} labels")
    classes = sorted({str(c) for c in labels if c is not None})
    y = np.array([-1 if c is None else classes.index(str(c)) for c in labels], dtype=np.int64)
    g = np.arange(len(Z)) if groups is None else np.asarray(groups)
    n_clips = len(np.unique(g))
    if not enough_clips(y, g, min_clips):
        if prior is None:
            raise ValueError(f"gamma selection needs at least two classes with {min_clips} clips each; "
                             f"got {len(classes)} classes and {n_clips} clips")
        return GammaSearch(float(prior), "prior", criterion, rows=len(Z), clips=n_clips, classes=len(classes),
                           seconds=time.perf_counter() - t0)
    scale = float(np.mean(np.einsum("ij,ij->i", Z, Z, dtype=np.float64)))
    if not (np.isfinite(scale) and scale > 0):
        if prior is None:
            raise ValueError("gamma selection needs features that are not all zero")
        return GammaSearch(float(prior), "prior", criterion, rows=len(Z), clips=n_clips, classes=len(classes),
                           seconds=time.perf_counter() - t0)
    grid = tuple(c * scale for c in grid)
    mse, acc, mse_se, acc_se = loo_curves(Z, y, len(classes), g, grid, with_se=True)
    if not np.isfinite(mse).any():
        if prior is None:
            raise ValueError("leave-one-clip-out failed at every gamma of the grid")
        return GammaSearch(float(prior), "prior", criterion, rows=len(Z), clips=n_clips, classes=len(classes),
                           seconds=time.perf_counter() - t0)
    gamma = pick(grid, mse, acc, criterion, mse_se, acc_se)
    return GammaSearch(gamma, "loo", criterion, grid, tuple(map(float, mse)), tuple(map(float, acc)), len(Z),
                       n_clips, len(classes), time.perf_counter() - t0)


@dataclass
class AutoGamma:
    """When the device re-chooses gamma: after a change of the class set (classes learned or forgotten) or once
    the stored clips have grown by ``growth`` (default 25 %) since the last choice, or shrunk. Re-choosing
    costs an eigendecomposition (see README for the measured cost), so this geometric rule keeps its cost per
    learned clip bounded, and frequent where it is cheap (few clips). ``pinned``: a fixed gamma (never
    re-chosen); ``prior``: gamma while there are too few clips for leave-one-clip-out."""

    prior: float
    pinned: float | None = None
    growth: float = 0.25
    criterion: str = DEFAULT_CRITERION
    grid: tuple[float, ...] = GAMMA_GRID
    classes: tuple[str, ...] = ()  # class set at the last choice
    clips: int = 0  # stored clips at the last choice

    def __post_init__(self) -> None:
        if not (np.isfinite(self.prior) and self.prior > 0):
            raise ValueError(f"the gamma prior must be a positive finite number, got {self.prior}")
        if self.pinned is not None and not (np.isfinite(self.pinned) and self.pinned > 0):
            raise ValueError(f"a pinned gamma must be a positive finite number, got {self.pinned}")
        if not self.growth >= 0:
            raise ValueError(f"gamma growth must be >= 0, got {self.growth}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"gamma criterion must be one of {CRITERIA}, got {self.criterion!r}")

    def due(self, classes: Sequence[str], clips: int) -> bool:
        if self.pinned is not None:
            return False
        return (tuple(sorted(classes)) != self.classes or clips > self.clips * (1.0 + self.growth)
                or clips < self.clips)

    def chosen(self, classes: Sequence[str], clips: int) -> None:
        self.classes, self.clips = tuple(sorted(classes)), int(clips)

    def update(self, clf, force: bool = False) -> GammaSearch | None:
        """Re-choose the gamma of an ``AnalyticClassifier`` when due (or ``force``); a pinned gamma is applied
        instead. Needs the classifier's stored features; returns the search, or None when nothing was done."""
        if self.pinned is not None:
            clf.set_gamma(self.pinned)
            return None
        if set(clf.features) != set(clf.classes):
            return None  # learned without stored features: gamma cannot be re-chosen
        clips = clf.n_clips()
        if not (force or self.due(clf.classes, clips)):
            return None
        found = clf.choose_gamma(self.prior, self.grid, self.criterion)
        self.chosen(clf.classes, clips)
        return found

    def metadata(self) -> dict[str, str]:
        """String metadata for a saved state (read back by ``from_metadata``)."""
        import json

        return {"gamma_mode": "pinned" if self.pinned is not None else "auto", "gamma_prior": repr(self.prior),
                "gamma_criterion": self.criterion, "gamma_growth": repr(self.growth),
                "gamma_classes": json.dumps(list(self.classes)), "gamma_clips": str(self.clips)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], prior: float, gamma: float) -> "AutoGamma":
        """The rule saved with a state; states saved before automatic gamma (no ``gamma_mode``) get the
        documented default: automatic, with ``prior`` (the bundle's gamma), re-chosen at their next change."""
        import json

        if "gamma_mode" not in meta:
            return cls(prior=prior)
        return cls(prior=float(meta["gamma_prior"]), pinned=gamma if meta["gamma_mode"] == "pinned" else None,
                   growth=float(meta.get("gamma_growth", 0.25)),
                   criterion=meta.get("gamma_criterion", DEFAULT_CRITERION),
                   classes=tuple(json.loads(meta.get("gamma_classes", "[]"))), clips=int(meta.get("gamma_clips", 0)))


__all__ = ["AutoGamma", "GAMMA_GRID", "CRITERIA", "DEFAULT_CRITERION", "MIN_CLIPS", "GammaSearch", "select_gamma", "loo_curves",
           "pick", "enough_clips"]
