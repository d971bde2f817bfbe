"""The class-incremental session loop that ``edge-pace adapt``, the main job (scripts/demo.py) and ``edge-pace
bench`` share: learn session t, then predict the test clips of every class seen so far, and record both.

Sessions come from ``edge_pace.evaluation.protocol.make_sessions`` (or anything with ``index``, ``seen``,
``train`` and ``test``); ``learn(session)`` and ``evaluate(session) -> (predictions, true labels)`` say how
a given learner reads its clips, learns and predicts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class SessionResult:
    """One session: its index, the classes seen so far, timings, predictions and what ``learn`` returned."""

    index: int
    seen: int
    fit_seconds: float  # learn(session)
    seconds: float  # learn + evaluate
    y_pred: list[str]
    y_true: list[str]
    metrics: Any = None

    @property
    def accuracy(self) -> float:
        """Accuracy on the test clips of the classes seen so far (NaN without test clips)."""
        if not self.y_true:
            return math.nan
        return sum(p == t for p, t in zip(self.y_pred, self.y_true)) / len(self.y_true)


def run_sessions(sessions: Sequence, learn: Callable[[Any], Any],
                 evaluate: Callable[[Any], tuple[Sequence[str], Sequence[str]]], *, start: int = 0,
                 after: Callable[[SessionResult], None] | None = None) -> list[SessionResult]:
    """Learn and evaluate ``sessions[start:]`` in order; ``after(result)`` runs after each session."""
    out = []
    for s in sessions[start:]:
        t0 = time.perf_counter()
        metrics = learn(s)
        fit = time.perf_counter() - t0
        y_pred, y_true = evaluate(s)
        r = SessionResult(s.index, len(s.seen), fit, time.perf_counter() - t0, list(y_pred), list(y_true), metrics)
        out.append(r)
        if after is not None:
            after(r)
    return out


__all__ = ["SessionResult", "run_sessions"]
