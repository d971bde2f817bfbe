"""The PACE bench of issue 12: methods x the five offline benchmarks (four synthetic at scale 1.0 + the real
recordings, all clips) x seeds (class orders), on both cores, as mean +- std.

Each (benchmark, seed) is one `edge-pace bench` process on one thread (`--threads 1 --resume`), two at a time
(``--jobs``), largest benchmarks first; the frozen-backbone embeddings are cached on disk and shared
(`edge_pace.evaluation.frozen.EmbeddingCache`), PACE caches the frozen blocks below L_tune (``cache_stem``).
A rerun keeps every finished run whose settings match. The table (``table.md`` in ``--out``; printed) gives last
and average incremental accuracy per method and benchmark, mean +- std over seeds, the mean wall time of a run,
and the whole bench's wall time. ``--e0 paper`` takes the paper's E0 per dataset (``PAPER_E0``).

    .venv/bin/python benchmarks/pace_bench.py --data out/data --out out/pace_bench --seeds 0,1,2 --e0 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_pace.method.config import paper_e0  # noqa: E402
from edge_pace.method.harm import critical_z  # noqa: E402

BENCHMARKS = ("keywords", "real", "environment", "instruments", "speakers")  # largest first
KINDS = {"real": "real", "keywords": "synth:keywords", "environment": "synth:environment",
         "instruments": "synth:instruments", "speakers": "synth:speakers"}
METHODS = ("acil", "simplecil", "pace", "pace-no-msa", "pace-no-lreg", "pace-naive-fsa", "ranpac", "joint",
           "finetune")
LABELS = {"finetune": "finetune (lower bound)", "simplecil": "SimpleCIL (frozen)", "acil": "ACIL (frozen)",
          "ranpac": "RanPAC with FSA", "joint": "joint (upper bound)", "pace": "**PACE**",
          "pace-no-msa": "PACE without MSA", "pace-no-lreg": "PACE without L_reg",
          "pace-naive-fsa": "PACE with naive FSA"}


# paired differences of last accuracy (same class orders) printed under the table
PAIRS = (("pace", "acil"), ("joint", "acil"), ("joint", "pace"), ("ranpac", "acil"), ("pace-no-lreg", "pace"),
         ("pace-naive-fsa", "pace"), ("finetune", "acil"))


def run_tasks(args: argparse.Namespace) -> float:
    """Run every (benchmark, seed) task, ``args.jobs`` at a time; returns the wall seconds."""
    tasks = [(b, s) for b in args.benchmarks for s in args.seeds]
    waiting, running = list(tasks), []
    t0 = time.perf_counter()
    while waiting or running:
        while waiting and len(running) < args.jobs:
            b, s = waiting.pop(0)
            e0 = paper_e0(KINDS[b]) if args.e0 == "paper" else int(args.e0)
            out = args.out / f"{b}_s{s}"
            cmd = [sys.executable, "-m", "edge_pace.cli", "bench", "--data", str(args.data), "--benchmarks", b,
                   "--methods", ",".join(args.methods), "--seed", str(s), "--e0", str(e0), "--threads", "1",
                   "--quiet", "--resume", "--out", str(out), "--cache", str(args.out / "cache")]
            for kv in args.set or []:
                cmd += ["--set", kv]
            log = open(args.out / f"{b}_s{s}.log", "a")
            print(f"[{time.perf_counter() - t0:7.0f} s] start {b} seed {s} (e0 {e0})", flush=True)
            running.append((b, s, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                                   env={**os.environ, "OMP_NUM_THREADS": "1",
                                                        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}), log))
        time.sleep(2)
        for item in list(running):
            b, s, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"[{time.perf_counter() - t0:7.0f} s] done {b} seed {s}: exit {proc.returncode}", flush=True)
    return time.perf_counter() - t0


def redecide(record: dict) -> bool | None:
    """The current do-no-harm rule (harm.better) applied to a recorded decision: True keep, False frozen, None when
    the record cannot tell (runs recorded before the per-clip accuracy test: its z is bounded by sqrt(clips won))."""
    acc = record["held_out_accuracy"]
    if acc["adapted"] is None or acc["frozen"] is None:
        return False
    zc = critical_z(record.get("margin_z", 2.0), max(1, len(record.get("curve") or [])))
    z = record.get("paired_margin_z")
    margin_route = acc["adapted"] >= acc["frozen"] + record["margin"] and z is not None and z > zc
    if "mcnemar_z" in record:
        return margin_route or (acc["adapted"] > acc["frozen"] + record["margin"] and record["mcnemar_z"] > zc)
    n = record["split"]["n_enrol"] + record["split"]["n_test"]
    won = round((acc["adapted"] - acc["frozen"]) * n)
    if margin_route:
        return True
    return None if won > 0 and math.sqrt(won) > zc else False


def collect(out: Path, rule: bool = False) -> dict[tuple[str, str], list[dict]]:
    """Runs per (benchmark, method). ``rule``: adaptations kept under the recorded rule that the current rule
    (``redecide``) rejects are replaced by the frozen-backbone classifier's run of the same seed (ACIL: a rejected
    adaptation leaves exactly the pretrained backbone, so the device serves exactly what ACIL measured)."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for f in sorted(out.glob("*_s*/results.json")):
        found = [r for r in json.loads(f.read_text()).get("runs", []) if not r.get("error")]
        acil = next((r for r in found if r["method"] == "acil"), None)
        for r in found:
            r["settings_seed"] = f.parent.name.rsplit("_s", 1)[1]
            record = (r.get("history") or [{}])[0].get("adaptation")
            if rule and record and record["kept"] and acil is not None:
                new = redecide(record)
                r["redecided"] = new
                if new is False:
                    r["metrics"] = acil["metrics"]
            runs.setdefault((r["benchmark"], r["method"]), []).append(r)
    return runs


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    v = 100 * np.asarray(values)
    return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"


