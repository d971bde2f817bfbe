"""Streaming recognition: feed chunks of any size at the device's native rate, get events.

    stream = learner.stream(sample_rate=16000)          # or Stream(learner, 16000, smooth=2, debounce_s=1.0)
    for chunk in mic:                                   # any chunk size, 1-D mono or [frames, channels]
        for ev in stream.feed(chunk):
            print(ev.label, ev.score, ev.time_s)
    stream.flush()                                      # end of input: drains the resampler

Pipeline, and why the events do not depend on how the input is chunked:

1. Resampling (only when the rate differs from the bundle's): input is cut into fixed blocks of
   ``sample_rate // 100`` samples (10 ms) and each block goes to one ``soxr.ResampleStream`` call, so the
   resampler sees the same calls whatever the chunking (soxr's own stream output is chunking-independent in
   our checks too; the fixed blocks make it a guarantee rather than an observation). The last partial
   block waits for more input (<= 10 ms latency) or ``flush()``.
2. Windows of the bundle's ``window_seconds`` every ``hop_seconds`` on the resampled signal; each window is
   embedded alone (batch 1), so its features are bit-identical whatever arrived with it. A final partial
   window is dropped at ``flush()``.
3. Level gate: a window whose RMS level is below ``gate_dbfs`` (default: the learner's, -50 dBFS; full-scale
   square = 0 dB) is quiet: it is not embedded, produces no event and clears the smoothing history. The
   embedder peak-normalises each window, so without the gate silence would be classified at full scale.
4. Smoothing: the ridge scores of the last ``smooth`` active windows (default 2, i.e. 1.5 s of audio with a
   1 s window and 0.5 s hop) are averaged; the learner's decision rule (top class, unknown threshold) runs
   on the mean. History restarts when the learner's classes change mid-stream.
5. Debounce: an event for label L is emitted only if the last event for L is at least ``debounce_s``
   (default 1.0 s) earlier. "unknown" produces no event.

``Event(label, score, time_s)``: score = smoothed top ridge score; time_s = start of the newest window in
seconds since the stream began (at the bundle's rate, which is the input's clock too).
A Stream is for one producer thread; the learner it reads may learn or forget concurrently.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_pace.runtime.audio import AudioError, to_float32_mono
from edge_pace.runtime.embedder import level_dbfs

_DEFAULT = object()


@dataclass(frozen=True)
class Event:
    label: str
    score: float
    time_s: float


class Stream:
    """Incremental resampling, windowing, gating, smoothing and debouncing over a ``Learner``."""

    def __init__(self, learner, sample_rate: int, *, smooth: int = 2, debounce_s: float = 1.0,
                 gate_dbfs: float | None = _DEFAULT, block: int | None = None) -> None:  # type: ignore[assignment]
        from edge_pace.runtime.learner import _check_rate

        self.learner = learner
        self.sample_rate = _check_rate(sample_rate, "stream")
        if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
            raise ValueError(f"smooth must be an integer >= 1 (windows averaged), got {smooth!r}")
        if not debounce_s >= 0:
            raise ValueError(f"debounce_s must be >= 0 seconds, got {debounce_s!r}")
        self.smooth, self.debounce_s = smooth, float(debounce_s)
        self.gate_dbfs = learner.gate_dbfs if gate_dbfs is _DEFAULT else gate_dbfs
        self.rate = learner.sample_rate
        self.window, self.hop = learner.window, learner.hop
        self.block = int(block) if block else max(1, self.sample_rate // 100)
        self.reset()

    def reset(self) -> None:
        """Forget all buffered audio, history and debounce times (start a new stream)."""
        self._resampler = None
        if self.sample_rate != self.rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, self.rate, 1, dtype="float32", quality="HQ")
        self._pending = np.zeros(0, np.float32)  # input samples not yet resampled (< one block)
        self._buf = np.zeros(2 * self.window, np.float32)
        self._n = 0  # valid samples in _buf
        self._start = 0  # absolute index (bundle rate) of _buf[0]
        self._history: deque[np.ndarray] = deque(maxlen=self.smooth)
        self._history_classes: tuple[str, ...] = ()
        self._last_event: dict[str, float] = {}
        self.samples_in = 0
        self.windows_seen = 0
        self.windows_quiet = 0
        self.last = None  # Scores of the latest active window (smoothed), for displays
        self._closed = False

    @property
    def time_s(self) -> float:
        """Seconds of input consumed so far."""
        return self.samples_in / self.sample_rate

    # ------------------------------------------------------------------ input
    def _convert(self, chunk) -> np.ndarray:
        a = np.asarray(chunk)
        if a.ndim not in (1, 2):
            raise AudioError(f"stream chunk: expected 1-D mono or 2-D [frames, channels], got shape {a.shape}")
        if a.size == 0:
            if not (np.issubdtype(a.dtype, np.floating) or a.dtype in (np.int16, np.int32)):
                raise AudioError(f"stream chunk: expected float or int16/int32 samples, got dtype {a.dtype}")
            return np.zeros(0, np.float32)
        flat = to_float32_mono(a.reshape(-1), "stream chunk")
        return flat.reshape(a.shape).mean(axis=1, dtype=np.float32) if a.ndim == 2 else flat

    def _append(self, y: np.ndarray) -> None:
        if self._n + len(y) > len(self._buf):
            grown = np.zeros(max(2 * len(self._buf), self._n + len(y)), np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : self._n + len(y)] = y
        self._n += len(y)

    def feed(self, chunk) -> list[Event]:
        """Add a chunk (any length, the stream's rate; 1-D or [frames, channels]; float or int16/int32 PCM).
        Returns the events completed by it. A bad chunk raises AudioError and is not consumed."""
        if self._closed:
            raise RuntimeError("stream was flushed; call reset() to start a new one")
        x = self._convert(chunk)
        self.samples_in += len(x)
        if self._resampler is None:
            self._append(x)
        else:
            x = np.concatenate([self._pending, x]) if len(self._pending) else x
            nb = len(x) // self.block
            for i in range(nb):  # fixed blocks: identical resampler calls for any chunking
                self._append(self._resampler.resample_chunk(x[i * self.block : (i + 1) * self.block]))
            self._pending = x[nb * self.block :].copy()
        return self._process()

    def flush(self) -> list[Event]:
        """End of input: resample what is pending and process the remaining full windows."""
        if self._closed:
            return []
        if self._resampler is not None:
            self._append(self._resampler.resample_chunk(self._pending, last=True))
            self._pending = np.zeros(0, np.float32)
        events = self._process()
        self._closed = True
        return events

    # ------------------------------------------------------------------ windows
    def _process(self) -> list[Event]:
        events = []
        while self._n >= self.window:
            ev = self._window(self._buf[: self.window], self._start / self.rate)
            if ev is not None:
                events.append(ev)
            self._buf[: self._n - self.hop] = self._buf[self.hop : self._n].copy()
            self._n -= self.hop
            self._start += self.hop
        return events

    def _window(self, w: np.ndarray, t: float) -> Event | None:
        self.windows_seen += 1
        if self.gate_dbfs is not None and level_dbfs(w)[0] < self.gate_dbfs:
            self.windows_quiet += 1
            self._history.clear()
            return None
        view = self.learner._view
        if not view.classes:
            return None
        if view.classes != self._history_classes:
            self._history.clear()
            self._history_classes = view.classes
        z = self.learner.embedder(w[None, :])
        self._history.append((z.astype(np.float64) @ view.W)[0])
        s = self.learner._decide(np.mean(self._history, axis=0), view, windows=len(self._history))
        self.last = s
        if s.unknown:
            return None
        prev = self._last_event.get(s.label)
        if prev is not None and t - prev < self.debounce_s - 1e-9:
            return None
        self._last_event[s.label] = t
        return Event(s.label, s.score, t)


__all__ = ["Stream", "Event"]
