"""The regularized analytic classifier (RAC) of PACE: ridge regression on one-hot targets, kept in
recursive form (ACIL / RanPAC lineage). numpy only, float64 state. This is THE implementation of the
classifier math: the training side and the device both use it.

    R_t = R_{t-1} - R_{t-1} Z_t^T (I + Z_t R_{t-1} Z_t^T)^{-1} Z_t R_{t-1}
    W_t = W_{t-1} + R_t Z_t^T (Y_t - Z_t W_{t-1})      (new classes first append zero columns to W)

starting from R = I / gamma, W = 0. For any split of the data into batches this equals the joint
ridge solution (sum Z^T Z + gamma I)^{-1} sum Z^T Y ("weight invariance").

Features of every class are kept by default (``keep_features``) so that ``forget`` is exact and the
state can be refactorised from scratch (``refit``). Cost: 4 bytes x D per example (float32 input). With the
features the classifier keeps a group id per row (``groups``): rows learned from one clip share an id, so
the leave-one-out calibration of the unknown rule can hold a whole clip out (``loo_scores``); rows learned
without ``groups`` are each their own group (plain leave-one-out).

Numerical drift. Recursive least squares in float64 accumulates rounding, but slowly: over 10^5
single-example updates (D = 256, ill-conditioned features, cond(A) up to 6e9) the backward error of R as the
inverse of A = sum Z^T Z + gamma I went from 8e-16 to 1.7e-15 (benchmarks/drift.py), so R and W stay as
close to the exact joint ridge solution as the problem's conditioning allows (relative error <~ cond(A) x
backward error; below 1e-8 while cond(A) <~ 1e6). Guards: ``drift()`` estimates the backward error cheaply
from the stored features (O(nD + D^2)), and the device learner refits (``refit()``: exact recomputation from
the stored features) when it exceeds ``DRIFT_TOLERANCE``, checked every few thousand learned rows; an update
that meets a no-longer-positive-definite R raises a FloatingPointError saying so and changes nothing.

Speed (device learning at D = 2048: R is 32 MB of float64). With K = I + Z R Z^T = L L^T and V = L^-1 Z R,
the update is R_t = R - V^T V and W_t = W + V^T L^-1 (Y - Z W) (because R_t Z^T = R Z^T K^-1). Instead of
rewriting R every time, the rows V are kept as pending factors P (R = R_base - P^T P) and folded into R_base
once ``MAX_PENDING`` rows have accumulated, or when ``R`` is read. A learn then reads R_base once (one
matrix-vector pass, whose result also reveals a NaN/Inf in R_base) instead of copying, updating and
symmetrising it (about 170 ms -> 7 ms per example at D = 2048 on one busy core); the arithmetic is the same
recursive least squares, and the folded R equals the eager one to ~1e-15 relative. One example (the common
device case) takes a scalar path (K and L are numbers). A chunk of more rows than dimensions (n > D, e.g. a
training session) uses the equivalent D x D form R_new = (I + R Z^T Z)^-1 R instead: cheaper there, and free
of the cancellation in R - V^T V when I + Z R Z^T is very ill-conditioned (backward error of R 6e-17 instead
of 8e-13 for 3000 rows at D = 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_pace.runtime.gamma import DEFAULT_CRITERION, GAMMA_GRID, GammaSearch, select_gamma
from edge_pace.runtime.leave_out import loo_scores  # re-exported: part of the classifier's math

BACKGROUND = "__background__"  # reserved label: rows with an all-zero target (what to ignore), never a class
DRIFT_TOLERANCE = 1e-10  # backward error of R above which ``drift()`` calls for a refit
MAX_PENDING = 64  # pending low-rank rows before they are folded into R (fold cost ~ 2 MAX_PENDING D^2 flops)
_STATE_ERROR = "classifier state contains NaN/Inf; reload the last saved state or call refit()"
_DRIFT_ERROR = ("classifier state is no longer positive definite (I + Z R Z^T is not): accumulated rounding or a "
                "corrupted R; nothing was learned. Call refit() (needs stored features) or reload the last saved state")


def _as_features(Z: np.ndarray, dim: int) -> np.ndarray:
    Z = np.asarray(Z)
    if Z.ndim == 1:
        Z = Z[None, :]
    if Z.ndim != 2 or Z.shape[1] != dim:
        raise ValueError(f"features must have shape [n, {dim}], got {tuple(Z.shape)}")
    if not np.issubdtype(Z.dtype, np.floating):
        raise TypeError(f"features must be floating point, got dtype {Z.dtype}")
    if not np.isfinite(Z).all():
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
        self.R = np.eye(self.dim, dtype=np.float64) / self.gamma  # property: sets R_base, no pending rows
        self.W = np.zeros((self.dim, 0), dtype=np.float64)
        self.classes: list[str] = []
        self.counts: list[int] = []
        self.features: dict[str, list[np.ndarray]] = {}
        self.groups: dict[str, list[np.ndarray]] = {}  # int64 group id per stored feature row (parallel lists)
        self.next_group = 0
        self.n_updates = 0

    # ------------------------------------------------------------------ R = R_base - P^T P
    @property
    def R(self) -> np.ndarray:
        """(sum Z^T Z + gamma I)^-1, materialised: pending low-rank rows are folded in first."""
        if len(self._P):
            self._R, self._P = _fold(self._R, self._P), np.zeros((0, self.dim))
        return self._R

    @R.setter
    def R(self, value: np.ndarray) -> None:
        self._R = value
        self._P = np.zeros((0, self.dim))

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(R_base, P) with R = R_base - P^T P, without folding (cheap snapshots for concurrent readers)."""
        return self._R, self._P

    # ------------------------------------------------------------------ learning
    def learn(self, Z: np.ndarray, labels: Sequence[str] | str, chunk: int = 1024,
              groups: Sequence[int] | np.ndarray | None = None) -> "AnalyticClassifier":
        """Recursive update with a batch of any size; unseen labels become new classes. ``groups`` (optional,
        one integer per row): rows with the same value come from one clip (they must share a label) and are
        held out together by ``loo_scores``; without it every row is its own group."""
        Z = _as_features(Z, self.dim)
        labels = [labels] * len(Z) if isinstance(labels, str) else [str(x) for x in labels]
        if len(labels) != len(Z):
            raise ValueError(f"got {len(Z)} feature rows but {len(labels)} labels")
        gid = self._group_ids(groups, labels)
        if len(Z) == 0:
            return self
        self._check_small()
        # compute into new arrays and swap at the end: an error never leaves a half-updated state
        R, P, W = self._R, self._P, self.W
        classes = list(self.classes)
        new = [c for c in dict.fromkeys(labels) if c not in classes and c != BACKGROUND]
        classes += new
        W = np.hstack([W, np.zeros((self.dim, len(new)))])
        idx = np.array([-1 if c == BACKGROUND else classes.index(c) for c in labels])  # -1: all-zero target
        Z64 = Z.astype(np.float64)
        for s in range(0, len(Z64), chunk):
            Zc = Z64[s : s + chunk]
            Y = np.zeros((len(Zc), len(classes)))
            ic = idx[s : s + chunk]
            Y[np.flatnonzero(ic >= 0), ic[ic >= 0]] = 1.0
            if len(Zc) > self.dim:  # more rows than dimensions: the D x D form, R_new = (I + R Z^T Z)^-1 R
                if len(P):
                    R, P = _fold(R, P), np.zeros((0, self.dim))
                if not np.isfinite(R).all():
                    raise FloatingPointError(_STATE_ERROR)
                Rn = np.linalg.solve(np.eye(self.dim) + R @ (Zc.T @ Zc), R)
                R = 0.5 * (Rn + Rn.T)
                W = W + R @ (Zc.T @ (Y - Zc @ W))
                continue
            U = Zc @ R  # the one pass over R_base; a NaN/Inf in R_base shows up here (0 * NaN = NaN)
            if not np.isfinite(U).all():
                raise FloatingPointError(_STATE_ERROR)
            if len(P):
                U = U - (Zc @ P.T) @ P  # [n, D] = Z R (R symmetric)
            if len(Zc) == 1:  # one example (the common device case): K and L are scalars
                k = 1.0 + float(U[0] @ Zc[0])
                if not k >= 1.0 - 1e-9:  # K = 1 + z R z^T >= 1 when R is positive semi-definite
                    raise FloatingPointError(_DRIFT_ERROR)
                V = U / np.sqrt(k)
                W = W + np.outer(V[0], (Y[0] - Zc[0] @ W) / np.sqrt(k))
            else:
                K = np.eye(len(Zc)) + U @ Zc.T
                try:
                    L = np.linalg.cholesky(0.5 * (K + K.T))  # K = I + Z R Z^T is symmetric positive definite
                except np.linalg.LinAlgError as exc:
                    raise FloatingPointError(_DRIFT_ERROR) from exc
                V = np.linalg.solve(L, U)  # R_new = R - V^T V
                W = W + V.T @ np.linalg.solve(L, Y - Zc @ W)  # R_new Z^T = U^T K^-1 = V^T L^-1
            P = np.vstack([P, V])
            if len(P) >= MAX_PENDING:
                R, P = _fold(R, P), np.zeros((0, self.dim))
        if not (np.isfinite(P).all() and np.isfinite(W).all() and (R is self._R or np.isfinite(R).all())):
            raise FloatingPointError("the update produced non-finite values; state left unchanged (try a larger gamma)")
        self._R, self._P, self.W, self.classes = R, P, W, classes
        self.counts += [0] * len(new)
        for c in labels:
            if c != BACKGROUND:
                self.counts[classes.index(c)] += 1
        if self.keep_features:
            for c in dict.fromkeys(labels):
                sel = [i for i, x in enumerate(labels) if x == c]
                kept = Z[sel].astype(np.float32 if Z.dtype == np.float32 else np.float64)
                self.features.setdefault(c, []).append(kept)
                self.groups.setdefault(c, []).append(gid[sel])
        self.next_group = int(gid.max()) + 1
        self.n_updates += 1
        return self

    fit = learn

    def _group_ids(self, groups, labels: list[str]) -> np.ndarray:
        """Global int64 group ids for the rows of one learn call (validated; nothing is changed here)."""
        n = len(labels)
        if groups is None:
            return self.next_group + np.arange(n, dtype=np.int64)
        g = np.asarray(groups)
        if g.shape != (n,) or not (np.issubdtype(g.dtype, np.integer) or n == 0):
            raise ValueError(f"groups must be {n} integers (one per feature row), got shape {g.shape} dtype {g.dtype}")
        if n == 0:
            return np.zeros(0, np.int64)
        _, first, inv = np.unique(g, return_index=True, return_inverse=True)  # first row of each group
        lab = np.asarray(labels, dtype=object)
        mixed = lab != lab[first[inv]]
        if mixed.any():
            i = int(np.flatnonzero(mixed)[0])
            raise ValueError(f"group {g[i].item()!r} mixes labels {lab[first[inv[i]]]!r} and {lab[i]!r}: the rows of "
                             "one clip share its label")
        return self.next_group + inv.astype(np.int64)

    def has_features(self) -> bool:
        """Whether the features of every class are stored (needed by forget, refit, drift and gamma choice)."""
        return set(self.classes) <= set(self.features)

    def _forget_background(self) -> "AnalyticClassifier":
        """Remove every BACKGROUND row exactly: replay the classes' stored features from R = I / gamma."""
        if not self.has_features():
            raise ValueError("forgetting the background needs the stored features of every class")
        fresh = AnalyticClassifier(self.dim, self.gamma, keep_features=False)
        for c in self.classes:
            fresh.learn(np.vstack(self.features[c]), c)
        self.R = fresh.R
        self.W = fresh.W if self.classes else np.zeros((self.dim, 0))
        del self.features[BACKGROUND]
        self.groups.pop(BACKGROUND, None)
        self.n_updates += 1
        return self

    def forget(self, label: str) -> "AnalyticClassifier":
        """Remove a class (or every BACKGROUND row) exactly: the result equals never having learned it (up to
        float64 rounding)."""
        if label == BACKGROUND and label in self.features:
            return self._forget_background()
        if label not in self.classes:
            raise KeyError(f"unknown class {label!r}; known: {self.classes}")
        if label not in self.features:
            raise ValueError(f"class {label!r} was learned without stored features, so it cannot be forgotten exactly "
                             "(learn with keep_features=True)")
        self.check()
        c = self.classes.index(label)
        keep = [i for i in range(len(self.classes)) if i != c]
        if all(self.classes[i] in self.features for i in keep):
            # Replay the remaining stored features from R = I / gamma. The downdate below subtracts nearly equal
            # quantities when the removed examples dominate their directions (large |z|^2 / gamma, as with
            # real embeddings): its relative error reached 1e-7 on aisfx features, the replay's stays ~1e-12.
            # Cost O(n_remaining D^2), the same order as one recursive update with all remaining examples.
            fresh = AnalyticClassifier(self.dim, self.gamma, keep_features=False)
            for i in keep:
                fresh.learn(np.vstack(self.features[self.classes[i]]), self.classes[i])
            if BACKGROUND in self.features:
                fresh.learn(np.vstack(self.features[BACKGROUND]), BACKGROUND)
            R, W = fresh.R, fresh.W
            if not keep:
                W = np.zeros((self.dim, 0))
        else:
            Zc = np.vstack(self.features[label]).astype(np.float64)
            # R_new = (R^-1 - Zc^T Zc)^-1 = R + R Zc^T (I - Zc R Zc^T)^-1 Zc R
            U = Zc @ self.R
            K = np.eye(len(Zc)) - U @ Zc.T
            R = self.R + U.T @ np.linalg.solve(K, U)
            R = 0.5 * (R + R.T)
            Wo = self.W[:, keep]
            # columns of the other classes: W_new = R_new C = W + R_new Zc^T Zc W (their targets on Zc are 0)
            W = Wo + R @ (Zc.T @ (Zc @ Wo))
        if not (np.isfinite(R).all() and np.isfinite(W).all()):
            raise FloatingPointError("forget produced non-finite values; state left unchanged")
        self.R, self.W = R, W
        del self.classes[c], self.counts[c], self.features[label]
        self.groups.pop(label, None)
        self.n_updates += 1
        return self

    def refit(self) -> "AnalyticClassifier":
        """Refactorise R and W from the stored features (removes any accumulated rounding drift)."""
        if not self.has_features():
            raise ValueError("refit needs the stored features of every class")
        if not self.classes and BACKGROUND not in self.features:
            self.R, self.W = np.eye(self.dim) / self.gamma, np.zeros((self.dim, 0))
            return self
        Z, labels, _ = self.stored()
        Z = Z.astype(np.float64)
        y = np.array([-1 if c is None else self.classes.index(c) for c in labels], dtype=np.int64)
        Y = np.zeros((len(Z), len(self.classes)))
        Y[np.flatnonzero(y >= 0), y[y >= 0]] = 1.0  # background rows: all-zero targets
        if 2 * len(Z) <= self.dim:  # few rows: Woodbury through the n x n Cholesky factor (O(n^2 D + n D^2))
            L = np.linalg.cholesky(Z @ Z.T + self.gamma * np.eye(len(Z)))  # K = Z Z^T + gamma I = L L^T
            X = np.linalg.solve(L, Z)  # R = (I - Z^T K^-1 Z) / gamma = (I - X^T X) / gamma
            R = (np.eye(self.dim) - X.T @ X) / self.gamma
        else:
            R = np.linalg.inv(Z.T @ Z + self.gamma * np.eye(self.dim))
        if not np.isfinite(R).all():
            raise FloatingPointError("refit produced non-finite values; state left unchanged")
        R = 0.5 * (R + R.T)
        self.R, self.W = R, R @ (Z.T @ Y)
        return self

    def stored(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """All stored feature rows [n, D], their labels (None for BACKGROUND rows) and clip groups (class order,
        then the background)."""
        if not self.has_features():
            raise ValueError("this needs the stored features of every class (keep_features=True)")
        keys = list(self.classes) + ([BACKGROUND] if BACKGROUND in self.features else [])
        if not keys:
            return np.zeros((0, self.dim), np.float32), [], np.zeros(0, np.int64)
        Z = np.vstack([f for c in keys for f in self.features[c]])
        labels = [None if c == BACKGROUND else c for c in keys for f in self.features[c] for _ in range(len(f))]
        groups = np.concatenate([g for c in keys for g in self.groups[c]])
        return Z, labels, groups

    def n_clips(self) -> int:
        """Number of stored clips (groups)."""
        return len(np.unique(np.concatenate([g for gs in self.groups.values() for g in gs]))) if self.groups else 0

    def set_gamma(self, gamma: float) -> "AnalyticClassifier":
        """Change gamma and refactorise R and W exactly from the stored features (no-op when unchanged)."""
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a positive finite number, got {gamma}")
        if float(gamma) == self.gamma:
            return self
        if self.classes and not self.has_features():
            raise ValueError("changing gamma needs the stored features of every class (keep_features=True)")
        old = self.gamma
        self.gamma = float(gamma)
        try:
            self.refit()
        except Exception:
            self.gamma = old
            raise
        return self

    def choose_gamma(self, prior: float | None = None, grid: Sequence[float] = GAMMA_GRID,
                     criterion: str = DEFAULT_CRITERION) -> GammaSearch:
        """Re-choose gamma by closed-form leave-one-clip-out error over ``grid`` from the stored features and
        clip groups (runtime/gamma.py) and refactorise exactly when it changes. With too few clips (fewer than
        two classes of two clips) gamma becomes ``prior`` (default: the current gamma)."""
        Z, labels, groups = self.stored()
        found = select_gamma(Z, labels, groups, grid, criterion, prior=self.gamma if prior is None else prior)
        self.set_gamma(found.gamma)
        return found

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
        """Leave-one-clip-out ridge score of each stored example for its own class, in closed form (see the
        module function ``loo_scores``). Used to calibrate the 'unknown' rule."""
        return loo_scores(self._R, self.W, self.classes, self.features, self._P, self.groups)

    def drift(self, probes: int = 2, seed: int = 0, power_steps: int = 4) -> float:
        """Backward error of R as the inverse of A = sum Z^T Z + gamma I, estimated from the stored features with
        random probes v: max ||A R v - v|| / (||A|| ||R v||), ||A|| by a few power iterations. Cost O(n D + D^2)
        per product with A (no D^3). A stable computation gives ~1e-16..1e-14 whatever A's condition number;
        above ``DRIFT_TOLERANCE`` the recursion has drifted: ``refit()`` recomputes R and W exactly."""
        if not self.has_features():
            raise ValueError("drift needs the stored features of every class (keep_features=True)")
        rows = [f.astype(np.float64, copy=False) for f in (self.stored()[0],)]

        def times_a(X: np.ndarray) -> np.ndarray:
            out = self.gamma * X
            for f in rows:
                out += f.T @ (f @ X)
            return out

        rng = np.random.default_rng(seed)
        V = rng.standard_normal((self.dim, probes))
        X = self._R @ V - (self._P.T @ (self._P @ V) if len(self._P) else 0.0)  # R v
        residual = np.linalg.norm(times_a(X) - V, axis=0) / np.linalg.norm(X, axis=0)
        u = rng.standard_normal(self.dim)
        norm_a = self.gamma
        for _ in range(power_steps):  # ||A||_2 (A is symmetric positive definite)
            u = times_a(u / np.linalg.norm(u))
            norm_a = max(norm_a, float(np.linalg.norm(u)))
        return float(np.max(residual) / norm_a)

    # ------------------------------------------------------------------ checks and state
    def _check_small(self) -> None:
        """Shapes, and finiteness of everything but R_base (learn checks R_base in its single pass over it)."""
        if (self._R.shape != (self.dim, self.dim) or self.W.shape != (self.dim, len(self.classes))
                or self._P.ndim != 2 or self._P.shape[1] != self.dim):
            raise ValueError(f"classifier state has inconsistent shapes R{self._R.shape} W{self.W.shape} "
                             f"for dim {self.dim} and {len(self.classes)} classes; reload a saved state")
        if not (np.isfinite(self.W).all() and np.isfinite(self._P).all()):
            raise FloatingPointError(_STATE_ERROR)

    def check(self) -> None:
        """Raise a clear error if the state is not usable (non-finite or wrong shapes)."""
        self._check_small()
        if not np.isfinite(self._R).all():
            raise FloatingPointError(_STATE_ERROR)

    def nbytes(self) -> int:
        return (self._R.nbytes + self._P.nbytes + self.W.nbytes
                + sum(f.nbytes for fs in self.features.values() for f in fs))


def _fold(R: np.ndarray, P: np.ndarray) -> np.ndarray:
    """R_base - P^T P as a new array (snapshots holding the old one stay valid). numpy computes ``P.T @ P`` with
    BLAS syrk, so it is exactly symmetric and a symmetric R_base stays exactly symmetric (no transposed pass)."""
    return R - P.T @ P


def joint_ridge(Z: np.ndarray, y: Sequence[int], n_classes: int, gamma: float) -> np.ndarray:
    """The joint (non-recursive) ridge solution (Z^T Z + gamma I)^{-1} Z^T Y, for tests and checks."""
    Z = np.asarray(Z, dtype=np.float64)
    Y = np.zeros((len(Z), n_classes))
    Y[np.arange(len(Z)), np.asarray(y)] = 1.0
    return np.linalg.solve(Z.T @ Z + gamma * np.eye(Z.shape[1]), Z.T @ Y)
