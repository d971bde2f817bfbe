"""``python -m edge_pace.cli``: the ``edge-pace`` command."""

from edge_pace.cli import main

main()
