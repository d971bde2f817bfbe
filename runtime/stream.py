"""Streaming recognition: feed chunks of any size at the device's native rate, get events.

    stream = learner.stream(sample_rate=16000)          # or Stream(learner, 16000, smooth=1, debounce_s=1.5,
                                                        #           hop_s=0.25)
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
2. Windows of the bundle's ``window_seconds`` every ``hop_s`` (default: the bundle's ``hop_seconds``, 0.5 s) on
   the resampled signal. A shorter hop gives earlier events at proportionally more embedder work (0.25 s:
   twice the windows per second; benchmarks/latency_bench.py measures both). Each window is
   embedded alone (batch 1), so its features are bit-identical whatever arrived with it. A final partial
   window is dropped at ``flush()``.
3. Level gate: a window whose RMS level is below ``gate_dbfs`` (default: the learner's, -50 dBFS; full-scale
   square = 0 dB) is quiet: it is not embedded, produces no event and clears the smoothing history. The
   embedder peak-normalises each window, so without the gate silence would be classified at full scale.
   Likewise a window in which less than ``min_active_s`` (default 0.1 s) of 10 ms frames reach the gate is
   quiet: a sliver of a sound at the window's edge, blown up by the peak normalisation, looked like
   another class (in the soak benchmark 4 of 25 sounds also fired a wrong label from the window that held
   only their first 10-70 ms); the same sound is seen whole a hop later. Quiet windows cost one pass over
   their samples (no embedder), so silent stretches stream at a small fraction of real time.
4. Smoothing: the ridge scores of the last ``smooth`` active windows are averaged (default 1: none); the
   learner's decision rule (top class, unknown threshold) runs on the mean. History restarts when the
   learner's classes change mid-stream.
5. Debounce: an event for label L is emitted only if the last event for L is at least ``debounce_s``
   earlier (default: window + hop, 1.5 s for a 1 s window and 0.5 s hop; 1.25 s at a 0.25 s hop). "unknown"
   produces no event.

Why these defaults (short sounds). A sound of length L lies in windows whose starts span less than
window + L, so a sound no longer than a hop can be in three windows whose starts are 2 hops = 1.0 s apart:
a 1.0 s debounce lets it fire twice, window + hop cannot. Averaging two windows mixes the window that holds
the sound with one that holds only its edge (or nothing of it), which sinks short sounds below the unknown
threshold. Measured with the test learner (4 classes x 4 one-second clips; held-out sounds cut to 0.3, 0.5
and 1.0 s, 40 each, random onsets in silence; events per sound): smooth=2 detected 3-5 of 40 0.3 s sounds
and 14-17 of 40 0.5 s sounds, smooth=1 18-20 and 31-33; with smooth=2, debounce 1.0 s made 5 of 40 1.0 s
sounds fire twice, 1.5 s none. On a Listener-style session (knock/whistle/beep/hum enrolled from 3 shots,
114 sounds of 0.15-4 s in 8 minutes) smooth=1 missed 33 of 92 short sounds (most of them shorter than any
enrolled shot) and smooth=2 54, with no repeated or wrong events either way. Longer sounds fire again every
``debounce_s`` while they last.

``Event(label, score, time_s)``: score = smoothed top ridge score; time_s = start of the newest window in
seconds since the stream began (at the bundle's rate, which is the input's clock too).
A Stream is for one producer thread; the learner it reads may learn or forget concurrently.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_pace.runtime.audio import audio_array, check_rate, to_float32_mono
from edge_pace.runtime.features import Gate

_DEFAULT = object()
SLICE = 1 << 16  # input frames converted and processed at a time


@dataclass(frozen=True)
class Event:
    label: str
    score: float
    time_s: float


class Stream:
    """Incremental resampling, windowing, gating, smoothing and debouncing over a ``Learner``'s public API
    (its audio settings, ``feature_path``, ``snapshot()`` and ``score_features``)."""

    def __init__(self, learner, sample_rate: int, *, smooth: int = 1, debounce_s: float | None = None,
                 gate_dbfs: float | None = _DEFAULT, block: int | None = None,  # type: ignore[assignment]
                 min_active_s: float = 0.1, hop_s: float | None = None) -> None:
        self.learner = learner
        self.rate = learner.sample_rate
        self.window = learner.window
        if hop_s is None:
            self.hop = learner.hop
        elif (isinstance(hop_s, bool) or not isinstance(hop_s, (int, float))
              or not 0 < hop_s * self.rate < float("inf") or not 0 < round(hop_s * self.rate) <= self.window):
            raise ValueError(f"hop_s must be a number of seconds in (0, window = {self.window / self.rate:g}], "
                             f"got {hop_s!r}")
        else:
            self.hop = int(round(hop_s * self.rate))
        self.sample_rate = check_rate(sample_rate, "stream")
        if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
            raise ValueError(f"smooth must be an integer >= 1 (windows averaged), got {smooth!r}")
        if debounce_s is None:
            debounce_s = (self.window + self.hop) / self.rate
        if (isinstance(debounce_s, bool) or not isinstance(debounce_s, (int, float))
                or not 0 <= debounce_s < float("inf")):
            raise ValueError(f"debounce_s must be a finite number >= 0 seconds (or None for window + hop), "
                             f"got {debounce_s!r}")
        if isinstance(min_active_s, bool) or not isinstance(min_active_s, (int, float)) or not 0 <= min_active_s <= 1e6:
            raise ValueError(f"min_active_s must be a number of seconds >= 0, got {min_active_s!r}")
        self.smooth, self.debounce_s, self.min_active_s = smooth, float(debounce_s), float(min_active_s)
        self.gate_dbfs = learner.gate_dbfs if gate_dbfs is _DEFAULT else gate_dbfs
        self.block = int(block) if block else max(1, self.sample_rate // 100)
        self.gate = Gate(self.gate_dbfs, self.rate, self.min_active_s)  # runtime/features.py, as clips but stricter
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
    def _append(self, y: np.ndarray) -> None:
        if self._n + len(y) > len(self._buf):
            grown = np.zeros(max(2 * len(self._buf), self._n + len(y)), np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : self._n + len(y)] = y
        self._n += len(y)

    def feed(self, chunk) -> list[Event]:
        """Add a chunk (any length, the stream's rate; 1-D or 2-D with channels as runtime/audio.py reads them;
        float or int16/int32 PCM).
        Returns the events completed by it. A bad chunk raises AudioError and is not consumed.
        A long chunk (even hours) is validated, then converted and processed ``SLICE`` frames at a time:
        memory beyond the caller's array stays bounded, and time is linear in its length."""
        if self._closed:
            raise RuntimeError("stream was flushed; call reset() to start a new one")
        a = audio_array(chunk, "stream chunk")  # [samples] or [samples, channels] (runtime/audio.py)

        def mono(x: np.ndarray) -> np.ndarray:
            return to_float32_mono(x, "stream chunk", allow_empty=True)

        if len(a) <= SLICE:
            slices = [mono(a)]
        else:
            for i in range(0, len(a), SLICE):  # validate all of it before consuming any of it
                mono(a[i : i + SLICE])
            slices = (mono(a[i : i + SLICE]) for i in range(0, len(a), SLICE))
        events: list[Event] = []
        for x in slices:
            self.samples_in += len(x)
            if self._resampler is None:
                for i in range(0, len(x), self.window):  # the buffer never holds more than two windows
                    self._append(x[i : i + self.window])
                    events += self._process()
                continue
            x = np.concatenate([self._pending, x]) if len(self._pending) else x
            nb = len(x) // self.block
            for i in range(nb):  # fixed blocks: identical resampler calls for any chunking
                self._append(self._resampler.resample_chunk(x[i * self.block : (i + 1) * self.block]))
                if self._n >= self.window:
                    events += self._process()
            self._pending = x[nb * self.block :].copy()
        return events

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
        if not self.gate.mask(w[None, :])[0]:
            self.windows_quiet += 1
            self._history.clear()
            return None
        view = self.learner.snapshot()
        if not view.classes:
            return None
        if view.classes != self._history_classes:
            self._history.clear()
            self._history_classes = view.classes
        self._history.append(self.learner.feature_path.embed_window(w)[0])
        s = self.learner.score_features(np.stack(self._history), view=view)  # mean ridge + open-set of the windows
        self.last = s
        if s.unknown:
            return None
        prev = self._last_event.get(s.label)
        if prev is not None and t - prev < self.debounce_s - 1e-9:
            return None
        self._last_event[s.label] = t
        return Event(s.label, s.score, t)


__all__ = ["Stream", "Event"]
