"""Is this sound one of the learned classes? The device's open-set score, from the statistics it already keeps.

Measured on held-out classes (benchmarks/openset_bench.py, benchmarks/openset_variants.py, README "Unknown
sounds"), the ridge score alone separates known from never-learned sounds poorly: a new sound lands somewhere in
feature space and the linear ridge extrapolates a confident score. Three statistics the device has for free,
each standardised by its own leave-one-clip-out distribution over the enrolled windows, do better together:

    a = cosine similarity to the nearest stored example of the predicted class   (kNN, on z; held out: the
                                                                                 nearest one in *another* clip)
    t = top ridge score                                                          (held out: closed-form LOO)
    h = leverage z R_c z^T, R_c = (Z_c^T Z_c + gamma I)^-1 over the classes' rows (held out: the whole clip,
                                                                                 diag(H_gg (I - H_gg)^-1))

    known = KNN_WEIGHT (a - mean_a) / sd_a + (t - mean_t) / sd_t - LEVERAGE_WEIGHT (h - mean_h) / sd_h

(KNN_WEIGHT = 0.5, LEVERAGE_WEIGHT = 0.5, measured). The leverage is large for a window unlike anything enrolled
(how far z lies outside the span of the stored features, in their own metric): it catches windows that hold only
part of a sound in a stream. Standardised as its own term with half weight it beat the previous rule, which
standardised (t - h) as one term (real recordings, 40 draws: false accepts at 5 % misses 31.5 % vs 35.3 %; stream
false accepts per hour equal). The leave-one-clip-out values of ``known`` per class give per-class thresholds:
tau_c = the ``miss``-quantile of class c's values (or a Student-t bound when lower: ``lower_bound``), shrunk
toward the pooled value for classes with few clips (weight n_c / (n_c + PRIOR_CLIPS), PRIOR_CLIPS = 50: measured
better than 5, 20, 200, per-class only or pooled only), so ``miss`` (the sensitivity: the target fraction of
genuine sounds rejected) moves every threshold in the same, documented direction: a larger ``miss`` raises them.
DEFAULT_MISS = 0.025 realised 4.9 % misses on held-out classes of real recordings (the calibration is optimistic
by about 2x: test clips are less like the enrolled ones than the enrolled ones are like each other).

Background: windows enrolled as BACKGROUND (what to ignore: a TV, the fridge, speech) are ridge rows with an
all-zero target (runtime/analytic.py) and stored references here: a window whose nearest stored example is a
background window is unknown, whatever its class score. Background audio is learned edge-padded
(``edge_padded``: windows holding only its start or end, as a stream sees them), and the leverage h is taken
under the classes' rows alone (``OpenSet.unlearn``, Woodbury): background rows must lower the class scores near
them without making those windows look familiar.

Cost: calibration O(n D^2 + sum_c n_c^2 D + m^2 D + m D^2 for m background windows) once per state version
(lazily, at the first prediction after a change); per window O(D^2) for the leverage (one matrix-vector product)
+ O(m D + n_ref D) for the background correction and the neighbours. At most MAX_REFERENCE windows per class are
kept as neighbours (evenly spaced), which bounds the per-window cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from edge_pace.runtime.analytic import BACKGROUND, loo_scores
DEFAULT_MISS = 0.025  # target fraction of enrolled-like genuine sounds rejected ("sensitivity"); measured, README
PRIOR_CLIPS = 50  # per-class thresholds lean on the pooled one with this weight (in clips), measured
MAX_REFERENCE = 512  # stored windows per class used as neighbours
# weights of the neighbour term a and the leverage term h next to the ridge term t (all standardised), measured on
# held-out classes (benchmarks/openset_variants.py, real recordings, seeds 100-139, README): kNN weight 1 scored
# about as well on clips, but stream windows that hold only part of a sound (hop 0.5 s) fall below their class's
# enrolled neighbours and were missed (tests/test_stream.py), so 0.5; leverage weight 0.25 / 0.5 / 1: false accepts
# at 5 % misses 29.9 / 31.5 / 33.6 %, but stream false accepts per hour rose without it, so 0.5.
KNN_WEIGHT = 0.5
LEVERAGE_WEIGHT = 0.5
MIN_CLIPS = 2  # classes with fewer clips have no held-out values: the pooled threshold applies


def lower_bound(values: np.ndarray, miss: float) -> float:
    """The more lenient of the empirical ``miss``-quantile of ``values`` and the Student-t prediction bound
    mean - t_(1-miss, n-1) sd sqrt(1 + 1/n): with a few enrolled clips the empirical quantile is little more than
    the smallest value seen, and the t bound widens it by how little is known (t by its Cornish-Fisher series)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or miss <= 0.0:
        return float(v.min()) if len(v) else -np.inf
    if miss >= 1.0:
        return float(v.max())
    z, nu = NormalDist().inv_cdf(1.0 - miss), len(v) - 1
    t = z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
    return float(min(np.quantile(v, miss), v.mean() - t * v.std(ddof=1) * np.sqrt(1.0 + 1.0 / len(v))))


