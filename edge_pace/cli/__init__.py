"""The ``edge-pace`` command line: one typer app, its verbs in groups, one module each.

* ``backbones``, ``export``, ``info`` (edge_pace/cli/export.py): backbones and bundles;
* ``adapt``, ``bench`` (train.py): PACE sessions on the server, methods x benchmarks;
* ``data synth``, ``data real`` (data.py): offline benchmark data;
* ``learn``, ``predict``, ``forget`` (device.py) and ``devices``, ``listen`` (listen.py, listen_view.py): the
  device verbs, which import only the runtime (numpy + onnxruntime), never torch.

Every module imports its heavy dependencies inside its commands, so ``edge-pace`` starts without torch; every
expected failure ends with ``error: <message>`` (``common.fail``).
"""

from __future__ import annotations

import typer

from edge_pace import __version__
from edge_pace.cli import data, device, export, listen, train

app = typer.Typer(help="edge-pace: PACE continual learning of new sounds, from server adaptation to the device.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edge-pace {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """edge-pace command line."""


for _group in (export, data, train, device, listen):
    _group.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]
