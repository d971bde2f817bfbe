"""Class-incremental metrics, their JSON/Markdown output and the accuracy-per-session plot.

Notation: sessions t = 0..T-1 (T sessions); task j = the classes first seen in session j.
Accuracies are fractions in [0, 1] (the plot and the Markdown table show percent).

* ``A_t``: top-1 accuracy after session t on the test clips of all classes seen so far (micro-averaged
  over clips, not over tasks).
* ``a[t, j]`` (per-task matrix, shape [T, T]): accuracy after session t on the test clips of task j;
  NaN for j > t (not yet seen) and for a task with no test clips.
* average incremental accuracy = mean_t A_t;  last accuracy = A_{T-1}.
* forgetting (Chaudhry et al., 2018): for every old task j < T-1,
  ``f_j = max_{t in [j, T-2]} a[t, j] - a[T-1, j]``, the drop from the best accuracy the task had
  before the final session to its final accuracy (negative = backward transfer, kept as is);
  forgetting = mean of f_j over old tasks with test clips. With a single session it is 0.0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.runtime.atomic import atomic_write_bytes


@dataclass
class CILMetrics:
    """Summary of one class-incremental run (fractions in [0, 1])."""

    average_incremental_accuracy: float
    last_accuracy: float
    forgetting: float
    acc_per_session: list[float]
    per_task_forgetting: list[float]  # f_j for j = 0..T-2 (NaN for a task without test clips)
    per_task_acc: list[list[float]]  # a[t][j], NaN where undefined

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _check_fraction(values: np.ndarray, name: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError(f"{name}: accuracies must be fractions in [0, 1], got values in "
                         f"[{finite.min():.4g}, {finite.max():.4g}] (percent? divide by 100)")


def accuracy_matrix(y_true: Sequence[Sequence], y_pred: Sequence[Sequence],
                    session_classes: Sequence[Sequence[str]]) -> tuple[list[float], np.ndarray]:
    """From predictions to (A_t list, per-task matrix a[t, j]).

    ``y_true[t]``/``y_pred[t]``: labels of session t's test set (all seen classes) and the predictions
    after session t; ``session_classes[j]``: the new classes of session j."""
    T = len(session_classes)
    if len(y_true) != T or len(y_pred) != T:
        raise ValueError(f"expected {T} evaluation steps (one per session), got {len(y_true)} y_true and "
                         f"{len(y_pred)} y_pred")
    task_of = {c: j for j, cls in enumerate(session_classes) for c in cls}
    acc = []
    mat = np.full((T, T), np.nan)
    for t in range(T):
        yt, yp = np.asarray(y_true[t], dtype=object), np.asarray(y_pred[t], dtype=object)
        if yt.shape != yp.shape or yt.ndim != 1:
            raise ValueError(f"session {t}: y_true and y_pred must be 1-D of equal length, got {yt.shape}, {yp.shape}")
        unknown = {y for y in yt.tolist() if task_of.get(y, T) > t}
        if unknown:
            raise ValueError(f"session {t}: test labels not seen by session {t}: {sorted(map(str, unknown))[:5]}")
        correct = yt == yp
        acc.append(float(correct.mean()) if len(yt) else float("nan"))
        tasks = np.array([task_of[y] for y in yt.tolist()], dtype=int)
        for j in range(t + 1):
            m = tasks == j
            if m.any():
                mat[t, j] = correct[m].mean()
    return acc, mat


def cil_metrics(acc_per_session: Sequence[float], per_task_acc: Sequence[Sequence[float]] | np.ndarray | None = None
                ) -> CILMetrics:
    """Average incremental accuracy, last accuracy and forgetting (definitions: module docstring).
    Without ``per_task_acc`` forgetting is NaN (it needs the per-task matrix)."""
    A = np.asarray(acc_per_session, dtype=float)
    if A.ndim != 1 or A.size == 0:
        raise ValueError(f"acc_per_session must be a non-empty list of per-session accuracies, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("acc_per_session contains NaN/Inf (a session without test clips?)")
    _check_fraction(A, "acc_per_session")
    T = A.size
    if per_task_acc is None:
        mat = np.full((T, T), np.nan)
        f_j = np.full(max(T - 1, 0), np.nan)
        forgetting = 0.0 if T == 1 else float("nan")
    else:
        mat = np.array([[np.nan if v is None else v for v in row] for row in per_task_acc], dtype=float) \
            if not isinstance(per_task_acc, np.ndarray) else per_task_acc.astype(float)
        if mat.shape != (T, T):
            raise ValueError(f"per_task_acc must be a {T}x{T} matrix (sessions x tasks), got shape {mat.shape}")
        _check_fraction(mat, "per_task_acc")
        mat = mat.copy()
        mat[np.triu_indices(T, k=1)] = np.nan
        f_j = np.array([np.nanmax(mat[j:T - 1, j]) - mat[T - 1, j]
                        if np.isfinite(mat[j:T - 1, j]).any() and np.isfinite(mat[T - 1, j]) else np.nan
                        for j in range(T - 1)], dtype=float)
        forgetting = 0.0 if T == 1 else (float(np.nanmean(f_j)) if np.isfinite(f_j).any() else float("nan"))
    return CILMetrics(average_incremental_accuracy=float(A.mean()), last_accuracy=float(A[-1]),
                      forgetting=forgetting, acc_per_session=A.tolist(),
                      per_task_forgetting=f_j.tolist(), per_task_acc=mat.tolist())


def _jsonable(obj: Any) -> Any:
    """numpy / dataclass / Path / NaN -> plain JSON values (NaN and Inf -> null)."""
    if isinstance(obj, CILMetrics):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} to metrics JSON")


def save_metrics_json(path: str | Path, results: Mapping[str, Any] | CILMetrics, **extra: Any) -> Path:
    """Write metrics (a CILMetrics, or a mapping such as {method: CILMetrics, "config": {...}}) plus
    ``extra`` keys as indented JSON; NaN -> null. Atomic (runtime/atomic.py). Returns the path."""
    path = Path(path)
    payload = _jsonable(results)
    if extra:
        payload = {**payload, **_jsonable(extra)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode())


def metrics_markdown(results: Mapping[str, CILMetrics]) -> str:
    """A Markdown table: method | average incremental acc. | last acc. | forgetting (percent, 2 decimals)."""
    def pct(v: float) -> str:
        return "n/a" if not math.isfinite(v) else f"{100 * v:.2f}"

    lines = ["| method | avg. incremental acc. (%) | last acc. (%) | forgetting (%) |", "|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {pct(m.average_incremental_accuracy)} | {pct(m.last_accuracy)} | {pct(m.forgetting)} |")
    return "\n".join(lines) + "\n"


def plot_curve(path_png: str | Path, curves: Mapping[str, Sequence[float]], x: Sequence[float] | None = None,
               title: str | None = None, xlabel: str | None = None) -> Path:
    """Accuracy after each session (fractions, drawn in percent), one line per method, to a PNG.
    ``x`` defaults to the session index; pass e.g. the number of classes seen (with ``xlabel``).
    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves is empty: expected {method: [A_0, A_1, ...]}")
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in curves.items():
        y = np.asarray(ys, dtype=float)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"curve {name!r}: expected a non-empty list of accuracies")
        _check_fraction(y, f"curve {name!r}")
        xs = np.arange(y.size) if x is None else np.asarray(x, dtype=float)[:y.size]
        if xs.size != y.size:
            raise ValueError(f"curve {name!r} has {y.size} points but x has {xs.size}")
        ax.plot(xs, 100.0 * y, marker="o", label=name)
    ax.set_xlabel(xlabel or ("session" if x is None else "classes seen"))
    ax.set_ylabel("accuracy on seen classes (%)")
    if x is None:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # readable with 6 or 160 sessions
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
