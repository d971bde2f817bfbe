"""Methods x benchmarks on the class-incremental protocol: the figures behind ``edge-pace bench``.

For every benchmark the clips are listed (``load_dataset``), optionally subsampled per class (seeded),
cut into sessions by ``make_sessions`` with the benchmark's default protocol (``protocol_for``) and
decoded once. Every method then learns the sessions in order and, after each, predicts the test clips
of all classes seen so far. Outputs, in ``out``:

* ``results.md``: per benchmark, a table of average incremental accuracy, last accuracy, forgetting
  (``edge_pace.evaluation.metrics``), wall time per run and device, plus the mean over benchmarks;
* ``results.json``: the same plus per-session and per-task accuracies, session times and settings;
* ``curves_<benchmark>.png``: accuracy on seen classes after each session, all methods.

Both files are rewritten after every run, so a long bench can be watched and an interrupted one
resumed (``resume=True`` keeps finished runs whose settings match).

Wall time of a run: building the method (loading the backbone), every session's training and every
evaluation. Two runs share work, and their times say so: the frozen-backbone baselines read one
embedding cache (filled before them, its time reported per benchmark), and ``pace-no-msa`` continues
``pace``'s session 0 (identical by construction) and counts that session's time as its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace import backbones
from edge_pace.data.loaders import Clip, load_dataset, read_clips
from edge_pace.evaluation.baselines import FrozenEmbedder, PaceMethod, check_methods, frozen_methods, make_method
from edge_pace.evaluation.metrics import CILMetrics, accuracy_matrix, cil_metrics
from edge_pace.evaluation.protocol import Session, make_sessions, protocol_for
from edge_pace.evaluation.report import pct, write_outputs
from edge_pace.method.config import PaceConfig
from edge_pace.method.sessions import run_sessions

SYNTH_BENCHMARKS = ("environment", "keywords", "speakers", "instruments")


# --------------------------------------------------------------------------------------------- data

@dataclass
class BenchmarkData:
    """One benchmark ready to run: sessions and the decoded audio of every clip they use."""

    name: str
    kind: str
    root: str
    sessions: list[Session]
    audio: np.ndarray  # [n_clips, samples] float32
    row: dict[str, int]  # clip path -> row of ``audio``
    duration: float
    sample_rate: int

    def waves(self, clips: Sequence[Clip]) -> np.ndarray:
        return self.audio[[self.row[c.path] for c in clips]]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "root": self.root, "duration": self.duration,
                "classes": len(self.sessions[-1].seen), "session_sizes": [len(s.classes) for s in self.sessions],
                "n_train": sum(len(s.train) for s in self.sessions), "n_test": len(self.sessions[-1].test)}


def subsample(clips: Sequence[Clip], split: str, per_class: int | None, seed: int) -> list[Clip]:
    """At most ``per_class`` clips of ``split`` per class, drawn with a seeded generator; other clips kept."""
    if per_class is None:
        return list(clips)
    if per_class < 1:
        raise ValueError(f"per-class limit must be >= 1, got {per_class}")
    rng = np.random.default_rng([seed, 7919, 0 if split == "train" else 1])
    by_class: dict[str, list[Clip]] = {}
    for c in clips:
        if c.split == split:
            by_class.setdefault(c.label, []).append(c)
    keep = set()
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda c: c.path)
        idx = rng.permutation(len(items))[:per_class]
        keep.update(items[i].path for i in idx)
    return [c for c in clips if c.split != split or c.path in keep]


def load_benchmark(name: str, kind: str, root: str | Path, sample_rate: int, duration: float = 1.0, seed: int = 0,
                   train_per_class: int | None = None, test_per_class: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> BenchmarkData:
    """List, subsample, cut into sessions (``protocol_for(kind)``) and decode one benchmark."""
    clips = load_dataset(kind, root)
    clips = subsample(subsample(clips, "train", train_per_class, seed), "test", test_per_class, seed)
    sessions = make_sessions(clips, **protocol_for(kind), seed=seed)
    used = sorted({c.path: c for s in sessions for c in [*s.train, *s.test]}.values(), key=lambda c: c.path)
    audio, kept = read_clips(used, sample_rate, duration=duration, strict=True, progress=progress)
    return BenchmarkData(name, kind, str(root), sessions, audio, {c.path: i for i, c in enumerate(kept)},
                         duration, sample_rate)


# --------------------------------------------------------------------------------------------- runs

@dataclass
class RunResult:
    """One method on one benchmark."""

    benchmark: str
    method: str
    metrics: CILMetrics
    seconds: float
    device: str
    session_seconds: list[float]  # training time of each session (fit_session)
    classes_seen: list[int]
    settings: str  # fingerprint of everything that determines the result
    notes: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # per-session metrics of the method
    error: str | None = None  # why the run failed (metrics are then NaN)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = self.metrics.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        m = dict(d["metrics"])
        nan = float("nan")
        fix = lambda v: nan if v is None else v  # noqa: E731  (JSON null -> NaN)
        metrics = CILMetrics(average_incremental_accuracy=fix(m["average_incremental_accuracy"]),
                             last_accuracy=fix(m["last_accuracy"]), forgetting=fix(m["forgetting"]),
                             acc_per_session=[fix(v) for v in m["acc_per_session"]],
                             per_task_forgetting=[fix(v) for v in m["per_task_forgetting"]],
                             per_task_acc=[[fix(v) for v in row] for row in m["per_task_acc"]])
        return cls(**{**d, "metrics": metrics})


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The small, JSON-friendly part of a session's metrics."""
    keep = ("session", "n_train", "gamma", "l_tune", "cka", "adapted", "frozen", "msa_samples_seen", "seconds",
            "fsa_seconds", "msa_seconds", "probe_seconds", "cache_seconds", "loss", "adaptation")
    out = {k: metrics[k] for k in keep if k in metrics}
    train = metrics.get("train")
    if isinstance(train, dict):
        out["train_loss"] = train.get("loss")
        out["boundary_samples"] = train.get("boundary")
    return out


