"""The regularized analytic classifier (RAC) of PACE: ridge regression on one-hot targets, kept in
recursive form (ACIL / RanPAC lineage). numpy only, float64 state. This is THE implementation of the
classifier math: the training side and the device both use it.

    R_t = R_{t-1} - R_{t-1} Z_t^T (I + Z_t R_{t-1} Z_t^T)^{-1} Z_t R_{t-1}
    W_t = W_{t-1} + R_t Z_t^T (Y_t - Z_t W_{t-1})      (new classes first append zero columns to W)

starting from R = I / gamma, W = 0. For any split of the data into batches this equals the joint
ridge solution (sum Z^T Z + gamma I)^{-1} sum Z^T Y ("weight invariance").

Features of every class are kept by default (``keep_features``) so that ``forget`` is exact and the
state can be refactorised from scratch (``refit``). Cost: 4 bytes x D per example (float32 input).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GAMMA_GRID = tuple(10.0**k for k in range(-8, 9))


def _as_features(Z: np.ndarray, dim: int) -> np.ndarray:
    Z = np.asarray(Z)
    if Z.ndim == 1:
        Z = Z[None, :]
    if Z.ndim != 2 or Z.shape[1] != dim:
        raise ValueError(f"features must have shape [n, {dim}], got {tuple(Z.shape)}")
    if not np.issubdtype(Z.dtype, np.floating):
        raise TypeError(f"features must be floating point, got dtype {Z.dtype}")
    if not np.all(np.isfinite(Z)):
        raise ValueError("features contain NaN or Inf: check the audio and the embedder; nothing was learned")
    return Z


class AnalyticClassifier:
    """Recursive ridge classifier over fixed features z (already random-projected + ReLU)."""

    def __init__(self, dim: int, gamma: float = 1.0, keep_features: bool = True) -> None:
        if int(dim) <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a positive finite number, got {gamma}")
        self.dim = int(dim)
        self.gamma = float(gamma)
        self.keep_features = bool(keep_features)
        self.R = np.eye(self.dim, dtype=np.float64) / self.gamma
        self.W = np.zeros((self.dim, 0), dtype=np.float64)
        self.classes: list[str] = []
        self.counts: list[int] = []
        self.features: dict[str, list[np.ndarray]] = {}
        self.n_updates = 0

    # ------------------------------------------------------------------ learning
    def _ensure_classes(self, labels: Sequence[str]) -> None:
        new = [c for c in dict.fromkeys(labels) if c not in self.classes]
        if new:
            self.W = np.hstack([self.W, np.zeros((self.dim, len(new)))])
            self.classes.extend(new)
            self.counts.extend([0] * len(new))

    def learn(self, Z: np.ndarray, labels: Sequence[str] | str, chunk: int = 1024) -> "AnalyticClassifier":
        """Recursive update with a batch of any size; unseen labels become new classes."""
        Z = _as_features(Z, self.dim)
        labels = [labels] * len(Z) if isinstance(labels, str) else [str(x) for x in labels]
        if len(labels) != len(Z):
            raise ValueError(f"got {len(Z)} feature rows but {len(labels)} labels")
        if len(Z) == 0:
            return self
        self.check()
        # compute into new arrays and swap at the end: an error never leaves a half-updated state
        R, W = self.R.copy(), self.W
        classes = list(self.classes)
        new = [c for c in dict.fromkeys(labels) if c not in classes]
        classes += new
        W = np.hstack([W, np.zeros((self.dim, len(new)))])
        idx = np.array([classes.index(c) for c in labels])
        Z64 = Z.astype(np.float64)
        for s in range(0, len(Z64), chunk):
            Zc = Z64[s : s + chunk]
            Y = np.zeros((len(Zc), len(classes)))
            Y[np.arange(len(Zc)), idx[s : s + chunk]] = 1.0
            U = Zc @ R  # [n, D] = Z R (R symmetric)
            K = np.eye(len(Zc)) + U @ Zc.T
            R = R - U.T @ np.linalg.solve(K, U)
            R = 0.5 * (R + R.T)
            W = W + R @ (Zc.T @ (Y - Zc @ W))
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(W))):
            raise FloatingPointError("the update produced non-finite values; state left unchanged (try a larger gamma)")
        self.R, self.W, self.classes = R, W, classes
        self.counts += [0] * len(new)
        for c in labels:
            self.counts[classes.index(c)] += 1
        if self.keep_features:
            for c in dict.fromkeys(labels):
                rows = Z[[i for i, x in enumerate(labels) if x == c]]
                self.features.setdefault(c, []).append(rows.astype(np.float32 if Z.dtype == np.float32 else np.float64))
        self.n_updates += 1
        return self

    fit = learn

    def forget(self, label: str) -> "AnalyticClassifier":
        """Remove a class exactly: the result equals never having learned it (up to float64 rounding)."""
        if label not in self.classes:
            raise KeyError(f"unknown class {label!r}; known: {self.classes}")
        if label not in self.features:
            raise ValueError(f"class {label!r} was learned without stored features, so it cannot be forgotten exactly "
                             "(learn with keep_features=True)")
        self.check()
        c = self.classes.index(label)
        Zc = np.vstack(self.features[label]).astype(np.float64)
        # R_new = (R^-1 - Zc^T Zc)^-1 = R + R Zc^T (I - Zc R Zc^T)^-1 Zc R
        U = Zc @ self.R
        K = np.eye(len(Zc)) - U @ Zc.T
        R = self.R + U.T @ np.linalg.solve(K, U)
        R = 0.5 * (R + R.T)
        keep = [i for i in range(len(self.classes)) if i != c]
        Wo = self.W[:, keep]
        # columns of the other classes: W_new = R_new C = W + R_new Zc^T Zc W (their targets on Zc are 0)
        W = Wo + R @ (Zc.T @ (Zc @ Wo))
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(W))):
            raise FloatingPointError("forget produced non-finite values; state left unchanged")
        self.R, self.W = R, W
        del self.classes[c], self.counts[c], self.features[label]
        self.n_updates += 1
        return self

    def refit(self) -> "AnalyticClassifier":
        """Refactorise R and W from the stored features (removes any accumulated rounding drift)."""
        if set(self.features) != set(self.classes):
            raise ValueError("refit needs the stored features of every class")
        if not self.classes:
            self.R = np.eye(self.dim) / self.gamma
            return self
        Z = np.vstack([np.vstack(self.features[c]) for c in self.classes]).astype(np.float64)
        y = np.concatenate([np.full(sum(len(f) for f in self.features[c]), i) for i, c in enumerate(self.classes)])
        Y = np.zeros((len(Z), len(self.classes)))
        Y[np.arange(len(Z)), y] = 1.0
        A = Z.T @ Z + self.gamma * np.eye(self.dim)
        R = np.linalg.inv(A)
        self.R = 0.5 * (R + R.T)
        self.W = self.R @ (Z.T @ Y)
        return self

    # ------------------------------------------------------------------ inference
    def scores(self, Z: np.ndarray) -> np.ndarray:
        """Ridge outputs z W, shape [n, n_classes] (about 1 for the true class, 0 for others)."""
        Z = _as_features(Z, self.dim)
        return Z.astype(np.float64) @ self.W

    decision_function = scores

    def predict(self, Z: np.ndarray) -> list[str]:
        if not self.classes:
            raise RuntimeError("the classifier has learned no class yet")
        return [self.classes[i] for i in np.argmax(self.scores(Z), axis=1)]

    def loo_scores(self) -> dict[str, np.ndarray]:
        """Leave-one-out ridge score of each stored example for its own class, in closed form:
        s_loo = (s - h y) / (1 - h), h = z R z^T. Used to calibrate the 'unknown' rule."""
        out = {}
        for c in self.classes:
            if c not in self.features:
                continue
            Z = np.vstack(self.features[c]).astype(np.float64)
            s = Z @ self.W[:, self.classes.index(c)]
            h = np.einsum("nd,de,ne->n", Z, self.R, Z)
            out[c] = (s - h) / np.maximum(1.0 - h, 1e-12)
        return out

    # ------------------------------------------------------------------ checks and state
    def check(self) -> None:
        """Raise a clear error if the state is not usable (non-finite or wrong shapes)."""
        if self.R.shape != (self.dim, self.dim) or self.W.shape != (self.dim, len(self.classes)):
            raise ValueError(f"classifier state has inconsistent shapes R{self.R.shape} W{self.W.shape} "
                             f"for dim {self.dim} and {len(self.classes)} classes; reload a saved state")
        if not (np.all(np.isfinite(self.R)) and np.all(np.isfinite(self.W))):
            raise FloatingPointError("classifier state contains NaN/Inf; reload the last saved state or call refit()")

    def nbytes(self) -> int:
        return self.R.nbytes + self.W.nbytes + sum(f.nbytes for fs in self.features.values() for f in fs)


def joint_ridge(Z: np.ndarray, y: Sequence[int], n_classes: int, gamma: float) -> np.ndarray:
    """The joint (non-recursive) ridge solution (Z^T Z + gamma I)^{-1} Z^T Y, for tests and checks."""
    Z = np.asarray(Z, dtype=np.float64)
    Y = np.zeros((len(Z), n_classes))
    Y[np.arange(len(Z)), np.asarray(y)] = 1.0
    return np.linalg.solve(Z.T @ Z + gamma * np.eye(Z.shape[1]), Z.T @ Y)


def select_gamma(Z: np.ndarray, labels: Sequence[str], grid: Sequence[float] = GAMMA_GRID,
                 val_fraction: float = 0.2, seed: int = 0) -> tuple[float, dict[float, float]]:
    """RanPAC-style gamma search: fit on a stratified-at-random 80 % split, score accuracy on the other 20 %.
    One eigendecomposition serves the whole grid. Ties go to the larger (more stable) gamma."""
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray([str(x) for x in labels])
    classes, y = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    val = np.zeros(len(Z), dtype=bool)
    for k in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(y == k))
        val[idx[: int(round(len(idx) * val_fraction))]] = True
    if val.sum() == 0 or (~val).sum() == 0:
        raise ValueError("gamma search needs at least two examples per class (train and held-out)")
    Zt, Zv = Z[~val], Z[val]
    Y = np.zeros((len(Zt), len(classes)))
    Y[np.arange(len(Zt)), y[~val]] = 1.0
    lam, V = np.linalg.eigh(Zt.T @ Zt)
    B = V.T @ (Zt.T @ Y)
    ZvV = Zv @ V
    acc = {}
    for g in grid:
        pred = np.argmax(ZvV @ (B / (lam + g)[:, None]), axis=1)
        acc[float(g)] = float(np.mean(pred == y[val]))
    best = max(acc.values())
    return max(g for g, a in acc.items() if a == best), acc
