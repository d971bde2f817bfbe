"""``edge-pace adapt`` (server-side PACE sessions -> checkpoint) and ``edge-pace bench`` (methods x
benchmarks -> Markdown/JSON/PNG). torch is imported inside the commands only."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import typer

from edge_pace.backbones import DEFAULT as DEFAULT_BACKBONE
from edge_pace.cli.common import fail, split_list
from edge_pace.evaluation.baselines import METHODS, check_methods


def parse_overrides(items: Optional[list[str]]) -> dict[str, Any]:
    """``["e0=2", "use_msa=false", "lora_targets=conv1,conv2"]`` -> typed PaceConfig changes.
    Raises ValueError naming the field when a key is unknown or a value does not parse."""
    from edge_pace.method.config import PaceConfig

    types = {f.name: f.default for f in dataclasses.fields(PaceConfig)}
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in types:
            raise ValueError(f"--set {key}: not a PaceConfig field; known: {', '.join(sorted(types))}")
        default = types[key]
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError("expected true or false")
                value: Any = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            elif isinstance(default, tuple):
                value = tuple(v.strip() for v in raw.split(",") if v.strip())
                if default and isinstance(default[0], float):
                    value = tuple(float(v) for v in value)
            else:
                value = raw
        except ValueError as exc:
            raise ValueError(f"--set {key}={raw!r}: {exc} (expected a {type(default).__name__})") from exc
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------------- adapt

def _target_sessions(sessions: str, n_sessions: int) -> int:
    """Number of sessions the checkpoint should hold after this run."""
    if sessions == "server":
        return 1
    if sessions == "all":
        return n_sessions
    try:
        n = int(sessions)
    except ValueError:
        fail(f"--sessions must be 'server', 'all' or a number of sessions, got {sessions!r}")
    if not 1 <= n <= n_sessions:
        fail(f"--sessions {n}: the protocol has {n_sessions} sessions (expected 1..{n_sessions})")
    return n


def adapt(
    data: Path = typer.Option(..., "--data", help="Dataset root folder."),
    kind: str = typer.Option("folder", "--kind", help="Dataset kind: esc50, us8k, sc2, timit2, timit3, vocalset, "
                             "vocalset_technique, folder, synth or synth:<benchmark>, real."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder (written after every session; an "
                             "existing one is continued)."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, help="Backbone name (see `edge-pace backbones`); a multi-branch "
                                 "one (aisfx+speech, aisfx+speech+voice): PACE adapts the first branch, the others "
                                 "stay frozen."),
    weights: Optional[Path] = typer.Option(None, help="Backbone weights file (default: the registry's; for a "
                                           "multi-branch backbone, the first branch's)."),
    sessions: str = typer.Option("server", help="'server': session 0 only (FSA; later classes are learned on the "
                                 "device, closed form); 'all': every session of the protocol (MSA while the "
                                 "backbone adapts, then classifier-only); N: the first N sessions."),
    e0: Optional[int] = typer.Option(None, help="FSA epochs (default: PaceConfig's, or the checkpoint's)."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
    seed: Optional[int] = typer.Option(None, help="Seed of the class order and of training (default 0, or the "
                                       "checkpoint's)."),
    duration: float = typer.Option(1.0, help="Clip length in seconds (centre-cropped or zero-padded)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="PaceConfig override KEY=VALUE (repeatable), "
                                             "e.g. --set d_proj=1024 --set n_perturb=2."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run the server-side PACE sessions on a dataset and write a resumable checkpoint folder.

    The class-incremental protocol is the dataset kind's default (seeded class order). After every session the checkpoint (LoRA weights, projection seed, classifier state, config, metrics with the test accuracy on all classes seen so far) is written atomically, so a second run continues at the next session. The same seed gives the same checkpoint.
    """  # noqa: E501  (typer keeps docstring line breaks: one line per paragraph)
    import torch
    from rich.console import Console
    from rich.table import Table

    from edge_pace.data.loaders import DatasetError, load_dataset, read_clips
    from edge_pace.evaluation.protocol import make_sessions, protocol_for
    from edge_pace.method.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
    from edge_pace.method.config import PaceConfig
    from edge_pace.method.pace import PaceLearner
    from edge_pace.method.sessions import run_sessions

    if threads:
        torch.set_num_threads(threads)
    console = Console(stderr=True)
    try:
        overrides = parse_overrides(set_)
    except ValueError as exc:
        fail(str(exc))
    if e0 is not None:
        overrides["e0"] = e0
    if seed is not None:
        overrides["seed"] = seed
    overrides["quiet"] = quiet
    resume = out.exists()
    if resume:
        try:
            ck = read_config(out)
        except CheckpointError as exc:
            fail(f"{exc} (choose another --out, or remove the folder)")
        config = PaceConfig.from_dict(ck["pace"])
        run_keys = ("device", "quiet", "embed_batch", "amp")  # may change between runs
        clash = {k: (getattr(config, k), v) for k, v in overrides.items()
                 if k not in run_keys and getattr(config, k) != v}
        if clash:
            fail(f"{out} was trained with different settings: " + ", ".join(
                f"{k}={a!r} (asked {b!r})" for k, (a, b) in clash.items()) + "; use a new --out to change them")
        if ck["backbone"] != backbone:
            fail(f"{out} was trained on backbone {ck['backbone']!r}, not {backbone!r}")
    else:
        try:
            config = PaceConfig().replace(**overrides)
        except ValueError as exc:
            fail(str(exc))
    config = config.replace(device=device, quiet=quiet)
    try:
        clips = load_dataset(kind, data)
        all_sessions = make_sessions(clips, **protocol_for(kind), seed=config.seed)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    target = _target_sessions(sessions, len(all_sessions))
    try:
        if resume:
            learner = load_checkpoint(out, device=device)
            learner.config = learner.config.replace(quiet=quiet, device=device)
        else:
            learner = PaceLearner(backbone, config, weights=str(weights) if weights else None, device=device)
    except (CheckpointError, FileNotFoundError, RuntimeError, ValueError) as exc:
        fail(str(exc))
    done = learner.sessions_done
    # the classifier lists classes in order of first appearance in each session's training clips
    expected = [c for s in all_sessions[:done] for c in dict.fromkeys(clip.label for clip in s.train)]
    if done and learner.classes != expected:
        fail(f"{out} holds classes {learner.classes[:6]}... but sessions 0..{done - 1} of {kind} at {data} "
              f"(seed {config.seed}) have {expected[:6]}...: a different dataset or protocol")
    if done >= target:
        console.print(f"{out}: {done} session(s) already learned (asked for {target}); nothing to do")
        return
    console.print(f"{kind} at {data}: {len(all_sessions)} sessions {[len(s.classes) for s in all_sessions]}; "
                  f"learning sessions {done}..{target - 1} on {learner.device}"
                  + (f" (continuing {out})" if resume else ""))
    if getattr(learner, "branches", None) is not None:  # a multi-branch backbone (edge_pace/backbones/branches.py)
        names = learner.branches.names
        console.print(f"branches {', '.join(names)}: PACE adapts {names[0]}; {', '.join(names[1:])} stay frozen "
                      f"(weights {learner.branches.weights}, conditioned per branch into one projection)")
    def learn(s):
        train, kept = read_clips(s.train, learner.sample_rate, duration=duration, strict=True)
        return learner.fit_session(s.index, train, [c.label for c in kept]), len(kept)

    def evaluate(s):
        test, kept = read_clips(s.test, learner.sample_rate, duration=duration, strict=True)
        return (learner.predict(test) if len(kept) else []), [c.label for c in kept]

    def after(r) -> None:
        (m, n_train), acc = r.metrics, r.accuracy
        entry = learner.history[-1]
        entry.update(test_accuracy=acc, n_test=len(r.y_true), seen_classes=r.seen, wall_seconds=r.seconds)
        accs = [h.get("test_accuracy") for h in learner.history]
        if all(isinstance(a, float) for a in accs):
            entry["average_incremental_accuracy"] = sum(accs) / len(accs)
        save_checkpoint(learner, out)
        console.print(f"session {r.index}: +{len(all_sessions[r.index].classes)} classes ({r.seen} seen), {n_train} "
                      f"train clips, test accuracy {100 * acc:.2f} % on {len(r.y_true)} clips, "
                      f"{'adapted' if m.get('adapted') else 'classifier only'}, {r.seconds:.1f} s -> {out}")
        if m.get("adaptation"):  # session 0's do-no-harm decision (edge_pace/method/harm.py)
            a = m["adaptation"]
            console.print(f"do-no-harm: {'adapted backbone kept' if a['kept'] else 'FROZEN backbone kept'}; "
                          f"held-out accuracy {a['held_out_accuracy']}; {a['reason']}")

    run_sessions(all_sessions[:target], learn, evaluate, start=done, after=after)
    table = Table(title=f"edge-pace adapt -> {out}")
    for col in ("session", "classes seen", "train", "test acc. (%)", "adapted", "seconds"):
        table.add_column(col)
    for h in learner.history:
        a = h.get("test_accuracy")
        table.add_row(str(h.get("session")), str(h.get("seen_classes", "")), str(h.get("n_train", "")),
                      "" if a is None else f"{100 * a:.2f}", str(h.get("adapted", "")),
                      f"{h.get('wall_seconds', h.get('seconds', 0.0)):.1f}")
    Console().print(table)


