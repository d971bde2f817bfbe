"""The bundle's ONNX embedder under ONNX Runtime, and how the runtime cuts audio into the model's windows.

Framing (``frame``), the one rule used by ``Learner.embed/learn/predict`` through runtime/features.py (the
stream cuts the same windows, window and hop, from its running signal):

* shorter than ``min_samples`` (the embedder's minimum, 7168 samples = 0.16 s for aisfx): error naming it;
* up to one window (bundle ``window_seconds``): zero-padded symmetrically to exactly one window, so a short
  clip is seen as it is in a stream window (the sound plus quiet around it);
* longer: windows of ``window`` samples every ``hop`` samples, plus one window aligned to the clip's end
  when the hop grid leaves a tail, so every sample is covered.

Why windows rather than the whole clip as one input (the CNN pools over time and would accept it): the
stream classifies fixed windows, so learning from the same windows keeps the learned features and the
test-time features identically distributed (same padding, same per-window peak normalisation, same
receptive context). A long clip then gives several examples (one per window).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_pace.runtime.atomic import file_sha256
from edge_pace.runtime.audio import AudioError

log = logging.getLogger("edge_pace.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEFAULT_THREADS = 1  # one core: the small-device default
MAX_BATCH = 16  # windows per ONNX Runtime call (bounds activation memory)


class EmbedderError(ValueError):
    """An ONNX model that ONNX Runtime cannot load, or whose inputs/outputs are not [batch, samples] -> [batch, D]."""


def default_providers() -> list[str]:
    """CUDA (then CPU) when this onnxruntime build offers CUDA, else CPU alone (one log line says so)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA in available:
        return [CUDA, CPU]
    log.info("onnxruntime offers no CUDAExecutionProvider here; running on %s", CPU)
    return [CPU]


class OnnxEmbedder:
    """waveform windows [n, samples] float32 -> features z [n, D] float32 through ONNX Runtime.

    ``threads`` sets ONNX Runtime's intra-op threads (inter-op 1, sequential execution).
    ``InferenceSession.run`` is thread-safe, so one embedder serves concurrent callers.
    """

    def __init__(self, model: bytes | str | Path, threads: int = DEFAULT_THREADS, providers: list[str] | None = None,
                 name: str = "embedder.onnx", sha256: str | None = None) -> None:
        """``model``: the ONNX bytes, or a file path (ONNX Runtime then reads the file itself, which needs ~35 MB
        less memory for the aisfx model than parsing from bytes); ``sha256``: the file's already verified
        checksum (computed here when not given)."""
        import onnxruntime as ort

        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer (0 = onnxruntime's default), got {threads!r}")
        if isinstance(model, bytes):
            data: bytes | str = model
            self.sha256 = sha256 or hashlib.sha256(model).hexdigest()
        else:
            data = str(model)
            self.sha256 = sha256 or file_sha256(Path(model))
        self.name = name
        self.threads = threads
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        requested = list(providers) if providers is not None else default_providers()
        unknown = [p for p in requested if p not in ort.get_available_providers()]
        if unknown:
            raise ValueError(f"execution providers {unknown} are not available in this onnxruntime build; "
                             f"available: {ort.get_available_providers()}")
        try:
            self.session = ort.InferenceSession(data, opts, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbedderError(f"{name}: ONNX Runtime cannot load the model ({exc})") from exc
        self.providers = self.session.get_providers()
        if CUDA in requested and CUDA not in self.providers:
            log.warning("CUDAExecutionProvider was requested but could not be initialised; falling back to %s", CPU)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 2 or len(outputs) < 1 or len(outputs[0].shape) != 2:
            raise EmbedderError(f"{name}: expected one input [batch, samples] and an output [batch, D]; got inputs "
                             f"{[(i.name, i.shape) for i in inputs]}, outputs {[(o.name, o.shape) for o in outputs]}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        dim = outputs[0].shape[1]
        self.dim: int | None = dim if isinstance(dim, int) else None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, windows: np.ndarray, max_batch: int = MAX_BATCH) -> np.ndarray:
        """Features of float32 windows [n, samples] (all the same length), in batches of ``max_batch``."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise AudioError(f"embedder input must have shape [n >= 1, samples], got {x.shape}")
        out = [self.session.run([self.output_name], {self.input_name: x[i : i + max_batch]})[0]
               for i in range(0, len(x), max_batch)]
        z = out[0] if len(out) == 1 else np.concatenate(out)
        if not np.all(np.isfinite(z)):
            raise FloatingPointError(f"{self.name} produced NaN/Inf features; nothing was learned or predicted")
        return z


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``); a no-op where that does not exist.
    Loading parses ~100 MB of temporary buffers (checksums, protobuf, state); without this glibc keeps
    ~40 MB of them as resident heap."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def window_starts(n: int, window: int, hop: int) -> np.ndarray:
    """Start sample of every window of a clip of n > window samples (hop grid plus an end-aligned tail)."""
    starts = np.arange(0, n - window + 1, hop)
    if starts[-1] + window < n:
        starts = np.append(starts, n - window)
    return starts


def frames(audio: np.ndarray, window: int, hop: int, min_samples: int, sample_rate: int,
           batch: int = MAX_BATCH) -> Iterator[np.ndarray]:
    """The windows of ``frame`` in batches of at most ``batch`` rows (memory bounded by the batch, not the clip)."""
    n = len(audio)
    if n < min_samples:
        raise AudioError(f"audio too short: {n} samples ({n / sample_rate:.3f} s at {sample_rate} Hz); the embedder "
                         f"needs at least {min_samples} samples ({min_samples / sample_rate:.3f} s)")
    if n <= window:
        out = np.zeros((1, window), np.float32)
        s = (window - n) // 2
        out[0, s : s + n] = audio
        yield out
        return
    starts = window_starts(n, window, hop)
    view = np.lib.stride_tricks.sliding_window_view(audio, window)
    for i in range(0, len(starts), batch):
        yield np.ascontiguousarray(view[starts[i : i + batch]], dtype=np.float32)


def frame(audio: np.ndarray, window: int, hop: int, min_samples: int, sample_rate: int) -> np.ndarray:
    """Cut mono float32 audio at the bundle's rate into windows [n, window] (rule in the module docstring)."""
    return np.concatenate(list(frames(audio, window, hop, min_samples, sample_rate, batch=1 << 30)))
