"""Scores and the calibrated "unknown" decision of the device runtime.

Scores. The analytic classifier's ridge outputs s = z W (targets one-hot, so about 1 for the true class and
0 for the others) are the primary score: ``predict`` returns the top ridge score and stream events carry
it. ``predict_proba`` also gives probabilities p = softmax(s / T) with a documented, fixed temperature
T = 0.1 (a ridge-score gap of 0.1 is a factor e between two classes); the ridge scores are kept beside
them (``Scores.ridge``). For a clip of several windows, s is the mean of its active windows' scores.

Unknown rule (switchable off). A prediction is "unknown" when the top ridge score is below a threshold tau:

    tau = quantile_q( { closed-form leave-one-clip-out own-class score of every enrolled window } )

The leave-one-clip-out score (analytic.loo_scores, exact for ridge: for the rows Z_g of one clip,
s_loo = (I - H_gg)^-1 (s_g - H_gg 1), H_gg = Z_g R Z_g^T) is the score an enrolled window would get had its
whole clip not been learned, i.e. a sample of the score a window of a new genuine sound of a known class
gets. Holding out the whole clip matters: the overlapping windows of one clip (or the windows the
microphone listener cuts from one shot) are near copies, and leaving out one window at a time while its
siblings stay learned scored them too high, which put tau too high (too strict) with few, similar shots.
Measured on a Listener-style session (knock, whistle, beep; 5 shots x 3 windows; held-out sounds at 8
onset offsets): leave-one-window-out tau = 0.910 rejected 43 % of genuine windows, leave-one-clip-out
tau = 0.809 rejected 25 % (0-6 % at the onsets the shots covered; the rest are windows holding only an
edge of the sound, which the stream sees again half a window later) and accepted 2 of 21 unknown windows
(a square tone near the learned square beep). Every window's held-out score is pooled ("rows"); one value
per clip (``pooled_loo(reduce="mean"|"min")``) gave tau 0.856 / 0.824.
Taking the q-quantile (default q = 0.05) makes the rule reject about a fraction q of genuine known-class
windows while rejecting sounds that score lower than most known examples. Only classes with at least 2
clips take part (holding out a class's only clip leaves no example of it). Without any such class tau falls
back to 0.5, half-way between the one-hot targets. tau is recomputed lazily, once per state version (every
learn or forget makes a new version), at the first prediction that needs it: cost O(n D^2) for n stored
windows. A fixed ``unknown_threshold`` overrides all this.

``Snapshot``: the immutable classifier state one decision reads (``Learner.snapshot()``), with its lazily
computed leave-one-clip-out scores, ridge scores and the decision itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from edge_pace.runtime.analytic import loo_scores

UNKNOWN = "unknown"
DEFAULT_TEMPERATURE = 0.1
DEFAULT_QUANTILE = 0.05
FALLBACK_THRESHOLD = 0.5
MIN_EXAMPLES = 2


def softmax(s: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Row-wise softmax of s / temperature (numerically stable)."""
    x = np.asarray(s, dtype=np.float64) / temperature
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def pooled_loo(loo: dict[str, np.ndarray], min_examples: int = MIN_EXAMPLES,
               groups: dict[str, tuple[np.ndarray, ...] | list[np.ndarray]] | None = None,
               reduce: str = "rows") -> np.ndarray:
    """The leave-one-clip-out own-class scores of the classes with >= ``min_examples`` groups (clips; rows
    without groups count one each). ``reduce``: "rows" keeps every row's score, "mean"/"min" keep one value
    per group."""
    if reduce not in ("rows", "mean", "min"):
        raise ValueError(f"reduce must be 'rows', 'mean' or 'min', got {reduce!r}")
    parts = []
    for c, v in loo.items():
        g = np.concatenate(groups[c]) if groups and c in groups else np.arange(len(v))
        ids, inv = np.unique(g, return_inverse=True)
        if len(ids) < min_examples:
            continue
        if reduce == "rows":
            parts.append(v)
        elif reduce == "mean":
            parts.append(np.bincount(inv, weights=v) / np.bincount(inv))
        else:
            m = np.full(len(ids), np.inf)
            np.minimum.at(m, inv, v)
            parts.append(m)
    return np.concatenate(parts) if parts else np.zeros(0)


