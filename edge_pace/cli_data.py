"""``edge-pace data ...``: offline benchmark data (``data synth``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn, Optional

import typer

data_app = typer.Typer(help="Benchmark data: synthesise offline audio benchmarks.", no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder: OUT/<benchmark>/<split>/<class>/<id>.wav + manifest.csv."),
    benchmarks: Optional[list[str]] = typer.Option(
        None, "--benchmarks", "-b",
        help="Benchmarks to render (repeat or comma-separate): keywords, environment, speakers, instruments. "
             "Default: all."),
    scale: float = typer.Option(1.0, help="Multiplies the clips per class (1.0: ~5,000 clips in all)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same bytes."),
    rate: int = typer.Option(44100, help="Sample rate of the WAV files (Hz)."),
    duration: float = typer.Option(1.0, help="Clip duration in seconds (sounds are centred, padded or trimmed)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel workers (default: CPU count)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Render real offline audio benchmarks with espeak-ng, flite, festival, sox and fluidsynth.

    Test clips are held out: unseen voices (keywords), unseen texts (speakers), the other
    soundfont (instruments), unseen random seeds (environment).
    """
    from rich.console import Console
    from rich.table import Table

    from edge_pace.data.synth import BENCHMARKS, MissingToolError, clip_counts, synthesize

    names = None
    if benchmarks:
        names = [b.strip() for item in benchmarks for b in item.split(",") if b.strip()]
    t0 = time.perf_counter()
    try:
        folders = synthesize(out, benchmarks=names, scale=scale, seed=seed, rate=rate, duration=duration,
                             jobs=jobs, progress=progress)
    except (MissingToolError, ValueError, FileExistsError) as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - t0
    table = Table(title=f"edge-pace data synth -> {out}")
    for col in ("benchmark", "classes", "train", "test", "folder"):
        table.add_column(col)
    total = 0
    for bench, folder in folders.items():
        n_train, n_test = clip_counts(bench, scale)
        k = len(BENCHMARKS[bench])
        total += k * (n_train + n_test)
        table.add_row(bench, str(k), str(k * n_train), str(k * n_test), str(folder))
    console = Console()
    console.print(table)
    console.print(f"{total} clips in {seconds:.1f} s: {total / seconds:.1f} clips/s")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the edge-pace CLI."""
    app.add_typer(data_app, name="data")
