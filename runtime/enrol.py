"""Teaching new sounds by example from live audio: shot segmentation (``ShotRecorder``) and ``Listener``, which
ties a live signal (a microphone's chunks, a file, a WAV stream) to a ``Learner``'s stream and enrolments.

    from edge_pace.runtime.learner import Learner
    from edge_pace.runtime.enrol import Listener
    from edge_pace.runtime.microphone import Microphone

    learner = Learner.load("bundle/")
    with Microphone(device="USB") as mic:               # name (substring) or index; None = system default
        listener = Listener(learner, mic.rate)
        listener.enrol("knock", shots=3)               # the next 3 sounds heard teach "knock"
        for chunk in mic.chunks():
            for event in listener.feed(chunk):         # dicts, e.g. {"event": "detection", "label": ...}
                print(event)

Shots. ``ShotRecorder`` finds sounds in a live signal with an energy gate on 10 ms frames: the gate is
``margin_db`` above the noise floor (never below ``min_gate_dbfs``); the floor is the quietest 10 ms frame
of the last ``floor_seconds`` (minimum statistics: a sound shorter than that does not lift it, steady room
noise sets it within ``floor_seconds``); an onset is a frame whose RMS rises above the gate while armed;
the shot is ``shot_seconds`` of audio starting ``pre_seconds`` before the onset; the recorder re-arms
after ``release_seconds`` below the gate once the shot is complete. Memory is fixed: a circular buffer of
``pre_seconds``, a ring of ``floor_seconds`` of frame levels and one shot buffer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_pace.runtime.audio import level_dbfs, to_float32_mono


@dataclass
class Shot:
    """One segmented sound: ``audio`` at the recorder's rate, onset time and level."""

    audio: np.ndarray
    onset_s: float
    start_s: float
    level_dbfs: float


class ShotRecorder:
    """Energy-gated onset detection and fixed-length shot extraction on a live signal (see module docs)."""

    def __init__(self, sample_rate: int, shot_seconds: float = 1.0, pre_seconds: float = 0.2, *,
                 min_gate_dbfs: float = -50.0, margin_db: float = 15.0, release_seconds: float = 0.15,
                 floor_seconds: float = 1.5, frame_seconds: float = 0.01) -> None:
        if not 0 <= pre_seconds < shot_seconds:
            raise ValueError(f"need 0 <= pre_seconds < shot_seconds, got {pre_seconds}, {shot_seconds}")
        self.rate = int(sample_rate)
        self.frame = max(1, int(round(frame_seconds * self.rate)))
        self.shot_len = int(round(shot_seconds * self.rate))
        self.pre = int(round(pre_seconds * self.rate)) // self.frame * self.frame
        self.min_gate, self.margin = float(min_gate_dbfs), float(margin_db)
        self.release_frames = max(1, int(round(release_seconds * self.rate / self.frame)))
        self.floor_frames = max(1, int(round(floor_seconds * self.rate / self.frame)))
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)
        self._ring = np.zeros(self.pre, np.float32)  # circular: the last `pre` samples, sample i at i % pre
        self._shot: np.ndarray | None = None
        self._shot_n = 0
        self._onset = 0
        self._armed = True
        self._below = self.release_frames
        self._hist = np.full(self.floor_frames, np.nan)
        self.floor: float | None = None  # noise floor estimate (dBFS): the quietest recent frame
        self.level = -math.inf  # level of the latest frame
        self.frames_seen = 0

    def abort(self) -> None:
        """Drop a shot being captured and wait for quiet (``release_seconds``) before the next onset."""
        self._shot = None
        self._armed = False
        self._below = 0

    @property
    def gate_dbfs(self) -> float:
        return self.min_gate if self.floor is None else max(self.min_gate, self.floor + self.margin)

    def feed(self, chunk: np.ndarray) -> list[Shot]:
        """Add float32 mono samples; returns the shots completed by them."""
        x = np.asarray(chunk, np.float32).reshape(-1)
        x = np.concatenate([self._pending, x]) if len(self._pending) else x
        nf = len(x) // self.frame
        self._pending = x[nf * self.frame :].copy()
        if nf == 0:
            return []
        frames = x[: nf * self.frame].reshape(nf, self.frame)
        levels = level_dbfs(frames)
        shots = []
        for i in range(nf):
            shots += self._frame(frames[i], float(levels[i]))
        return shots

    def _frame(self, f: np.ndarray, lv: float) -> list[Shot]:
        out: list[Shot] = []
        index = self.frames_seen * self.frame  # absolute sample index of this frame
        self.level = lv
        self._hist[self.frames_seen % len(self._hist)] = max(lv, -100.0)  # ring of recent frame levels
        self.floor = float(np.nanmin(self._hist))  # minimum statistics: quiet moments of the last floor_seconds
        loud = lv >= self.gate_dbfs
        self._below = 0 if loud else self._below + 1
        if self._shot is None and self._armed and loud:
            self._shot = np.zeros(self.shot_len, np.float32)  # the onset always lands at index `pre`
            k = min(self.pre, index)
            if k:  # the last k samples of the circular history
                self._shot[self.pre - k : self.pre] = np.take(self._ring, np.arange(index - k, index), mode="wrap")
            self._shot_n = self.pre
            self._onset = index
            self._armed = False
        if self._shot is not None:
            take = min(len(f), self.shot_len - self._shot_n)
            self._shot[self._shot_n : self._shot_n + take] = f[:take]
            self._shot_n += take
            if self._shot_n >= self.shot_len:
                a, self._shot = self._shot, None
                start = self._onset - self.pre  # negative for a sound in the first `pre` seconds (zero-padded)
                out.append(Shot(a, self._onset / self.rate, start / self.rate, float(level_dbfs(a)[0])))
        elif not self._armed and self._below >= self.release_frames:
            self._armed = True
        if self.pre:  # circular history: sample i lives at i % pre
            n = min(len(f), self.pre)
            np.put(self._ring, np.arange(index + len(f) - n, index + len(f)), f[len(f) - n :], mode="wrap")
        self.frames_seen += 1
        return out