def threshold_from_loo(pooled: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The q-quantile (linear interpolation) of the pooled leave-one-out scores, else the fallback 0.5."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"unknown_quantile must be in [0, 1], got {quantile}")
    if len(pooled) == 0:
        return FALLBACK_THRESHOLD
    return float(np.quantile(pooled, quantile))


class Scores(dict):
    """label -> probability (softmax of ridge scores / T), plus the decision as attributes:

    ``label`` (top class, or ``"unknown"``), ``top`` (top class even when unknown), ``score`` (top ridge
    score, the value the unknown rule compares), ``unknown`` (bool), ``threshold`` (tau used, or None when
    the rule is off), ``ridge`` (label -> ridge score), ``quiet`` (no window passed the level gate),
    ``windows`` (windows used), ``version`` (state version the scores come from).
    """

    def __init__(self, probs: dict[str, float], *, label: str, top: str, score: float, unknown: bool,
                 threshold: float | None, ridge: dict[str, float], quiet: bool = False, windows: int = 1,
                 version: int = 0) -> None:
        super().__init__(probs)
        self.label, self.top, self.score, self.unknown = label, top, score, unknown
        self.threshold, self.ridge, self.quiet, self.windows, self.version = threshold, ridge, quiet, windows, version

    def __repr__(self) -> str:
        return (f"Scores(label={self.label!r}, score={self.score:.3f}, unknown={self.unknown}, "
                f"threshold={self.threshold}, probs={dict(self)!r})")

    def as_dict(self) -> dict:
        """Plain JSON-ready form."""
        return {"label": self.label, "top": self.top, "score": self.score, "unknown": self.unknown,
                "threshold": self.threshold, "quiet": self.quiet, "windows": self.windows,
                "probabilities": dict(self), "ridge": self.ridge}


@dataclass
class Snapshot:
    """Immutable snapshot of the classifier for readers (arrays are never modified in place): what one
    prediction, or one stream window, reads from start to end (``Learner.snapshot``)."""

    version: int
    classes: tuple[str, ...]
    W: np.ndarray
    R: np.ndarray  # R_base; the state's R is R_base - P^T P (AnalyticClassifier.factors)
    P: np.ndarray
    features: dict[str, tuple[np.ndarray, ...]]
    groups: dict[str, tuple[np.ndarray, ...]]
    _loo: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def loo(self) -> np.ndarray:
        """Pooled leave-one-out own-class scores of this version (computed once, on first use)."""
        if self._loo is None:
            with self._lock:
                if self._loo is None:
                    self._loo = pooled_loo(loo_scores(self.R, self.W, list(self.classes), self.features, self.P,
                                                      self.groups), groups=self.groups)
        return self._loo

    def ridge(self, z: np.ndarray) -> np.ndarray:
        """Ridge scores [n, classes] (float64) of features z [n, D]."""
        return np.atleast_2d(z).astype(np.float64) @ self.W

    def decide(self, ridge: np.ndarray, threshold: float | None, temperature: float = DEFAULT_TEMPERATURE,
               quiet: bool = False, windows: int = 1) -> Scores:
        """The decision on ridge scores [classes]: top class, unknown below ``threshold`` (None: rule off) or
        when ``quiet``, probabilities softmax(ridge / temperature)."""
        k = int(np.argmax(ridge))
        top, score = self.classes[k], float(ridge[k])
        unknown = quiet or (threshold is not None and score < threshold)
        p = softmax(ridge, temperature)
        return Scores(dict(zip(self.classes, p.tolist())), label=UNKNOWN if unknown else top, top=top, score=score,
                      unknown=unknown, threshold=threshold, ridge=dict(zip(self.classes, ridge.tolist())), quiet=quiet,
                      windows=windows, version=self.version)
