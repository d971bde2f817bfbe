"""edge-pace on-device runtime (numpy + onnxruntime, never torch).

    from edge_pace.runtime import Learner
    learner = Learner.load("bundle/")

The names below are imported lazily on first use, so ``import edge_pace.runtime`` itself loads nothing
heavy (not even numpy); submodules: learner, stream, analytic, state, bundle, audio, embedder, unknown,
microphone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Learner": "learner", "NotFittedError": "learner", "check_label": "learner", "Scores": "unknown",
    "UNKNOWN": "unknown", "Stream": "stream", "Event": "stream", "AnalyticClassifier": "analytic",
    "AudioError": "audio", "StateError": "state", "BundleError": "bundle", "MicrophoneError": "microphone",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from edge_pace.runtime.analytic import AnalyticClassifier
    from edge_pace.runtime.audio import AudioError
    from edge_pace.runtime.bundle import BundleError
    from edge_pace.runtime.learner import Learner, NotFittedError, check_label
    from edge_pace.runtime.microphone import MicrophoneError
    from edge_pace.runtime.state import StateError
    from edge_pace.runtime.stream import Event, Stream
    from edge_pace.runtime.unknown import UNKNOWN, Scores


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