def table(runs: dict[tuple[str, str], list[dict]], benchmarks, methods, wall: float | None) -> str:
    lines = ["| method | " + " | ".join(f"{b} last / avg" for b in benchmarks) + " | mean last | s per run |",
             "|---|" + "---|" * (len(benchmarks) + 2)]
    for m in methods:
        cells, lasts, secs = [], [], []
        for b in benchmarks:
            rs = runs.get((b, m), [])
            last = [r["metrics"]["last_accuracy"] for r in rs]
            avg = [r["metrics"]["average_incremental_accuracy"] for r in rs]
            cells.append(f"{fmt(last)} / {fmt(avg)} (n={len(rs)})" if rs else "–")
            if rs:
                lasts.append(np.mean(last))
                secs += [r["seconds"] for r in rs]
        mean_last = f"{100 * np.mean(lasts):.2f}" if len(lasts) == len(benchmarks) else "–"
        seconds = f"{np.mean(secs):.0f}" if secs else "–"
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + f" | {mean_last} | {seconds} |")
    # paired differences (same class orders): what adaptation adds over the frozen backbone, per benchmark
    for a, b_ in PAIRS:
        cells = []
        for b in benchmarks:
            x = {r["settings_seed"]: r["metrics"]["last_accuracy"] for r in runs.get((b, a), [])}
            y = {r["settings_seed"]: r["metrics"]["last_accuracy"] for r in runs.get((b, b_), [])}
            common = sorted(set(x) & set(y))
            if not common:
                cells.append("–")
                continue
            d = [x[k] - y[k] for k in common]
            cells.append(f"{fmt(d)} (n={len(common)}, {sum(v > 0 for v in d)}+/{sum(v < 0 for v in d)}−)")
        lines.append(f"| {a} − {b_} (last, paired) | " + " | ".join(cells) + " | | |")
    # what adaptation did: PACE's do-no-harm decisions (as re-decided, when the current rule was re-applied)
    kept = [(b, h[0]["adaptation"], r.get("redecided", h[0]["adaptation"]["kept"]) is not False)
            for (b, m), rs in runs.items() if m == "pace" for r in rs
            for h in [r.get("history") or [{}]] if h and "adaptation" in h[0]]
    if kept:
        lines.append("")
        lines.append("PACE session 0 (do-no-harm, recorded): " + "; ".join(
            f"{b}: {'kept' if a['kept'] else 'frozen'} (held-out {100 * (a['held_out_accuracy']['adapted'] or 0):.1f}"
            f" vs {100 * (a['held_out_accuracy']['frozen'] or 0):.1f} %, z {a.get('paired_margin_z') or 0:.1f}, "
            f"L_tune {a.get('l_tune')})" for b, a, _ in sorted(kept, key=lambda x: x[0])))
        for b in benchmarks:
            n = sum(1 for bb, _, k in kept if bb == b and k)
            m = sum(1 for bb, _, _ in kept if bb == b)
            if m:
                lines.append(f"- {b}: adaptation kept in {n} of {m} class orders")
    if wall is not None:
        lines.append(f"\nwhole bench: {wall / 60:.1f} min wall on this machine")
    return "\n".join(lines)


def compact(runs: dict[tuple[str, str], list[dict]], benchmarks, methods) -> str:
    """The README's table: last accuracy (average incremental) per method and benchmark, mean +- std, n orders."""
    def cell(rs: list[dict]) -> str:
        if not rs:
            return "–"
        last = [r["metrics"]["last_accuracy"] for r in rs]
        avg = [r["metrics"]["average_incremental_accuracy"] for r in rs]
        n = "" if len(rs) == 3 else f", n={len(rs)}"
        return f"{fmt(last)} ({fmt(avg)}{n})"

    lines = ["| method | " + " | ".join(benchmarks) + " |", "|---|" + "---|" * len(benchmarks)]
    for m in methods:
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cell(runs.get((b, m), [])) for b in benchmarks) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "out" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "pace_bench")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--e0", default="2", help="FSA epochs, or 'paper' (the paper's E0 per dataset)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at a time (one thread each)")
    ap.add_argument("--set", action="append", help="PaceConfig override KEY=VALUE (repeatable)")
    ap.add_argument("--table-only", action="store_true", help="only collect and print the table")
    ap.add_argument("--compact", action="store_true", help="also print the README's compact table")
    ap.add_argument("--current-rule", action="store_true", help="re-apply the current do-no-harm rule to the "
                    "recorded decisions (runs made before a rule change; see ``collect``)")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.benchmarks = [b for b in args.benchmarks.split(",") if b]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [b for b in args.benchmarks if b not in KINDS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(KINDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    wall = None if args.table_only else run_tasks(args)
    runs = collect(args.out, args.current_rule)
    text = table(runs, args.benchmarks, args.methods, wall)
    if args.current_rule:
        flips = [(b, m, r["settings_seed"], r["redecided"]) for (b, m), rs in runs.items() for r in rs
                 if "redecided" in r]
        text += "\n\nCurrent do-no-harm rule re-applied to the recorded decisions (kept -> frozen = the ACIL run): " + \
            "; ".join(f"{m} {b} seed {s}: {'kept' if v else 'frozen' if v is False else 'undecidable, kept'}"
                      for b, m, s, v in sorted(flips))
    if args.compact:
        text += "\n\n" + compact(runs, args.benchmarks, args.methods)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