def edge_padded(mono: np.ndarray, window: int) -> np.ndarray:
    """Background audio as a stream meets it: half a window of silence before and after, so that the windows
    holding only its start or its end (with silence) are learned too. Measured (benchmarks/openset_stream.py):
    without it most false accepts left after background enrolment came from such edge windows."""
    pad = np.zeros(window // 2, np.float32)
    return np.concatenate([pad, np.asarray(mono, np.float32), pad])


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _reference(rows: np.ndarray) -> np.ndarray:
    if len(rows) > MAX_REFERENCE:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_REFERENCE).round().astype(int)]
    return _unit(rows)


def leverage(Z: np.ndarray, R: np.ndarray, P: np.ndarray | None = None) -> np.ndarray:
    """z R z^T per row, with R = R_base - P^T P when pending factors P are given."""
    Z = np.asarray(Z, dtype=np.float64)
    h = np.einsum("ij,ij->i", Z @ R, Z)
    if P is not None and len(P):
        h -= np.sum((Z @ P.T) ** 2, axis=1)
    return h


def held_out_leverage(Z: np.ndarray, groups: np.ndarray, R: np.ndarray, P: np.ndarray | None = None) -> np.ndarray:
    """The leverage of each row under the ridge fit learned without its whole clip (group): for the rows Z_g of
    a clip, H_gg = Z_g R Z_g^T and the held-out leverages are diag(H_gg (I - H_gg)^-1) (h / (1 - h) for a clip
    of one row). Holding out single rows while their sibling windows stay learned would understate it."""
    Z = np.asarray(Z, dtype=np.float64)
    U = Z @ R
    ZP = Z @ P.T if P is not None and len(P) else None
    h = np.einsum("ij,ij->i", U, Z) - (np.sum(ZP**2, axis=1) if ZP is not None else 0.0)
    out = h / np.maximum(1.0 - h, 1e-9)
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    for k in np.flatnonzero(counts > 1):
        idx = np.flatnonzero(inv == k)
        H = U[idx] @ Z[idx].T - (ZP[idx] @ ZP[idx].T if ZP is not None else 0.0)
        H = 0.5 * (H + H.T)
        try:
            out[idx] = np.diag(np.linalg.solve(np.eye(len(idx)) - H, H))  # (I - H)^-1 H, same diagonal as H (I - H)^-1
        except np.linalg.LinAlgError:
            pass  # keep the per-row values
    return out


@dataclass(frozen=True)
class OpenSet:
    """The calibrated open-set model of one classifier state (immutable; build it with ``calibrate``)."""

    classes: tuple[str, ...]
    references: dict[str, np.ndarray]  # unit-norm neighbour rows per class
    background: np.ndarray  # unit-norm background rows [m, D] (m may be 0)
    norm: tuple[float, ...]  # mean and sd of the neighbour cosine, the top ridge score and the leverage
    held_out: dict[str, np.ndarray]  # leave-one-clip-out open-set scores of each class's enrolled windows
    clips: dict[str, int]
    # background rows B enter the leverage through U = B R and K = (I - B R B^T)^-1: z R_c z^T = z R z^T +
    # (U z)^T K (U z) is the leverage under the classes' rows alone (Woodbury; None without background)
    unlearn: tuple[np.ndarray, np.ndarray] | None = None

    def leverage(self, z: np.ndarray, R: np.ndarray, P: np.ndarray | None = None) -> np.ndarray:
        """Leverage of rows z under the enrolled classes' rows only: background rows (all-zero targets) lower the
        ridge score near them, and must not make a window look familiar (lower its leverage) at the same time."""
        h = leverage(z, R, P)
        if self.unlearn is not None:
            V = np.asarray(z, dtype=np.float64) @ self.unlearn[0].T
            h = h + np.einsum("ij,jk,ik->i", V, self.unlearn[1], V)
        return h

    def thresholds(self, miss: float = DEFAULT_MISS) -> dict[str, float]:
        """Per-class thresholds for a target miss rate (0..1): higher ``miss``, higher thresholds."""
        if not 0.0 <= miss <= 1.0:
            raise ValueError(f"miss (the target fraction of genuine sounds rejected) must be in [0, 1], got {miss}")
        parts = [v for c, v in self.held_out.items() if self.clips.get(c, 0) >= MIN_CLIPS]
        pooled = lower_bound(np.concatenate(parts), miss) if parts else -np.inf
        out = {}
        for c in self.classes:
            n = self.clips.get(c, 0)
            if n < MIN_CLIPS or c not in self.held_out:
                out[c] = pooled
            else:
                w = n / (n + PRIOR_CLIPS)
                out[c] = w * lower_bound(self.held_out[c], miss) + (1 - w) * pooled
        return out

    def score(self, z: np.ndarray, ridge: np.ndarray, k: int, R: np.ndarray, P: np.ndarray | None = None
              ) -> tuple[float, bool]:
        """(open-set score of a clip's windows z [n, D] for predicted class index k, mean ridge scores
        ``ridge`` [C]; whether its nearest stored example is background)."""
        zu = _unit(z)
        ref = self.references.get(self.classes[k])
        a = float(np.mean((zu @ ref.T).max(axis=1))) if ref is not None else self.norm[0]  # no stored rows: neutral
        h = float(np.mean(self.leverage(z, R, P))) if LEVERAGE_WEIGHT else self.norm[4]
        known = combine(a, float(ridge[k]), h, self.norm)
        near_background = bool(len(self.background)) and float(np.mean((zu @ self.background.T).max(axis=1))) > a
        return known, near_background


