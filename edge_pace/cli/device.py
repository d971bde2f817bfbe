"""Device commands of the ``edge-pace`` CLI: ``learn``, ``predict``, ``forget``.

They use only the runtime (numpy + onnxruntime): nothing here imports torch, so they run on a device
install without the training extras (tests/test_runtime_no_torch.py checks it). Learned state is saved
into the bundle (``state.safetensors``; beside a zip bundle) atomically; a lock file serialises
concurrent CLI invocations on the same bundle so that no update is lost.

Errors: every expected failure (bad bundle, corrupt state, unreadable/bad audio, bad label, non-finite
numbers, a state file that cannot be written) ends with ``error: <message>`` on stderr and exit code 2
(``predict``: exit code 1 when some files could not be classified; the others are still reported), never a
traceback; nothing is saved after an error.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from edge_pace.cli.common import fail


@contextlib.contextmanager
def _bundle_lock(state_path: Path) -> Iterator[None]:
    """The state file's lock (runtime/state.py ``state_lock``) while a command reads, updates and saves."""
    from edge_pace.runtime.state import lock_path, state_lock

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(state_lock(state_path))
        except OSError as exc:
            fail(f"cannot open the lock file {lock_path(state_path)}: {exc} (is the bundle folder writable?)")
        yield


def _load(bundle: Path, int8: bool, threads: int, **settings):
    from edge_pace.runtime.bundle import BundleError
    from edge_pace.runtime.learner import Learner
    from edge_pace.runtime.state import StateError

    try:
        return Learner.load(bundle, int8=int8, threads=threads, **settings)
    except (BundleError, StateError, ValueError, OSError) as exc:
        fail(str(exc))


def _state_path(bundle: Path) -> Path:
    from edge_pace.runtime.bundle import BundleError, open_bundle

    try:
        return open_bundle(bundle, verify=False).state_path()
    except BundleError as exc:
        fail(str(exc))
    raise AssertionError  # unreachable


def _save(learner) -> Path:
    try:
        return learner.save()
    except OSError as exc:
        fail(f"cannot write the learned state to {learner.state_path}: {exc} (the previous state file is unchanged)")
    raise AssertionError  # unreachable


INT8 = typer.Option(False, "--int8", help="Use embedder.int8.onnx (the state must have been learned with it too).")
THREADS = typer.Option(1, "--threads", min=0, help="ONNX Runtime intra-op threads (0 = onnxruntime's default).")


def learn_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder or zip (from `edge-pace export`)."),
    label: str = typer.Argument(..., help="Class name to learn (new names create new classes); with --background "
                                "the first audio file."),
    files: Optional[List[Path]] = typer.Argument(None, help="Audio files of this class (any rate, mono or "
                                                 "multi-channel)."),
    background: bool = typer.Option(False, "--background", help="Learn the files as background: sounds to ignore "
                                    "(never a class; they make similar sounds 'unknown'). Forget with "
                                    "`edge-pace forget BUNDLE --background`."),
    int8: bool = INT8,
    threads: int = THREADS,
) -> None:
    """Learn FILES as LABEL on the device (closed form, all files or none) and save the state into the bundle."""
    from rich.progress import Progress

    from edge_pace.runtime.analytic import BACKGROUND
    from edge_pace.runtime.audio import AudioError

    files = list(files or [])
    if background:
        files, label = [Path(label), *files], BACKGROUND
    if not files:
        fail("give at least one audio file to learn from")

    with _bundle_lock(_state_path(bundle)):
        learner = _load(bundle, int8, threads)
        with Progress(transient=True) as progress:
            task = progress.add_task(f"embedding {len(files)} file(s)", total=len(files))
            try:
                learner.learn_many([str(f) for f in files], label, progress=lambda i: progress.advance(task))
            except (AudioError, ValueError, TypeError, FloatingPointError) as exc:
                fail(f"{exc} (nothing was learned)")
        path = _save(learner)
    counts = learner.counts
    if label == BACKGROUND:
        n = sum(len(f) for f in learner.classifier.features.get(BACKGROUND, []))
        typer.echo(f"learned {len(files)} background file(s); {n} background window(s) in total; state saved to {path}")
        return
    typer.echo(f"learned {label!r} from {len(files)} file(s); {counts[label]} example window(s) in total for it; "
               f"{len(counts)} class(es): {', '.join(counts)}; state saved to {path}")


