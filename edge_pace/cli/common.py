"""What every ``edge-pace`` command shares: the one error exit, list options, a spinner. Imports only typer and rich."""

from __future__ import annotations

from typing import NoReturn, Optional

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` in red on stderr and exit with ``code`` (2: bad input or a failed command)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def split_list(values: Optional[list[str]]) -> list[str]:
    """Repeated and comma-separated option values as one list: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [v.strip() for item in (values or []) for v in item.split(",") if v.strip()]


class spinner:
    """A rich status spinner on stderr while a long step runs."""

    def __init__(self, text: str) -> None:
        from rich.console import Console

        self.status = Console(stderr=True).status(text)

    def __enter__(self):
        self.status.__enter__()
        return self

    def __exit__(self, *exc):
        return self.status.__exit__(*exc)


__all__ = ["fail", "split_list", "spinner"]
