"""Do-no-harm first-session adaptation (issue 12): FSA is kept only when it helps classes the server never saw.

FSA exists to prepare the backbone for the classes the device learns later. So session 0 is split:

* ``holdout_split``: about ``holdout_fraction`` of session 0's classes (at least one, drawn with the session's
  seeded generator) are held out as "new" classes; FSA (probe and training) sees only the other classes.
  The held-out classes' clips are split per class into an enrol part and a test part (half each, at least
  one clip in each).
* ``held_out_accuracy``: the device's classifier on given backbone embeddings: the session-0 standardisation
  and random projection (``projection``), ``AnalyticClassifier.learn`` on the adapted classes' clips plus the
  held-out classes' enrol clips (the device learns new classes next to the session-0 ones), gamma by the
  device's own rule (``choose_gamma``, runtime/gamma.py), accuracy on the held-out classes' test clips.
* The learner (``PaceLearner._fsa``) evaluates this after every FSA epoch (early stopping: the best epoch's
  adapter state is kept; ties go to the earlier epoch, the smaller change), for each learning rate of
  ``fsa_lrs``, and compares the best with the frozen backbone's accuracy on the same split. The adapted
  backbone is kept only when it is better by more than ``holdout_margin`` (strictly better by default);
  otherwise every LoRA adapter is removed, the backbone is exactly the pretrained one, and it stays frozen
  for good (no MSA: adaptation that did not help on session 0's held-out classes is not retried on the
  smaller later sessions). ``decision`` writes the record that goes into the session metrics, the checkpoint
  config and the bundle manifest.

The kept adapter is the validated one, trained without the held-out classes' clips (they still go into the
analytic classifier with every other session-0 clip): that is what makes "never worse than frozen on the
held-out classes" hold by construction, at the price of adapting on fewer classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edge_pace.method.projection import RandomProjection, embedding_stats
from edge_pace.runtime.analytic import AnalyticClassifier


@dataclass
class HoldoutSplit:
    """Indices into session 0's clips: ``train`` (the adapted classes), ``enrol`` / ``test`` (held-out classes)."""

    adapt_classes: list[str]
    held_classes: list[str]
    train: torch.Tensor
    enrol: torch.Tensor
    test: torch.Tensor

    def describe(self) -> dict[str, Any]:
        return {"adapt_classes": self.adapt_classes, "held_out_classes": self.held_classes,
                "n_train": len(self.train), "n_enrol": len(self.enrol), "n_test": len(self.test)}


def holdout_split(labels: Sequence[str], fraction: float, g: torch.Generator) -> HoldoutSplit | None:
    """Hold out round(fraction * classes) classes (at least 1, at most classes - 2); None when session 0 cannot
    be split: fewer than three classes (cross-entropy on a single adapted class has nothing to learn), or no
    held-out class with two clips."""
    classes = list(dict.fromkeys(labels))
    if len(classes) < 3:
        return None
    k = min(len(classes) - 2, max(1, int(round(fraction * len(classes)))))
    order = torch.randperm(len(classes), generator=g).tolist()
    held = [classes[i] for i in sorted(order[:k])]
    lab = np.asarray(labels)
    enrol, test = [], []
    for c in held:
        idx = np.flatnonzero(lab == c)
        idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        if len(idx) < 2:
            continue  # one clip cannot be both enrolled and tested: it stays out of adaptation, unused here
        half = len(idx) // 2
        enrol += idx[:half].tolist()
        test += idx[half:].tolist()
    if not test:
        return None
    train = np.flatnonzero(~np.isin(lab, held))
    return HoldoutSplit([c for c in classes if c not in held], held, torch.as_tensor(train),
                        torch.as_tensor(sorted(enrol)), torch.as_tensor(sorted(test)))


def held_out_accuracy(emb: np.ndarray, labels: Sequence[str], split: HoldoutSplit, d_proj: int, proj_seed: int,
                      standardize: str, prior: float, grid: Sequence[float], criterion: str) -> dict[str, Any]:
    """Accuracy on the held-out test clips of the device classifier fitted on train + enrol clips of ``emb``
    ([n, D] backbone embeddings of all session-0 clips), with the device's gamma rule. Returns
    ``{"accuracy", "gamma"}``."""
    lab = np.asarray(labels)
    fit = np.concatenate([split.train.numpy(), split.enrol.numpy()]).astype(int)
    mean = scale = None
    if standardize != "none" and len(fit) >= 2:
        mean, scale = embedding_stats(emb[fit], standardize)
    proj = RandomProjection(emb.shape[1], d_proj, proj_seed, mean, scale)
    clf = AnalyticClassifier(d_proj, prior, keep_features=True)
    clf.learn(proj.numpy(emb[fit]), list(lab[fit]))
    clf.choose_gamma(prior, grid, criterion)
    test = split.test.numpy().astype(int)
    pred = np.asarray(clf.predict(proj.numpy(emb[test])))
    return {"accuracy": float(np.mean(pred == lab[test])), "gamma": float(clf.gamma)}


def decision(frozen: dict[str, Any] | None, best: dict[str, Any] | None, margin: float,
             split: HoldoutSplit | None, reason: str | None = None) -> dict[str, Any]:
    """The do-no-harm record: ``kept`` (adapted backbone kept), held-out accuracies (adapted = the best epoch),
    the chosen epoch and learning rate, the split, and why."""
    out: dict[str, Any] = {"kept": False, "margin": float(margin),
                           "held_out_accuracy": {"frozen": None if frozen is None else frozen["accuracy"],
                                                 "adapted": None if best is None else best["accuracy"]},
                           "split": None if split is None else split.describe()}
    if best is not None:
        out.update(epoch=best["epoch"], lr=best["lr"], gamma={"frozen": frozen["gamma"], "adapted": best["gamma"]})
    if reason is None:
        assert frozen is not None and best is not None
        out["kept"] = best["accuracy"] > frozen["accuracy"] + margin
        verb = "beats" if out["kept"] else "does not beat"
        reason = (f"adapted backbone (epoch {best['epoch']}, lr {best['lr']:g}) {verb} the frozen one on the "
                  f"held-out classes: {100 * best['accuracy']:.1f} % vs {100 * frozen['accuracy']:.1f} % "
                  f"(margin {100 * margin:.1f} points)")
        if not out["kept"]:
            reason += "; frozen backbone kept"
    out["reason"] = reason
    return out


__all__ = ["HoldoutSplit", "holdout_split", "held_out_accuracy", "decision"]