def predict_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder or zip."),
    files: List[Path] = typer.Argument(..., help="Audio files to classify."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file (JSON lines)."),
    int8: bool = INT8,
    threads: int = THREADS,
    no_unknown: bool = typer.Option(False, "--no-unknown", help="Turn the unknown rule off (always the top class)."),
    miss: Optional[float] = typer.Option(None, "--miss", min=0.0, max=1.0, help="Sensitivity of the unknown rule: "
                                         "the target fraction of genuine sounds called unknown (higher = fewer false "
                                         "accepts; default 0.025 with 10+ clips per class, else 0.05)."),
    top: int = typer.Option(3, min=1, help="Classes shown per file in the table."),
) -> None:
    """Classify FILES with the bundle's learned classes: label ("unknown" when rejected), ridge score, probabilities.
    Exit code 1 when a file could not be read."""
    from rich.console import Console
    from rich.table import Table

    from edge_pace.runtime.audio import AudioError
    from edge_pace.runtime.learner import NotFittedError

    learner = _load(bundle, int8, threads, unknown=not no_unknown, unknown_quantile=miss)
    if not learner.classes:
        fail("the bundle knows no class yet: run `edge-pace learn BUNDLE LABEL FILES...` first")
    rows, failed = [], False
    for f in files:
        try:
            rows.append((f, learner.predict_proba(str(f))))
        except (AudioError, NotFittedError, FloatingPointError) as exc:
            rows.append((f, exc))
            failed = True
    if as_json:
        for f, r in rows:
            obj = {"file": str(f), "error": str(r)} if isinstance(r, Exception) else {"file": str(f), **r.as_dict()}
            typer.echo(json.dumps(obj))
    else:
        tau = learner.threshold()
        table = Table(title=f"predictions ({len(learner.classes)} classes, unknown threshold "
                            f"{'off' if tau is None else f'{tau:.3f}'})")
        for col in ("file", "label", "score", f"top {top} (probability)"):
            table.add_column(col)
        for f, r in rows:
            if isinstance(r, Exception):
                table.add_row(str(f), "[red]error[/red]", "", str(r))
                continue
            best = sorted(r.items(), key=lambda kv: -kv[1])[:top]
            label = f"[yellow]{r.label}[/yellow]" + (" (quiet)" if r.quiet else "") if r.unknown else r.label
            table.add_row(str(f), label, f"{r.score:.3f}", ", ".join(f"{k} {v:.2f}" for k, v in best))
        Console(width=max(100, int(os.environ.get("COLUMNS", 100)))).print(table)
    if failed:
        raise typer.Exit(1)


def forget_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder or zip."),
    label: Optional[str] = typer.Argument(None, help="Class to remove."),
    background: bool = typer.Option(False, "--background", help="Forget every background window instead."),
    int8: bool = INT8,
) -> None:
    """Forget LABEL exactly (the state equals never having learned it) and save the state."""
    from edge_pace.runtime.analytic import BACKGROUND

    if background == (label is not None):
        fail("give a class LABEL to forget, or --background (not both)")
    label = BACKGROUND if background else label
    with _bundle_lock(_state_path(bundle)):
        learner = _load(bundle, int8, 1)
        try:
            learner.forget(label)
        except KeyError as exc:
            fail(str(exc.args[0]) if exc.args else str(exc))
        except (ValueError, FloatingPointError) as exc:
            fail(str(exc))
        path = _save(learner)
    what = "the background" if background else repr(label)
    typer.echo(f"forgot {what}; {len(learner.classes)} class(es) left: {', '.join(learner.classes) or '-'}; "
               f"state saved to {path}")


def register(app: typer.Typer) -> None:
    """Add the device commands to the ``edge-pace`` app."""
    app.command("learn")(learn_cmd)
    app.command("predict")(predict_cmd)
    app.command("forget")(forget_cmd)


__all__ = ["register", "learn_cmd", "predict_cmd", "forget_cmd"]
