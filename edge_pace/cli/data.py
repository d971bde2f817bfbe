"""``edge-pace data ...``: offline benchmark data (``data synth``, ``data real``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from edge_pace.cli.common import fail, split_list

data_app = typer.Typer(help="Benchmark data: synthesised audio benchmarks, and one of real recordings.",
                       no_args_is_help=True)


RATE = typer.Option(44100, help="Sample rate of the WAV files (Hz).")
JOBS = typer.Option(None, "--jobs", "-j", help="Parallel workers (default: CPU count).")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder: OUT/<benchmark>/<split>/<class>/<id>.wav + manifest.csv."),
    benchmarks: Optional[list[str]] = typer.Option(
        None, "--benchmarks", "-b",
        help="Benchmarks to render (repeat or comma-separate): keywords, environment, speakers, instruments. "
             "Default: all."),
    scale: float = typer.Option(1.0, help="Multiplies the clips per class (1.0: ~5,000 clips in all)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same bytes."),
    rate: int = RATE,
    duration: float = typer.Option(1.0, help="Clip duration in seconds (sounds are centred, padded or trimmed)."),
    jobs: Optional[int] = JOBS,
    progress: bool = PROGRESS,
) -> None:
    """Render real offline audio benchmarks with espeak-ng, flite, festival, sox and fluidsynth.

    Test clips are held out: unseen voices (keywords), unseen texts (speakers), the other
    soundfont (instruments), unseen random seeds (environment).
    """
    from rich.console import Console
    from rich.table import Table

    from edge_pace.data.synth import BENCHMARKS, MissingToolError, clip_counts, synthesize

    names = split_list(benchmarks) or None
    t0 = time.perf_counter()
    try:
        folders = synthesize(out, benchmarks=names, scale=scale, seed=seed, rate=rate, duration=duration,
                             jobs=jobs, progress=progress)
    except (MissingToolError, ValueError, FileExistsError) as exc:
        fail(str(exc))
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


@data_app.command("real")
def real(
    out: Path = typer.Argument(..., help="Output folder: OUT/real/<split>/<class>/<id>.wav + OUT/real/manifest.csv."),
    sources: Optional[list[str]] = typer.Option(
        None, "--sources", "-s",
        help="Sources (repeat or comma-separate): drums, voices, freepats, 0ad. Default: all four; "
             "--sources drums,voices,freepats builds without 0ad-data (a 1.4 GB package)."),
    seed: int = typer.Option(0, help="Random seed (held-out files, notes, levels): same seed, same bytes."),
    rate: int = RATE,
    duration: float = typer.Option(1.0, help="Clip duration in seconds (cut around the active part)."),
    jobs: Optional[int] = JOBS,
    progress: bool = PROGRESS,
    sf2_dir: Optional[Path] = typer.Option(None, help="avldrums SF2 kits folder (default /usr/share/sounds/sf2)."),
    asterisk_dir: Optional[Path] = typer.Option(None, help="asterisk sounds (default /usr/share/asterisk/sounds)."),
    freepats_dir: Optional[Path] = typer.Option(None, help="freepats folder (default /usr/share/midi/freepats)."),
    zip_0ad: Optional[Path] = typer.Option(None, "--0ad-zip",
                                           help="0 A.D.'s public.zip (default: where 0ad-data installs it)."),
) -> None:
    """Build a benchmark of real recordings from Debian packages (nothing synthesised).

    Drum kits (avldrums.lv2-soundfont, test kit held out), three telephone voices (asterisk-prompt-*,
    test prompts held out), instrument samples (freepats, test samples held out) and 0 A.D. game
    recordings (0ad-data, test files or surfaces held out).
    """
    from rich.console import Console
    from rich.table import Table

    from edge_pace.data.real import CLASSES, HELD_OUT, MissingPackageError, RealPaths, build_real, class_counts

    names = split_list(sources) or None
    if names == ["all"]:
        names = None
    paths = RealPaths()
    if sf2_dir is not None:
        paths.drum_kits = {kit: (sf2_dir / p.name, bank, prog) for kit, (p, bank, prog) in paths.drum_kits.items()}
    paths.asterisk = asterisk_dir or paths.asterisk
    paths.freepats = freepats_dir or paths.freepats
    paths.zero_ad_zip = zip_0ad or paths.zero_ad_zip
    t0 = time.perf_counter()
    try:
        folder = build_real(out, sources=names, seed=seed, rate=rate, duration=duration, jobs=jobs,
                            progress=progress, paths=paths)
    except (MissingPackageError, ValueError, FileExistsError) as exc:
        fail(str(exc))
    seconds = time.perf_counter() - t0
    counts = class_counts(folder)
    table = Table(title=f"edge-pace data real -> {folder}")
    for col in ("source", "class", "train", "test", "test held out by"):
        table.add_column(col, justify="right" if col in ("train", "test") else "left")
    for source, labels in CLASSES.items():
        for label in labels:
            if label in counts:
                table.add_row(source, label, str(counts[label]["train"]), str(counts[label]["test"]), HELD_OUT[label])
    train, test = sum(c["train"] for c in counts.values()), sum(c["test"] for c in counts.values())
    table.add_section()
    table.add_row("all", f"{len(counts)} classes", str(train), str(test), "")
    console = Console()
    console.print(table)
    console.print(f"{train + test} clips in {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the edge-pace CLI."""
    app.add_typer(data_app, name="data")