def combine(a, t, h, norm: tuple[float, ...]):
    """The open-set score from its parts (scalars or arrays): neighbour cosine a, top ridge score t, leverage h,
    each standardised by the pooled leave-one-clip-out mean and sd in ``norm``."""
    ma, sa, mt, st, mh, sh = norm
    return KNN_WEIGHT * (a - ma) / sa + (t - mt) / st - LEVERAGE_WEIGHT * (h - mh) / sh


def calibrate(R: np.ndarray, W: np.ndarray, classes: Sequence[str], features: dict[str, Sequence[np.ndarray]],
              groups: dict[str, Sequence[np.ndarray]], P: np.ndarray | None = None) -> OpenSet:
    """The open-set model of a state (arrays of an immutable snapshot; ``features``/``groups`` may hold
    BACKGROUND rows, which become background references)."""
    classes = tuple(classes)
    loo = loo_scores(R, W, classes, {c: list(features[c]) for c in classes if c in features}, P,
                     {c: list(groups[c]) for c in classes if c in groups})
    A, T, H, refs, clips = {}, {}, {}, {}, {}
    bg = np.vstack(features[BACKGROUND]).astype(np.float64) if BACKGROUND in features and len(features[BACKGROUND]) \
        else None
    unlearn, Rc, Pc = None, R, P
    if bg is not None and LEVERAGE_WEIGHT:  # the leverage under the classes' rows alone (OpenSet.unlearn)
        Rc = R - (P.T @ P if P is not None and len(P) else 0.0)
        U = bg @ Rc
        K = np.linalg.inv(np.eye(len(bg)) - U @ bg.T)
        K = 0.5 * (K + K.T)
        unlearn, Rc, Pc = (U, K), Rc + U.T @ K @ U, None
    for c in classes:
        if c not in features:
            continue
        Z = np.vstack(features[c]).astype(np.float64)
        g = np.concatenate(groups[c]) if c in groups else np.arange(len(Z))
        clips[c] = len(np.unique(g))
        refs[c] = _reference(Z)
        T[c] = loo[c]
        H[c] = held_out_leverage(Z, g, Rc, Pc) if LEVERAGE_WEIGHT else np.zeros(len(Z))
        if clips[c] >= MIN_CLIPS:  # nearest example of the same class in another clip
            U = _unit(Z)
            sim = U @ U.T
            sim[g[:, None] == g[None, :]] = -np.inf
            A[c] = sim.max(axis=1)
    if A:
        parts = [np.concatenate([X[c] for c in A]) for X in (A, T, H)]
        norm = tuple(float(f(v)) + e for v in parts for f, e in ((np.mean, 0.0), (np.std, 1e-6)))
    else:  # no class has two clips yet: unit scales (thresholds are then the pooled fallback)
        norm = (0.0, 1.0, 0.0, 1.0, 0.0, 1.0)
    held = {c: combine(A[c], T[c], H[c], norm) for c in A}
    return OpenSet(classes, refs, _reference(bg) if bg is not None else np.zeros((0, W.shape[0])), norm, held, clips,
                   unlearn)


__all__ = ["BACKGROUND", "DEFAULT_MISS", "OpenSet", "calibrate", "leverage"]