# ---------------------------------------------------------------------------------------------- listener
@dataclass
class Enrolment:
    """A class being taught by example: ``shots`` sounds to collect under ``label``."""

    label: str
    shots: int
    clips: list[np.ndarray] = field(default_factory=list)  # windows to learn (several per shot)
    groups: list[int] = field(default_factory=list)  # shot index of each window (one group per shot)
    times: list[float] = field(default_factory=list)  # onset of each shot (s)

    @property
    def heard(self) -> int:
        return len(self.times)

    @property
    def done(self) -> bool:
        return self.heard >= self.shots


class Listener:
    """A learner's stream plus enrolment by example, fed with microphone chunks at ``sample_rate``.

    Enrolment: ``enrol(label, shots)`` queues a class; the next ``shots`` sounds the ``ShotRecorder`` finds
    are its examples, and the class is learned in closed form (``Learner.learn_many``) as soon as the last
    one is complete. A shot is learned as one bundle window around its onset at each of ``offsets``
    (fractions of the window where the onset is placed; default 10 %, 40 %, 70 %), because the stream meets
    a sound anywhere in its windows: on the test sessions this lifts the scores of later occurrences that
    fall late in a window (e.g. 0.81 -> 1.0 with one offset vs three). ``offsets=(0.2,)``: one window a shot.

    Stream settings: ``Stream``'s defaults, chosen for short sounds (runtime/stream.py): ``smooth=1`` and
    ``debounce_s`` = window + hop (one event per sound no longer than a hop).

    ``feed(chunk)`` returns event dicts (JSON-ready): ``{"event": "detection", "label", "score", "time"}``
    (time = seconds of audio since the start, the start of the newest window), ``{"event": "shot", "label",
    "n", "of", "time", "level_dbfs"}``, ``{"event": "learned", "label", "shots", "time"}`` (time = end of the
    last shot), ``{"event": "error", "message", "time"}``. Detections are held back while a class is being
    enrolled and for windows that overlap its shots (they would detect the shots themselves).
    ``level_dbfs`` (last 100 ms), ``scores`` (latest window's scores, None when it was quiet) and
    ``last_detection`` serve displays. Memory is fixed: the stream's and the recorder's buffers, a 100 ms
    level ring, and the windows of the enrolment under way.
    """

    def __init__(self, learner, sample_rate: int, *, shots: int = 3, offsets: tuple[float, ...] = (0.1, 0.4, 0.7),
                 min_gate_dbfs: float = -50.0, smooth: int = 1, debounce_s: float | None = None,
                 hop_s: float | None = None) -> None:
        self.learner = learner
        self.rate = int(sample_rate)
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        if not offsets or not all(0.0 <= o < 1.0 for o in offsets):
            raise ValueError(f"offsets must be fractions of the window in [0, 1), got {offsets!r}")
        self.default_shots = int(shots)
        self.offsets = tuple(float(o) for o in offsets)
        # one bundle window at the device rate (floor: never more than a window after resampling)
        self.window = int(learner.window * self.rate // learner.sample_rate)
        pre_s, post_s = max(self.offsets), 1.0 - min(self.offsets)
        window_s = self.window / self.rate
        self.stream = learner.stream(self.rate, smooth=smooth, debounce_s=debounce_s, hop_s=hop_s)
        self.recorder = ShotRecorder(self.rate, (pre_s + post_s) * window_s + 0.02, pre_s * window_s,
                                     min_gate_dbfs=min_gate_dbfs)
        self.plan: deque[Enrolment] = deque()
        self.hold_until = 0.0  # no detection for windows starting before this time (s)
        self.last_detection: dict | None = None
        self.samples = 0
        self._meter = np.zeros(max(1, int(0.1 * self.rate)), np.float32)  # ring of the last 100 ms
        self._stale = True
        self.level_dbfs = -math.inf

    def shot_windows(self, shot: Shot) -> list[np.ndarray]:
        """The windows (device rate) learned from a shot: one per offset, the onset at that fraction."""
        pre = self.recorder.pre
        starts = [pre - int(round(o * self.window)) for o in self.offsets]
        return [shot.audio[s : s + self.window].copy() for s in starts]

    @property
    def time_s(self) -> float:
        return self.samples / self.rate

    @property
    def enrolling(self) -> Enrolment | None:
        return self.plan[0] if self.plan else None

    def enrol(self, label: str, shots: int | None = None) -> Enrolment:
        """Queue a class to learn from the next ``shots`` sounds (enrolments run in the order queued)."""
        from edge_pace.runtime.learner import check_label

        shots = self.default_shots if shots is None else int(shots)
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        e = Enrolment(check_label(label).strip(), shots)
        if not self.plan:
            self.recorder.abort()  # a sound already under way is not a shot of this class
        self.plan.append(e)
        return e

    def cancel(self) -> Enrolment | None:
        """Drop the enrolment in progress (nothing is learned)."""
        return self.plan.popleft() if self.plan else None

    @property
    def scores(self):
        """Latest smoothed scores, or None when the latest window was quiet (or nothing is learned)."""
        return None if self._stale else self.stream.last

    def _update_level(self, x: np.ndarray) -> None:
        n = len(self._meter)
        if len(x) >= n:
            self._meter[:] = x[-n:]
        else:
            self._meter[:-len(x)] = self._meter[len(x):].copy()
            self._meter[-len(x):] = x
        self.level_dbfs = float(level_dbfs(self._meter)[0])

    def feed(self, chunk) -> list[dict]:
        """Add samples at ``sample_rate`` (any layout runtime/audio.py takes: 1-D, or 2-D with channels, averaged;
        float or int16/int32 PCM); returns events."""
        x = to_float32_mono(chunk, "listener chunk", allow_empty=True)  # int16/int32 PCM scaled, NaN/Inf refused
        if x.size == 0:
            return []
        t0 = self.time_s
        self.samples += len(x)
        self._update_level(x)
        out: list[dict] = []
        for shot in self.recorder.feed(x):  # fed always: keeps the noise floor current
            if self.plan:
                out += self._shot(shot)
        last, seen = self.stream.last, self.stream.windows_seen
        try:
            events = self.stream.feed(x)
        except Exception as exc:  # a bad chunk or an embedder failure: report, keep listening
            return out + [{"event": "error", "message": str(exc), "time": round(t0, 3)}]
        if self.stream.windows_seen > seen:  # new windows: fresh scores, or none when they were quiet
            self._stale = self.stream.last is last
        for ev in events:
            if self.plan or ev.time_s < self.hold_until:
                continue
            d = {"event": "detection", "label": ev.label, "score": round(float(ev.score), 4),
                 "time": round(float(ev.time_s), 3)}
            self.last_detection = d
            out.append(d)
        return out

    def _shot(self, shot: Shot) -> list[dict]:
        e = self.plan[0]
        windows = self.shot_windows(shot)
        e.groups += [e.heard] * len(windows)  # the windows of one shot are one clip for the unknown calibration
        e.clips += windows
        e.times.append(shot.onset_s)
        end = shot.start_s + len(shot.audio) / self.rate
        self.hold_until = max(self.hold_until, end)
        out = [{"event": "shot", "label": e.label, "n": e.heard, "of": e.shots, "time": round(shot.onset_s, 3),
                "level_dbfs": round(shot.level_dbfs, 1)}]
        if e.done:
            self.plan.popleft()
            try:
                self.learner.learn_many(e.clips, e.label, sample_rate=self.rate, groups=e.groups)
            except Exception as exc:  # e.g. every window below the learner's gate: nothing learned
                return out + [{"event": "error", "message": f"could not learn {e.label!r}: {exc}",
                               "time": round(shot.onset_s, 3)}]
            out.append({"event": "learned", "label": e.label, "shots": e.shots, "time": round(end, 3)})
        return out


__all__ = ["ShotRecorder", "Shot", "Listener", "Enrolment"]
