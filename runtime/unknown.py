"""Scores and the calibrated "unknown" decision of the device runtime.

Scores. The analytic classifier's ridge outputs s = z W (targets one-hot, so about 1 for the true class and
0 for the others) are the primary score: ``predict`` returns the top ridge score and stream events carry
it. ``predict_proba`` also gives probabilities p = softmax(s / T) with a documented, fixed temperature
T = 0.1 (a ridge-score gap of 0.1 is a factor e between two classes); the ridge scores are kept beside
them (``Scores.ridge``). For a clip of several windows, s is the mean of its active windows' scores.

Unknown rule (switchable off; issue 13). Two regimes, by the mean number of enrolled clips per class:

- few clips (below ``OPENSET_MIN_CLIPS`` = 10): the top ridge score against the ``unknown_quantile``-quantile
  (default 0.05) of the enrolled windows' leave-one-clip-out own-class ridge scores (0.5 before any class has
  two clips). Measured on live few-shot sessions (3 shots per class: tests/test_microphone.py, test_demos.py,
  the short soak) the open-set score below missed genuine sounds and accepted an unrelated voice: its
  neighbour and leverage statistics need more enrolled clips to be calibrated;
- enough clips: the open-set score, below. Windows whose nearest stored example is background are unknown in
  both regimes.

A prediction is "unknown" (enough clips) when the clip's open-set score ``known``
(runtime/openset.py: kNN cosine to the predicted class's stored examples, ridge score and leverage, each
standardised by their leave-one-clip-out values) is below the predicted class's threshold, or when its
nearest stored example is a BACKGROUND window (``learn(audio, BACKGROUND)``: what to ignore). Thresholds are
per class, from each class's leave-one-clip-out open-set scores at the target miss rate ``unknown_quantile``
(the sensitivity, default 0.025 in this regime: 4.9 % of genuine sounds missed on held-out classes of real
recordings), leaning on the pooled value for classes with few clips. Measured on held-out classes of the
real-recordings benchmark (README "Unknown sounds"): AUROC 0.91 against 0.86 for the previous rule (the top ridge
score against a quantile of its leave-one-clip-out values, which is kept as the few-shot rule and the fallback:
before any class has two clips, a clip is unknown when its top ridge score is below 0.5, half-way between the
one-hot targets). ``Scores.threshold`` is on the scale of what was compared (``known``, or the ridge
``score`` in the fallback). The model is calibrated lazily, once per state version, at the first prediction
that needs it (O(n D^2) for n stored windows). A fixed ``unknown_threshold`` (on the ``known`` scale)
overrides the per-class thresholds.

``Snapshot``: the immutable classifier state one decision reads (``Learner.snapshot()``), with its lazily
computed leave-one-clip-out scores, ridge scores and the decision itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from edge_pace.runtime.leave_out import loo_scores
from edge_pace.runtime.openset import DEFAULT_MISS, OpenSet, calibrate, lower_bound

UNKNOWN = "unknown"
DEFAULT_TEMPERATURE = 0.1
DEFAULT_QUANTILE = None  # the sensitivity (target fraction of genuine sounds called unknown): None = per rule
RIDGE_QUANTILE = 0.05  # few-shot rule's default sensitivity (the open-set rule's is openset.DEFAULT_MISS)
OPENSET_MIN_CLIPS = 10.0  # mean enrolled clips per class from which the open-set score decides (measured)
FALLBACK_THRESHOLD = 0.5
MIN_EXAMPLES = 2


def softmax(s: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Row-wise softmax of s / temperature (numerically stable)."""
    x = np.asarray(s, dtype=np.float64) / temperature
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def pooled_loo(loo: dict[str, np.ndarray], groups: dict[str, tuple[np.ndarray, ...]] | None = None,
               min_examples: int = MIN_EXAMPLES) -> np.ndarray:
    """The leave-one-clip-out own-class ridge scores of every row of the classes with >= ``min_examples`` clips."""
    parts = []
    for c, v in loo.items():
        g = np.concatenate(groups[c]) if groups and c in groups else np.arange(len(v))
        if len(np.unique(g)) >= min_examples:
            parts.append(v)
    return np.concatenate(parts) if parts else np.zeros(0)


