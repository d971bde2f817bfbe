"""The one path from audio to classifier features on the device: audio -> windows -> level gate -> embedder.

``Learner.learn``/``predict`` (clips) and ``Stream`` (a running signal) both go through ``FeaturePath``:

* audio: a file is decoded (soundfile), an array validated and converted to float32 mono (runtime/audio.py),
  then resampled to the bundle's rate (soxr). A stream resamples incrementally itself (fixed blocks, so its
  events do not depend on the chunking) and hands over whole windows.
* windows: ``frame``/``frames`` (runtime/embedder.py): clips up to one window are zero-padded to one window,
  longer ones cut with the bundle's window and hop; the stream cuts the same windows from its signal.
* gate (``Gate``): a window is active when its RMS level reaches ``gate_dbfs`` (None: every window) and, when
  ``min_active_s`` > 0, at least that many seconds of its 10 ms frames reach the gate too. The embedder
  peak-normalises every window, so without the gate silence would be classified at full scale. Clips use
  ``min_active_s = 0`` (a clip is cut around its sound by whoever made it); streams default to 0.1 s (a sliver
  of a sound at a window's edge looked like another class; the stream sees the sound whole a hop later).
* embed: active windows go to the ONNX embedder in batches of at most ``MAX_BATCH`` (clips) or one at a time
  (streams, so a window's features are bit-identical whatever arrived with it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_pace.runtime.audio import (AudioError, check_duration, check_rate, frame_levels, level_dbfs, load_audio,
                                     n_samples, prepare, resample)
from edge_pace.runtime.embedder import MAX_BATCH, OnnxEmbedder, frame, frames

@dataclass(frozen=True)
class Gate:
    """Which windows are active (see the module docstring). ``sample_rate``: the windows' rate."""

    gate_dbfs: float | None
    sample_rate: int
    min_active_s: float = 0.0

    def active_seconds(self, w: np.ndarray) -> float:
        """Seconds of 10 ms frames of one window whose RMS reaches the gate."""
        fl = max(1, self.sample_rate // 100)  # 10 ms frames
        return float(np.count_nonzero(frame_levels(w, fl) >= self.gate_dbfs)) * fl / self.sample_rate

    def mask(self, windows: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """Active rows of ``windows`` [n, window] (``levels``: their ``level_dbfs``, when already computed)."""
        if self.gate_dbfs is None:
            return np.ones(len(windows), bool)
        levels = level_dbfs(windows) if levels is None else levels
        active = levels >= self.gate_dbfs
        if self.min_active_s > 0:
            for i in np.flatnonzero(active):
                active[i] = self.active_seconds(windows[i]) >= self.min_active_s
        return active


@dataclass
class ClipFeatures:
    """Features of a clip's active windows (None when every window was below the gate), the highest window
    level in dBFS and the loudest window (what a quiet clip's probabilities come from)."""

    z: np.ndarray | None
    top_dbfs: float
    loudest: np.ndarray


class FeaturePath:
    """A bundle's audio settings and embedder: audio -> windows -> gate -> features (module docstring)."""

    def __init__(self, embedder: OnnxEmbedder, sample_rate: int, window: int, hop: int, min_samples: int) -> None:
        self.embedder = embedder
        self.sample_rate, self.window, self.hop, self.min_samples = int(sample_rate), int(window), int(hop), int(min_samples)

    # ------------------------------------------------------------------ clips
    def audio(self, audio, sample_rate: int | None, name: str = "audio", max_seconds: float | None = None) -> np.ndarray:
        """A clip (array with ``sample_rate``, or a file path) as float32 mono at the bundle's rate."""
        if isinstance(audio, (str, os.PathLike)):
            a, rate = load_audio(audio, max_seconds=max_seconds)
            if sample_rate is not None and check_rate(sample_rate, name) != rate:
                raise AudioError(f"{audio}: file is {rate} Hz but sample_rate={sample_rate} was given; omit it for files")
            return resample(a, rate, self.sample_rate)
        if sample_rate is None:
            raise AudioError(f"{name}: sample_rate is required for sample arrays (the bundle runs at "
                             f"{self.sample_rate} Hz; other rates are resampled with soxr)")
        rate = check_rate(sample_rate, name)
        try:
            n = n_samples(audio)
        except (ValueError, TypeError) as exc:  # ragged nested sequences
            raise AudioError(f"{name}: expected an array of samples ({exc})") from exc
        check_duration(n, rate, max_seconds, name)
        return prepare(audio, rate, self.sample_rate, name)

    def frames(self, mono: np.ndarray) -> Iterator[np.ndarray]:
        """The windows of a clip at the bundle's rate, in batches of at most MAX_BATCH rows."""
        return frames(mono, self.window, self.hop, self.min_samples, self.sample_rate)

    def windows(self, mono: np.ndarray) -> np.ndarray:
        """Every window [n, window] of a clip at the bundle's rate."""
        return frame(mono, self.window, self.hop, self.min_samples, self.sample_rate)

    def embed(self, mono: np.ndarray) -> np.ndarray:
        """Features z [n_windows, D] (float32) of every window of a clip (no gate)."""
        return np.concatenate([self.embedder(w) for w in self.frames(mono)])

    def clip(self, mono: np.ndarray, gate: Gate) -> ClipFeatures:
        """Features of the active windows of a clip, cut and embedded in batches of MAX_BATCH active windows."""
        z, pending, top, loudest = [], [], -np.inf, None
        for w in self.frames(mono):
            lv = level_dbfs(w)
            k = int(np.argmax(lv))
            if loudest is None or lv[k] > top:
                top, loudest = float(lv[k]), w[k]
            pending += list(w[gate.mask(w, lv)])
            while len(pending) >= MAX_BATCH:
                z.append(self.embedder(np.stack(pending[:MAX_BATCH])))
                del pending[:MAX_BATCH]
        if pending:
            z.append(self.embedder(np.stack(pending)))
        return ClipFeatures(np.concatenate(z) if z else None, top, loudest)

    # ------------------------------------------------------------------ streams
    def embed_window(self, w: np.ndarray) -> np.ndarray:
        """Features [1, D] of one window of a running signal (batch 1: bit-identical whatever came with it); the
        stream gates it first (``Gate.mask``)."""
        return self.embedder(w[None, :])


__all__ = ["FeaturePath", "Gate", "ClipFeatures"]
