"""edge-pace: PACE (Pretrained Audio Continual Learning) for small devices.

Layers, lowest first: ``edge_pace.runtime`` (numpy + onnxruntime, no torch) ->
``edge_pace`` training side (torch) -> ``edge_pace.export`` (torch -> bundle) -> ``edge_pace.cli``.
Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