def run_method(method, data: BenchmarkData, *, start: int = 0, inherited_seconds: float = 0.0,
               y_pred_before: Sequence[list[str]] = (), fit_seconds_before: Sequence[float] = (),
               built_seconds: float = 0.0,
               after_session: Callable[[int, Any, float, list[str]], None] | None = None
               ) -> tuple[list[list[str]], list[float], float]:
    """Learn ``data``'s sessions from ``start`` on and predict after each. Returns (predictions per
    session, fit seconds per session, wall seconds). Sessions before ``start`` were learned by
    someone else: their predictions, fit times and wall time come in ``y_pred_before``,
    ``fit_seconds_before`` and ``inherited_seconds``. ``after_session(t, method, elapsed, y_pred_t)``
    runs after session t's evaluation (``elapsed`` = wall time so far)."""
    if len(y_pred_before) != start or len(fit_seconds_before) != start:
        raise ValueError(f"starting at session {start} needs {start} earlier predictions and fit times")
    t0 = time.perf_counter() - built_seconds - inherited_seconds
    if start == 0 and hasattr(method, "prepare"):
        train = [c for s in data.sessions for c in s.train]
        method.prepare(data.waves(train), [c.label for c in train], [c.path for c in train])

    def learn(s: Session):
        return method.fit_session(s.index, data.waves(s.train), [c.label for c in s.train], [c.path for c in s.train])

    def evaluate(s: Session):
        return method.predict(data.waves(s.test), [c.path for c in s.test]), [c.label for c in s.test]

    def after(r) -> None:
        if after_session is not None:
            after_session(r.index, method, time.perf_counter() - t0, r.y_pred)

    runs = run_sessions(data.sessions, learn, evaluate, start=start, after=after)
    return ([list(p) for p in y_pred_before] + [r.y_pred for r in runs],
            [float(x) for x in fit_seconds_before] + [r.fit_seconds for r in runs], time.perf_counter() - t0)


def _failed(benchmark: str, method: str, data: BenchmarkData, fp: str, error: str, seconds: float, device: str,
            notes: list[str]) -> RunResult:
    T = len(data.sessions)
    nan = float("nan")
    metrics = CILMetrics(nan, nan, nan, [nan] * T, [nan] * max(T - 1, 0), [[nan] * T for _ in range(T)])
    return RunResult(benchmark, method, metrics, seconds, device, [], [len(s.seen) for s in data.sessions], fp,
                     notes, [], error)


def _history(method) -> list[dict[str, Any]]:
    learner = getattr(method, "learner", None)
    return [_summary(h) for h in getattr(learner, "history", [])] if learner is not None else []


