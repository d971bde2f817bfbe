"""The PACE family on the bench: PACE, its ablations and RanPAC with FSA (``PaceMethod``, a thin adapter over
``PaceLearner`` with an in-memory feature memo valid while the backbone does not change), and the joint
upper bound (``JointMethod``, an oracle: PACE's FSA once on every session's training data, then ridge)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_pace.backbones import DEFAULT as DEFAULT_BACKBONE
from edge_pace.evaluation.base import as_waves, check_keys, check_session
from edge_pace.method.config import PaceConfig
from edge_pace.runtime.analytic import AnalyticClassifier


class _FeatureMemo:
    """Classifier features z per clip key, valid while the backbone does not change."""

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}
        self.hits = 0

    def features(self, learner, waves: np.ndarray, keys: Sequence[str] | None) -> np.ndarray:
        waves = as_waves(waves)
        if keys is None:
            return learner.features(waves)
        check_keys(waves, keys)
        ck = [f"{k}|{waves.shape[1]}" for k in keys]
        missing = [i for i, k in enumerate(ck) if k not in self.table]
        if missing:
            Z = learner.features(waves[missing])
            self.table.update(zip([ck[i] for i in missing], Z))
        self.hits += len(ck) - len(missing)
        return np.stack([self.table[k] for k in ck])


class PaceMethod:
    """A thin adapter over :class:`PaceLearner` (PACE, its ablations and RanPAC with FSA)."""

    def __init__(self, config: PaceConfig | None = None, backbone: str = DEFAULT_BACKBONE, *, weights: str | None = None,
                 device: str | None = None, name: str = "pace", learner=None) -> None:
        from edge_pace.method.pace import PaceLearner
        from edge_pace.method.training import device_name

        self.name = name
        self.learner = learner if learner is not None else PaceLearner(backbone, config, weights=weights,
                                                                       device=device)
        self.config = self.learner.config
        self.device = device_name(self.learner.device)
        self._memo = _FeatureMemo()
        self.inherited_seconds = 0.0  # time of sessions taken over from another run (see ``branch``)

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        check_keys(waves, keys)
        metrics = self.learner.fit_session(index, waves, labels)
        if metrics.get("adapted", True):
            self._memo = _FeatureMemo()  # the backbone changed: features of earlier clips are stale
        return metrics

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        if self.learner.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.learner.classifier.predict(self._memo.features(self.learner, waves, keys))

    def branch(self, name: str, **changes: Any) -> "PaceMethod":
        """A copy of this learner after session 0 continued as another configuration.

        Only ``use_msa=False`` is allowed: PACE's session 0 does not depend on it (the test suite holds
        a branch equal to a fresh run), so ``pace-no-msa`` can reuse ``pace``'s session 0."""
        if set(changes) != {"use_msa"} or changes["use_msa"] is not False:
            raise ValueError(f"branch supports only use_msa=False, got {changes}")
        if self.learner.sessions_done != 1:
            raise RuntimeError(f"branch needs a learner right after session 0 (it has {self.learner.sessions_done} "
                               "sessions)")
        learner = copy.deepcopy(self.learner)
        learner.config = learner.config.replace(use_msa=False)
        learner.frozen = True  # what fit_session(0) sets when use_msa is False
        if learner.history:
            learner.history[-1]["frozen"] = True
        out = PaceMethod(name=name, learner=learner)
        out._memo = copy.deepcopy(self._memo)
        return out


class JointMethod:
    """Upper bound (an oracle, see the module docstring): ``prepare`` adapts the backbone once on every
    session's training data (PACE FSA); ``fit_session`` adds the session's classes to the ridge."""

    def __init__(self, config: PaceConfig | None = None, backbone: str = DEFAULT_BACKBONE, *, weights: str | None = None,
                 device: str | None = None, name: str = "joint") -> None:
        from edge_pace.method.pace import PaceLearner
        from edge_pace.method.training import device_name

        cfg = (config if config is not None else PaceConfig()).replace(use_msa=False)
        self.name = name
        self.learner = PaceLearner(backbone, cfg, weights=weights, device=device)
        self.device = device_name(self.learner.device)
        self.classifier: AnalyticClassifier | None = None
        self._memo = _FeatureMemo()
        self.sessions_done = 0

    def prepare(self, waves: np.ndarray, labels: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Adapt the backbone (FSA) on the union of all sessions' training data; choose gamma there."""
        if self.learner.sessions_done:
            raise RuntimeError("prepare() runs once, before session 0")
        metrics = self.learner.fit_session(0, waves, labels)
        self.classifier = AnalyticClassifier(self.learner.config.d_proj, self.learner.classifier.gamma,
                                             keep_features=True)
        return metrics

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        if self.classifier is None:
            raise RuntimeError("joint needs prepare(all training waves, labels) before session 0")
        check_session(self.sessions_done, index, waves, labels, keys)
        t0 = time.perf_counter()
        self.classifier.learn(self._memo.features(self.learner, waves, keys), [str(x) for x in labels])
        cfg = self.learner.config
        self.classifier.choose_gamma(cfg.gamma_fallback, cfg.gamma_grid, cfg.gamma_criterion)  # the same rule
        self.sessions_done += 1
        return {"session": index, "n_train": len(labels), "gamma": self.classifier.gamma,
                "seconds": time.perf_counter() - t0}

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        if self.classifier is None or not self.classifier.classes:
            raise RuntimeError("no session learned yet")
        return self.classifier.predict(self._memo.features(self.learner, waves, keys))


__all__ = ["PaceMethod", "JointMethod"]