# ----------------------------------------------------------------------------------------------- bench

def bench(
    data: Path = typer.Option(..., "--data", help="Folder made by `edge-pace data synth` (benchmarks are its "
                              "subfolders; missing ones are rendered there), or a dataset root with --kind."),
    methods: Optional[list[str]] = typer.Option(None, "--methods", "-m", help="Comma-separated methods (default: "
                                                f"all): {', '.join(METHODS)}."),
    benchmarks: Optional[list[str]] = typer.Option(None, "--benchmarks", "-b", help="Comma-separated offline "
                                                   "benchmarks: environment, keywords, speakers, instruments "
                                                   "(the default) and real (built by `edge-pace data real`)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Run one real dataset of this kind (esc50, us8k, sc2, "
                                       "timit2, timit3, vocalset, folder, real, ...) at --data instead of "
                                       "synthetic ones."),
    scale: float = typer.Option(1.0, help="Scale for rendering missing synthetic benchmarks (clips per class x S)."),
    e0: Optional[int] = typer.Option(None, help="FSA epochs (default: PaceConfig's)."),
    train_per_class: Optional[int] = typer.Option(None, help="Use at most N training clips per class (seeded)."),
    test_per_class: Optional[int] = typer.Option(None, help="Use at most N test clips per class (seeded)."),
    out: Path = typer.Option(Path("out/bench"), "--out", "-o", help="Output folder (results.md, results.json, "
                             "curves_<benchmark>.png)."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache folder (default: <out>/../cache)."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, help="Backbone name (see `edge-pace backbones`)."),
    weights: Optional[Path] = typer.Option(None, help="Backbone weights file (default: the registry's)."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
    seed: int = typer.Option(0, help="Seed: class order, subsampling and training."),
    duration: float = typer.Option(1.0, help="Clip length in seconds."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="PaceConfig override KEY=VALUE (repeatable)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
    resume: bool = typer.Option(False, "--resume", help="Keep runs in <out>/results.json whose settings match."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run methods x benchmarks on the class-incremental protocol.

    Writes a Markdown table (average incremental accuracy, last accuracy, forgetting, wall time, device), JSON results and per-session accuracy curves (one PNG per benchmark) to --out, rewritten after every run.
    """  # noqa: E501  (typer keeps docstring line breaks: one line per paragraph)
    import torch
    from rich.console import Console

    from edge_pace.evaluation.bench import SYNTH_BENCHMARKS, BenchSpec, run_bench, synth_benchmarks
    from edge_pace.method.config import PaceConfig
    from edge_pace.data.loaders import DatasetError

    if threads:
        torch.set_num_threads(threads)
    console = Console(stderr=True)
    try:
        names = check_methods(split_list(methods) or list(METHODS))
    except ValueError as exc:
        fail(str(exc))
    try:
        overrides = parse_overrides(set_)
        if e0 is not None:
            overrides["e0"] = e0
        config = PaceConfig().replace(**{**overrides, "seed": seed, "device": device, "quiet": quiet})
    except ValueError as exc:
        fail(str(exc))
    if not data.is_dir() and kind is not None:
        fail(f"--data {data} is not a folder")
    try:
        if kind is not None:
            if benchmarks:
                fail("--benchmarks selects synthetic benchmarks; with --kind the dataset at --data is the benchmark")
            specs = [(kind.replace(":", "-"), kind, str(data))]
        else:
            specs = synth_benchmarks(data, split_list(benchmarks) or list(SYNTH_BENCHMARKS), scale, seed,
                                     log=console.print)
        spec = BenchSpec(methods=names, benchmarks=specs, config=config, out=out, backbone=backbone,
                         weights=str(weights) if weights else None, device=device, duration=duration, seed=seed,
                         train_per_class=train_per_class, test_per_class=test_per_class,
                         cache_dir=cache if cache is not None else out.absolute().parent / "cache", resume=resume)
        t0 = time.perf_counter()
        run_bench(spec, log=console.print, quiet=quiet)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"bench finished in {time.perf_counter() - t0:.1f} s: {out / 'results.md'}, "
                  f"{out / 'results.json'}, {out}/curves_*.png")
    typer.echo((out / "results.md").read_text())


def register(app: typer.Typer) -> None:
    """Add ``adapt`` and ``bench`` to the edge-pace CLI."""
    app.command("adapt")(adapt)
    app.command("bench")(bench)
