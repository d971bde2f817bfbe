"""edge-pace on-device runtime (numpy + onnxruntime, never torch).

    from edge_pace.runtime import Learner
    learner = Learner.load("bundle/")

The names below are imported lazily on first use, so ``import edge_pace.runtime`` itself loads nothing
heavy (not even numpy). Submodules, lowest first: audio (decoding, one mono/level helper), atomic (crash-safe
writes), analytic and gamma (the classifier math), state (state files, their lock), bundle, embedder (ONNX
Runtime, framing), features (audio -> windows -> gate -> features), unknown (scores, snapshot, the unknown
rule), learner, stream; live input: microphone (the device only), enrol (shots, ``Listener``), live (one
live session: state lock, autosave, time limit).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Learner": "learner", "NotFittedError": "learner", "check_label": "learner", "Scores": "unknown",
    "UNKNOWN": "unknown", "Snapshot": "unknown", "Stream": "stream", "Event": "stream", "AnalyticClassifier": "analytic",
    "AudioError": "audio", "StateError": "state", "BundleError": "bundle", "MicrophoneError": "microphone",
    "Microphone": "microphone", "Listener": "enrol", "LiveSession": "live",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from edge_pace.runtime.analytic import AnalyticClassifier
    from edge_pace.runtime.audio import AudioError
    from edge_pace.runtime.bundle import BundleError
    from edge_pace.runtime.enrol import Listener
    from edge_pace.runtime.learner import Learner, NotFittedError, check_label
    from edge_pace.runtime.live import LiveSession
    from edge_pace.runtime.microphone import Microphone, MicrophoneError
    from edge_pace.runtime.state import StateError
    from edge_pace.runtime.stream import Event, Stream
    from edge_pace.runtime.unknown import UNKNOWN, Scores, Snapshot


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
