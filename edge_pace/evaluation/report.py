"""The bench's outputs: ``results.md`` (one table per benchmark and the mean over benchmarks), ``results.json``
(the same plus per-session and per-task accuracies, session times and settings) and one
``curves_<benchmark>.png`` per benchmark, rewritten after every run (edge_pace/evaluation/bench.py)."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.evaluation.baselines import frozen_methods
from edge_pace.evaluation.metrics import plot_curve, save_metrics_json
from edge_pace.runtime.atomic import atomic_write_bytes


def pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def bench_markdown(results: Sequence, spec=None, info: dict[str, Any] | None = None) -> str:
    """The results as Markdown: one table per benchmark and the mean over benchmarks."""
    import torch

    lines = ["# edge-pace bench", ""]
    if spec is not None:
        cfg = spec.config
        lines += [f"- backbone: {spec.backbone}; clips {spec.duration:g} s; seed {spec.seed}; "
                  f"train/test clips per class: {spec.train_per_class or 'all'}/{spec.test_per_class or 'all'}",
                  f"- PaceConfig: e0={cfg.e0}, msa_epochs={cfg.msa_epochs}, n_stop={cfg.n_stop}, d_proj={cfg.d_proj}, "
                  f"lora_rank={cfg.lora_rank}, n_perturb={cfg.n_perturb}, batch={cfg.batch_size}, "
                  f"lr_backbone={cfg.lr_backbone}, lr_head={cfg.lr_head}, msa_lr={cfg.msa_lr}",
                  f"- host: {platform.machine()} {platform.processor() or ''} ({_cpu_count()} CPUs), "
                  f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
                  "- accuracies in % (average incremental = mean over sessions of the accuracy on all classes "
                  "seen so far; forgetting: Chaudhry et al.); wall time = build + all sessions + evaluations", ""]
    benchmarks = list(dict.fromkeys(r.benchmark for r in results))
    for b in benchmarks:
        rows = [r for r in results if r.benchmark == b]
        bi = (info or {}).get("benchmarks", {}).get(b, {})
        lines.append(f"## {b}")
        if bi:
            lines.append(f"{bi['kind']}: {bi['classes']} classes, sessions {bi['session_sizes']}, "
                         f"{bi['n_train']} train / {bi['n_test']} test clips.")
            if "embed_seconds" in bi:
                lines.append(f"Frozen embeddings for {', '.join(frozen_methods())} (shared cache): {bi['embedded']} "
                             f"computed + {bi['embed_cached']} cached in {bi['embed_seconds']:.1f} s (not in their "
                             "wall times).")
        lines += ["", "| method | avg. incremental acc. | last acc. | forgetting | wall time (s) | device |",
                  "|---|---|---|---|---|---|"]
        best_avg = max((r.metrics.average_incremental_accuracy for r in rows if r.ok), default=float("nan"))
        for r in rows:
            m = r.metrics
            if not r.ok:
                lines.append(f"| {r.method} | failed: {r.error} | | | {r.seconds:.1f} | {r.device} |")
                continue
            avg = pct(m.average_incremental_accuracy)
            if m.average_incremental_accuracy == best_avg and len(rows) > 1:
                avg = f"**{avg}**"
            note = f" ({'; '.join(r.notes)})" if r.notes else ""
            lines.append(f"| {r.method} | {avg} | {pct(m.last_accuracy)} | {pct(m.forgetting)} | "
                         f"{r.seconds:.1f}{note} | {r.device} |")
        lines += ["", f"![{b}](curves_{b}.png)", ""]
    if len(benchmarks) > 1:
        methods = list(dict.fromkeys(r.method for r in results))
        lines += ["## mean over benchmarks", "", "| method | avg. incremental acc. | last acc. | forgetting | "
                  "total wall time (s) | benchmarks |", "|---|---|---|---|---|---|"]
        for meth in methods:
            rows = [r for r in results if r.method == meth and r.ok]
            if not rows:
                continue
            mean = lambda xs: float(np.nanmean(xs)) if np.isfinite(xs).any() else float("nan")  # noqa: E731
            lines.append(f"| {meth} | {pct(mean([r.metrics.average_incremental_accuracy for r in rows]))} | "
                         f"{pct(mean([r.metrics.last_accuracy for r in rows]))} | "
                         f"{pct(mean([r.metrics.forgetting for r in rows]))} | "
                         f"{sum(r.seconds for r in rows):.1f} | {len(rows)} |")
        lines.append("")
    return "\n".join(lines)


def _cpu_count() -> int:
    return os.cpu_count() or 1


def write_outputs(results: Sequence, spec, info: dict[str, Any] | None = None) -> dict[str, Path]:
    """results.md, results.json and one curves_<benchmark>.png per benchmark in ``spec.out``."""
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    md = out / "results.md"
    atomic_write_bytes(md, bench_markdown(results, spec, info).encode())
    paths["markdown"] = md
    settings = {"methods": spec.methods, "benchmarks": [list(b) for b in spec.benchmarks], "backbone": spec.backbone,
                "weights": spec.weights, "device": spec.device, "duration": spec.duration, "seed": spec.seed,
                "train_per_class": spec.train_per_class, "test_per_class": spec.test_per_class,
                "config": spec.config.to_dict()}
    paths["json"] = save_metrics_json(out / "results.json", {"settings": settings, "info": info or {},
                                                             "runs": [r.to_dict() for r in results]})
    for b in dict.fromkeys(r.benchmark for r in results):
        rows = [r for r in results if r.benchmark == b and r.ok]
        if not rows:
            continue
        paths[f"png:{b}"] = plot_curve(out / f"curves_{b}.png", {r.method: r.metrics.acc_per_session for r in rows},
                                       x=rows[0].classes_seen, title=f"{b}: accuracy on seen classes",
                                       xlabel="classes seen")
    return paths


__all__ = ["bench_markdown", "write_outputs", "pct"]