class Scores(dict):
    """label -> probability (softmax of ridge scores / T), plus the decision as attributes:

    ``label`` (top class, or ``"unknown"``), ``top`` (top class even when unknown), ``score`` (top ridge
    score), ``known`` (open-set score, or None before calibration is possible), ``unknown`` (bool),
    ``threshold`` (the threshold compared: on the ``known`` scale, or on the ridge ``score`` scale in the
    fallback; None when the rule is off), ``background`` (nearest stored example is background), ``ridge``
    (label -> ridge score), ``quiet`` (no window passed the level gate), ``windows`` (windows used),
    ``version`` (state version the scores come from).
    """

    def __init__(self, probs: dict[str, float], *, label: str, top: str, score: float, unknown: bool,
                 threshold: float | None, ridge: dict[str, float], quiet: bool = False, windows: int = 1,
                 version: int = 0, known: float | None = None, background: bool = False) -> None:
        super().__init__(probs)
        self.label, self.top, self.score, self.unknown = label, top, score, unknown
        self.threshold, self.ridge, self.quiet, self.windows, self.version = threshold, ridge, quiet, windows, version
        self.known, self.background = known, background

    def __repr__(self) -> str:
        return (f"Scores(label={self.label!r}, score={self.score:.3f}, unknown={self.unknown}, "
                f"threshold={self.threshold}, probs={dict(self)!r})")

    def as_dict(self) -> dict:
        """Plain JSON-ready form."""
        return {"label": self.label, "top": self.top, "score": self.score, "unknown": self.unknown,
                "known": self.known, "threshold": self.threshold, "background": self.background,
                "quiet": self.quiet, "windows": self.windows,
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
    _openset: OpenSet | None = field(default=None, repr=False)
    _ridge_loo: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def openset(self) -> OpenSet:
        """The calibrated open-set model of this version (computed once, on first use)."""
        if self._openset is None:
            with self._lock:
                if self._openset is None:
                    self._openset = calibrate(self.R, self.W, self.classes, self.features, self.groups, self.P)
        return self._openset

    def ridge_loo(self) -> np.ndarray:
        """Pooled leave-one-clip-out own-class ridge scores of this version (the few-shot rule; computed once)."""
        if self._ridge_loo is None:
            with self._lock:
                if self._ridge_loo is None:
                    classes = [c for c in self.classes if c in self.features]
                    self._ridge_loo = pooled_loo(loo_scores(self.R, self.W, classes, self.features, self.P,
                                                            self.groups), self.groups)
        return self._ridge_loo

    def ridge(self, z: np.ndarray) -> np.ndarray:
        """Ridge scores [n, classes] (float64) of features z [n, D]."""
        return np.atleast_2d(z).astype(np.float64) @ self.W

    def decide(self, z: np.ndarray | None, ridge: np.ndarray, rule: "UnknownRule", temperature: float = DEFAULT_TEMPERATURE,
               quiet: bool = False, windows: int = 1) -> Scores:
        """The decision on a clip's mean ridge scores [classes] (and its windows' features z [n, D], for the
        open-set score; None skips it): top class, the unknown rule, probabilities softmax(ridge / T)."""
        k = int(np.argmax(ridge))
        top, score = self.classes[k], float(ridge[k])
        known, threshold, background = None, None, False
        unknown = quiet
        if rule.enabled:
            model = self.openset()
            if z is not None and top in model.references:
                known, background = model.score(np.atleast_2d(z), ridge, k, self.R, self.P)
            if rule.openset(model) and known is not None:
                threshold = rule.fixed if rule.fixed is not None else model.thresholds(rule.open_miss)[top]
                unknown = unknown or background or known < threshold
            else:  # few clips: the ridge score against its leave-one-clip-out quantile (0.5 before calibration)
                threshold = rule.pooled(self)
                unknown = unknown or background or score < threshold
        p = softmax(ridge, temperature)
        return Scores(dict(zip(self.classes, p.tolist())), label=UNKNOWN if unknown else top, top=top, score=score,
                      unknown=unknown, threshold=threshold, ridge=dict(zip(self.classes, ridge.tolist())), quiet=quiet,
                      windows=windows, version=self.version, known=known, background=background)


@dataclass(frozen=True)
class UnknownRule:
    """The unknown rule's settings: ``enabled``; ``miss`` (sensitivity: target fraction of genuine sounds called
    unknown, 0..1, larger = stricter; None = each rule's measured default); ``fixed`` (a fixed threshold on the
    active rule's scale); ``min_clips`` (mean enrolled clips per class from which the open-set score decides)."""

    enabled: bool = True
    miss: float | None = DEFAULT_QUANTILE
    fixed: float | None = None
    min_clips: float = OPENSET_MIN_CLIPS

    def __post_init__(self) -> None:
        if self.miss is not None and not 0.0 <= self.miss <= 1.0:
            raise ValueError(f"unknown_quantile (the target miss rate) must be in [0, 1], got {self.miss}")

    @property
    def open_miss(self) -> float:
        return DEFAULT_MISS if self.miss is None else self.miss

    @property
    def ridge_miss(self) -> float:
        return RIDGE_QUANTILE if self.miss is None else self.miss

    def openset(self, model: OpenSet) -> bool:
        """Whether the open-set score decides for this state (calibrated, enough clips per class)."""
        return bool(model.held_out) and bool(model.clips) and (
            sum(model.clips.values()) / len(model.clips) >= self.min_clips)

    def thresholds(self, view: Snapshot) -> dict[str, float] | None:
        """Per-class thresholds of a state on the active rule's scale; None when off or nothing is learned."""
        if not self.enabled or not view.classes:
            return None
        if self.fixed is not None:
            return {c: float(self.fixed) for c in view.classes}
        model = view.openset()
        if self.openset(model):
            return model.thresholds(self.open_miss)
        return {c: self.pooled(view) for c in view.classes}

    def pooled(self, view: Snapshot) -> float | None:
        """The pooled threshold of the active rule (``FALLBACK_THRESHOLD`` on the ridge scale before any class
        has two clips; None when off)."""
        if not self.enabled:
            return None
        if self.fixed is not None:
            return float(self.fixed)
        model = view.openset() if view.classes else None
        if model is not None and self.openset(model):
            return lower_bound(np.concatenate(list(model.held_out.values())), self.open_miss)
        loo = view.ridge_loo() if view.classes else np.zeros(0)
        return float(np.quantile(loo, self.ridge_miss)) if len(loo) else FALLBACK_THRESHOLD
