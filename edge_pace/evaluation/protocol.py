"""Class-incremental protocol: a seeded class order cut into sessions (B-inc: a larger base session 0,
then equal incremental sessions). Session t trains on the train clips of its own new classes only and is
tested on the test clips of every class seen so far.

Class order: the sorted class names permuted by ``numpy.random.default_rng(seed).permutation`` (or an
explicit ``class_order``). Session sizes, for C classes:

* ``n_sessions == 1``: all classes in session 0 (joint training).
* base: ``n_base`` if given, else ``floor(base_fraction * C + 0.5)``, clamped to [1, C - 1].
* ``inc`` and ``n_sessions`` both given (and no ``n_base``): base = C - inc * (n_sessions - 1), exact.
* only ``inc``: sessions of ``inc`` classes; the last one takes the remainder (may be smaller).
* only ``n_sessions``: the C - base remaining classes split into n_sessions - 1 near-equal sessions
  (sizes differ by at most one, larger ones first).
* neither: ``n_sessions = 6`` (5 incremental sessions), fewer if there are fewer remaining classes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_pace.data.loaders import Clip

log = logging.getLogger(__name__)

DEFAULT_INCREMENTAL_SESSIONS = 5

# Default schedules per benchmark (our choices; the paper does not publish its class splits).
# ESC-50 (50 classes): B25 + 5 x 5.  US8K (10): B5 + 5 x 1.  SC2 (35): B18 + 5 sessions (4,4,3,3,3).
# TIMIT-k (our reading of the name): half the speakers in session 0, then k new speakers per session.
# The paper's TIMIT-3 scores higher than TIMIT-2 with the same joint upper bound: fewer, larger steps fit.
# VocalSet singers (20): B10 + 5 x 2.
BENCHMARK_PROTOCOLS: dict[str, dict] = {
    "esc50": {"base_fraction": 0.5, "inc": 5},
    "us8k": {"base_fraction": 0.5, "inc": 1},
    "sc2": {"base_fraction": 0.5, "n_sessions": 6},
    "timit2": {"base_fraction": 0.5, "inc": 2},
    "timit3": {"base_fraction": 0.5, "inc": 3},
    "vocalset": {"base_fraction": 0.5, "inc": 2},
    "vocalset_technique": {"base_fraction": 0.6, "inc": 2},
    "folder": {"base_fraction": 0.5},  # 5 incremental sessions, fewer when there are fewer classes
    "synth": {"base_fraction": 0.5},
    "real": {"base_fraction": 0.5},  # edge-pace data real (20 classes): B10 + 5 x 2
}


def protocol_for(kind: str) -> dict:
    """``make_sessions`` keyword arguments for a dataset kind (``synth:<x>`` -> ``synth``)."""
    base = kind.partition(":")[0]
    if base not in BENCHMARK_PROTOCOLS:
        raise ValueError(f"no default protocol for {kind!r}; known: {', '.join(BENCHMARK_PROTOCOLS)}")
    return dict(BENCHMARK_PROTOCOLS[base])


@dataclass
class Session:
    """One class-incremental session."""

    index: int
    classes: list[str]  # new classes of this session
    seen: list[str]  # all classes seen so far (in order)
    train: list[Clip] = field(default_factory=list)  # only this session's classes, train split
    test: list[Clip] = field(default_factory=list)  # all seen classes, test split


def class_order(labels: Sequence[str], seed: int = 0) -> list[str]:
    """Sorted unique labels permuted with ``default_rng(seed)``."""
    classes = sorted(set(labels))
    perm = np.random.default_rng(seed).permutation(len(classes))
    return [classes[i] for i in perm]


def session_sizes(n_classes: int, base_fraction: float = 0.5, n_sessions: int | None = None,
                  inc: int | None = None, n_base: int | None = None) -> list[int]:
    """Number of new classes per session (rules: module docstring)."""
    C = n_classes
    if C < 1:
        raise ValueError("need at least one class")
    if n_sessions is not None and n_sessions < 1:
        raise ValueError(f"n_sessions must be >= 1, got {n_sessions}")
    if inc is not None and inc < 1:
        raise ValueError(f"inc must be >= 1, got {inc}")
    if n_sessions == 1 or C == 1:
        return [C]
    if n_base is not None:
        if not 1 <= n_base < C:
            raise ValueError(f"n_base must be in [1, {C - 1}] for {C} classes, got {n_base}")
        base = n_base
    elif inc is not None and n_sessions is not None:
        base = C - inc * (n_sessions - 1)
        if base < 1:
            raise ValueError(f"inc={inc} x {n_sessions - 1} incremental sessions needs more than {C} classes")
    else:
        if not 0.0 < base_fraction < 1.0:
            raise ValueError(f"base_fraction must be in (0, 1) when there are incremental sessions, got {base_fraction}")
        base = min(C - 1, max(1, int(math.floor(base_fraction * C + 0.5))))
    rest = C - base
    if inc is not None:
        sizes = [inc] * (rest // inc) + ([rest % inc] if rest % inc else [])
        if n_sessions is not None and len(sizes) != n_sessions - 1:
            raise ValueError(f"{rest} classes after a base of {base} do not make {n_sessions - 1} sessions of {inc}")
    else:
        k = min(rest, (n_sessions - 1) if n_sessions is not None else DEFAULT_INCREMENTAL_SESSIONS)
        if n_sessions is not None and k < n_sessions - 1:
            raise ValueError(f"only {rest} classes remain after a base of {base}: cannot make {n_sessions - 1} sessions")
        sizes = [len(a) for a in np.array_split(np.arange(rest), k)]
    out = [base] + sizes
    if any(s > base for s in sizes):
        log.warning("session 0 (%d classes) is smaller than a later session (%s)", base, sizes)
    return out


def make_sessions(clips: list[Clip], base_fraction: float = 0.5, n_sessions: int | None = None,
                  inc: int | None = None, seed: int = 0, *, n_base: int | None = None,
                  order: Sequence[str] | None = None) -> list[Session]:
    """Cut ``clips`` into class-incremental sessions (sizes and order: module docstring).

    ``order`` fixes the class order explicitly (it must be a permutation of the labels).
    Raises ValueError when a file appears in both splits (a leak) or a split value is not train/test."""
    bad = sorted({c.split for c in clips} - {"train", "test"})
    if bad:
        raise ValueError(f"clip split must be 'train' or 'test', got {bad}")
    train_paths = {c.path for c in clips if c.split == "train"}
    leaked = sorted({c.path for c in clips if c.split == "test"} & train_paths)
    if leaked:
        raise ValueError(f"{len(leaked)} file(s) are in both train and test, e.g. {leaked[0]}")
    labels = [c.label for c in clips]
    if order is not None:
        classes = list(order)
        if sorted(classes) != sorted(set(labels)) or len(set(classes)) != len(classes):
            raise ValueError("order must list every class label exactly once")
    else:
        classes = class_order(labels, seed)
    sizes = session_sizes(len(classes), base_fraction, n_sessions, inc, n_base)
    counts = Counter((c.label, c.split) for c in clips)
    for name in classes:
        if counts[(name, "train")] == 0 or counts[(name, "test")] == 0:
            log.warning("class %r has %d train and %d test clip(s)", name, counts[(name, "train")],
                        counts[(name, "test")])
    sessions: list[Session] = []
    start = 0
    for t, size in enumerate(sizes):
        new = classes[start:start + size]
        seen = classes[:start + size]
        new_set, seen_set = set(new), set(seen)
        sessions.append(Session(
            index=t, classes=new, seen=seen,
            train=[c for c in clips if c.split == "train" and c.label in new_set],
            test=[c for c in clips if c.split == "test" and c.label in seen_set]))
        start += size
    return sessions


def check_sessions(sessions: Sequence[Session]) -> None:
    """Raise ValueError if sessions break the protocol: classes overlap across
    sessions, ``seen`` is not the running union, a train clip is of another session's class or of the
    test split, a test clip is unseen or of the train split, or a file is in both train and test."""
    seen: list[str] = []
    all_train: set[str] = set()
    all_test: set[str] = set()
    for s in sessions:
        if set(s.classes) & set(seen):
            raise ValueError(f"session {s.index} repeats classes {sorted(set(s.classes) & set(seen))}")
        seen = seen + list(s.classes)
        if list(s.seen) != seen:
            raise ValueError(f"session {s.index}: seen != running union of session classes")
        for c in s.train:
            if c.split != "train" or c.label not in s.classes:
                raise ValueError(f"session {s.index}: train clip {c.path} ({c.label}, {c.split}) does not belong")
        for c in s.test:
            if c.split != "test" or c.label not in seen:
                raise ValueError(f"session {s.index}: test clip {c.path} ({c.label}, {c.split}) does not belong")
        all_train |= {c.path for c in s.train}
        all_test |= {c.path for c in s.test}
    if all_train & all_test:
        raise ValueError(f"test file(s) used in training, e.g. {sorted(all_train & all_test)[0]}")