def settings_fingerprint(method: str, data: BenchmarkData, config: PaceConfig, backbone: str,
                         weights: str | None) -> str:
    blob = json.dumps({"method": method, "data": data.describe(), "config": config.to_dict(),
                       "backbone": backbone, "weights": weights,
                       "order": [s.classes for s in data.sessions]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _execution_order(methods: Sequence[str]) -> list[str]:
    """The given order, except that ``pace-no-msa`` runs right after ``pace`` (it continues its session 0)."""
    order = list(methods)
    if "pace" in order and "pace-no-msa" in order and order.index("pace-no-msa") < order.index("pace"):
        order.remove("pace-no-msa")
        order.insert(order.index("pace") + 1, "pace-no-msa")
    return order


@dataclass
class BenchSpec:
    """What to run and where to put it."""

    methods: list[str]
    benchmarks: list[tuple[str, str, str]]  # (name, kind, root)
    config: PaceConfig
    out: Path
    backbone: str = backbones.DEFAULT
    weights: str | None = None
    device: str = "auto"
    duration: float = 1.0
    seed: int = 0
    train_per_class: int | None = None
    test_per_class: int | None = None
    cache_dir: Path | None = None
    resume: bool = False
    share_session0: bool = True  # pace-no-msa continues pace's session 0

    def check(self) -> None:
        check_methods(self.methods)
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat: {self.methods}")
        if not self.benchmarks:
            raise ValueError("no benchmark to run")


def run_bench(spec: BenchSpec, log: Callable[[str], None] = print, quiet: bool = False) -> list[RunResult]:
    """Run every method on every benchmark; rewrite the outputs in ``spec.out`` after each run."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn)

    spec.check()
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    sample_rate = backbones.get_spec(spec.backbone).sample_rate
    frozen = frozen_methods()
    old: dict[tuple[str, str], RunResult] = {}
    if spec.resume and (out / "results.json").is_file():
        for d in json.loads((out / "results.json").read_text()).get("runs", []):
            r = RunResult.from_dict(d)
            old[(r.benchmark, r.method)] = r
    results: list[RunResult] = []
    info: dict[str, Any] = {"benchmarks": {}}
    order = _execution_order(spec.methods)
    embedder: FrozenEmbedder | None = None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=quiet)
    with progress:
        overall = progress.add_task("bench", total=len(order) * len(spec.benchmarks))
        for name, kind, root in spec.benchmarks:
            t = time.perf_counter()
            task = progress.add_task(f"{name}: reading clips", total=None)
            data = load_benchmark(name, kind, root, sample_rate, spec.duration, spec.seed, spec.train_per_class,
                                  spec.test_per_class, progress=lambda i, n: progress.update(task, completed=i,
                                                                                            total=n))
            progress.remove_task(task)
            binfo = data.describe()
            binfo["read_seconds"] = time.perf_counter() - t
            info["benchmarks"][name] = binfo
            log(f"{name}: {binfo['classes']} classes, sessions {binfo['session_sizes']}, {binfo['n_train']} train / "
                f"{binfo['n_test']} test clips, read in {binfo['read_seconds']:.1f} s")
            snapshot: tuple[PaceMethod, dict[str, Any]] | None = None  # pace after session 0
            for mname in order:
                fp = settings_fingerprint(mname, data, spec.config, spec.backbone, spec.weights)
                prev = old.get((name, mname))
                if prev is not None and prev.ok and prev.settings == fp:
                    results.append(prev)
                    log(f"{name} / {mname}: kept from {out / 'results.json'} (same settings)")
                    progress.advance(overall)
                    write_outputs(results, spec, info)
                    continue
                if mname in frozen and embedder is None:
                    embedder = FrozenEmbedder(spec.backbone, weights=spec.weights, device=spec.device,
                                              batch=spec.config.embed_batch, cache_dir=spec.cache_dir)
                if mname in frozen and "embed_seconds" not in binfo:
                    # fill the cache once for all frozen-backbone methods; its time is reported per benchmark
                    te, n0 = time.perf_counter(), embedder.n_embedded
                    clips = sorted({c.path: c for s in data.sessions for c in [*s.train, *s.test]}.values(),
                                   key=lambda c: c.path)
                    embedder.embed(data.waves(clips), [c.path for c in clips])
                    binfo["embed_seconds"] = time.perf_counter() - te
                    binfo["embedded"] = embedder.n_embedded - n0
                    binfo["embed_cached"] = len(clips) - binfo["embedded"]
                    log(f"{name}: frozen {spec.backbone} embeddings for {', '.join(frozen)}: "
                        f"{binfo['embedded']} computed, {binfo['embed_cached']} from the cache, "
                        f"{binfo['embed_seconds']:.1f} s")
                stask = progress.add_task(f"{name} / {mname}", total=len(data.sessions))
                notes: list[str] = []
                tb = time.perf_counter()
                kwargs: dict[str, Any] = {}
                if mname == "pace-no-msa" and snapshot is not None:
                    method, kwargs = snapshot
                    snapshot = None
                    notes.append("session 0 shared with pace")
                else:
                    method = make_method(mname, spec.config, spec.backbone, weights=spec.weights,
                                         device=spec.device, embedder=embedder, cache_dir=spec.cache_dir)
                built = time.perf_counter() - tb
                share = mname == "pace" and spec.share_session0 and "pace-no-msa" in order

                def after(t: int, m, elapsed: float, y_t: list[str], _share: bool = share,
                          _task=stask) -> None:
                    nonlocal snapshot
                    progress.update(_task, completed=t + 1)
                    if _share and t == 0:
                        snapshot = (m.branch("pace-no-msa", use_msa=False),
                                    {"start": 1, "inherited_seconds": elapsed, "y_pred_before": [y_t],
                                     "fit_seconds_before": [m.learner.history[0].get("seconds", float("nan"))]})

                progress.update(stask, completed=kwargs.get("start", 0))
                try:
                    y_pred, fit_s, seconds = run_method(method, data, built_seconds=built, after_session=after,
                                                        **kwargs)
                except (FloatingPointError, RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
                    # one failing run (e.g. a diverging learning rate) must not lose the others
                    seconds = time.perf_counter() - tb
                    r = _failed(name, mname, data, fp, f"{type(exc).__name__}: {exc}", seconds,
                                getattr(method, "device", spec.device), notes)
                    log(f"{name} / {mname}: FAILED after {seconds:.1f} s: {r.error}")
                else:
                    y_true = [[c.label for c in s.test] for s in data.sessions]
                    acc, mat = accuracy_matrix(y_true, y_pred, [s.classes for s in data.sessions])
                    metrics = cil_metrics(acc, mat)
                    r = RunResult(name, mname, metrics, seconds, method.device, fit_s,
                                  [len(s.seen) for s in data.sessions], fp, notes, _history(method))
                    log(f"{name} / {mname}: avg {100 * metrics.average_incremental_accuracy:.2f} %, last "
                        f"{100 * metrics.last_accuracy:.2f} %, forgetting {pct(metrics.forgetting)} %, "
                        f"{seconds:.1f} s on {method.device}")
                progress.remove_task(stask)
                results.append(r)
                del method
                progress.advance(overall)
                write_outputs(results, spec, info)
    return results


def synth_benchmarks(data: Path, names: Sequence[str], scale: float, seed: int = 0,
                     log: Callable[[str], None] = print) -> list[tuple[str, str, str]]:
    """(name, kind, root) of offline benchmarks under ``data``: synthetic ones (missing ones are rendered at
    ``scale``) and ``real`` (the real-recordings benchmark of ``edge-pace data real DATA``, which must exist)."""
    from edge_pace.data.synth import BENCHMARKS, synthesize

    if "real" in names and not (data / "real" / "manifest.csv").is_file():
        raise ValueError(f"no real-recordings benchmark in {data / 'real'}: build it with `edge-pace data real {data}`")
    unknown = [n for n in names if n not in BENCHMARKS and n != "real"]
    if unknown:
        raise ValueError(f"unknown synthetic benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    missing = [n for n in names if n != "real" and not (data / n / "manifest.csv").is_file()]
    if missing:
        log(f"rendering missing benchmark(s) {missing} into {data} at scale {scale}")
        synthesize(data, benchmarks=missing, scale=scale, seed=seed, progress=False)
    return [("real", "real", str(data / "real")) if n == "real" else (n, f"synth:{n}", str(data)) for n in names]


__all__ = ["BenchmarkData", "BenchSpec", "RunResult", "SYNTH_BENCHMARKS", "load_benchmark", "subsample",
           "run_method", "run_bench", "synth_benchmarks", "settings_fingerprint"]
