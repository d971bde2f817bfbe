"""One live recognition session on the device: a ``Learner`` and a ``Listener`` (runtime/enrol.py) fed by any
audio source (microphone, file, WAV stream), with the learned state's lock, autosave and a time limit.
``edge-pace listen`` and demos/iot_app.py both run one.

    with LiveSession.open("bundle/", sample_rate=mic.rate, seconds=60) as live:
        for chunk in mic.chunks():
            events, finished = live.feed(chunk)       # detections, shots, learned, saved, ...
            if finished:
                break                                  # the time limit: closing saves what changed

* State: loaded from ``state`` when that file exists (else from the bundle: its learned state, or the exported
  classifier), saved to ``state`` or the bundle's state path, atomically (temp file, fsync, rename).
* Lock: the session holds the state file's lock (``<state>.lock``, runtime/state.py ``state_lock``) from
  opening to closing, as ``edge-pace learn``/``forget`` do for their update, so two processes never
  overwrite each other's learning. A lock held elsewhere for longer than ``lock_wait`` seconds is an error
  (``StateError``); a folder where the lock file cannot be created (read-only) runs unlocked with a notice.
* Autosave (on by default): after every class learned from live shots, and after ``changed()`` (e.g. a forget);
  ``close()`` saves what is still unsaved. A failed save (disk full, read-only) is an ``error`` event and the
  previous state file stays intact; the session goes on.
* Time limit: ``seconds`` of audio at most; ``feed`` cuts the chunk that crosses it and says it finished.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from edge_pace.runtime.audio import audio_array
from edge_pace.runtime.enrol import Listener
from edge_pace.runtime.learner import Learner
from edge_pace.runtime.memory import pin_mmap_threshold
from edge_pace.runtime.state import StateError, state_lock

LOCK_WAIT = 10.0  # seconds a session waits for a state lock held by another process


def load_learner(bundle: str | Path, state: str | Path | None = None, int8: bool = False, threads: int = 1,
                 **settings) -> Learner:
    """A bundle's learner with the learned state of ``state`` when that file exists (a new one starts from the
    exported classifier), else the bundle's own learned state if any. ``settings`` go to ``Learner.load`` (e.g.
    ``unknown_quantile``, the sensitivity)."""
    kw: dict = {"int8": int8, "threads": threads, **settings}
    if state is not None:
        kw["state"] = Path(state) if Path(state).is_file() else False
    return Learner.load(bundle, **kw)


class LiveSession:
    """A learner listening to live audio at ``sample_rate`` (see the module docstring)."""

    def __init__(self, learner: Learner, sample_rate: int, *, state_path: str | Path | None = None,
                 autosave: bool = True, seconds: float | None = None, shots: int = 3, lock: bool = True,
                 lock_wait: float = LOCK_WAIT, hop_s: float | None = None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.learner = learner
        self.state_path = Path(state_path) if state_path is not None else learner.state_path
        self.autosave = autosave
        self.seconds = seconds
        self.notice = ""
        self._lock = contextlib.ExitStack()
        if lock:
            try:
                self._lock.enter_context(state_lock(self.state_path, wait=lock_wait))
            except OSError as exc:
                self.notice = f"running without the state lock ({exc})"
        self.saved_version = learner.version
        self.listener = Listener(learner, sample_rate, shots=shots, hop_s=hop_s)
        pin_mmap_threshold()  # a long-running process: keep large temporaries off the heap (runtime/memory.py)

    @classmethod
    def open(cls, bundle: str | Path, sample_rate: int, *, state: str | Path | None = None, int8: bool = False,
             threads: int = 1, **options) -> "LiveSession":
        """Load a bundle's learner (``load_learner``) and start a session saving to ``state`` (default: the bundle's)."""
        return cls(load_learner(bundle, state, int8, threads), sample_rate, state_path=state, **options)

    # ------------------------------------------------------------------ audio
    @property
    def rate(self) -> int:
        return self.listener.rate

    @property
    def time_s(self) -> float:
        """Seconds of audio fed so far."""
        return self.listener.time_s

    def feed(self, chunk) -> tuple[list[dict], bool]:
        """Feed a chunk; returns (events, finished: the time limit is reached). Autosaves learned classes."""
        finished = False
        if self.seconds is not None:
            left = int(round(self.seconds * self.rate)) - self.listener.samples
            chunk = audio_array(chunk, "live chunk")  # [samples] or [samples, channels]
            if left <= len(chunk):
                chunk, finished = chunk[: max(left, 0)], True
        events: list[dict] = []
        if len(chunk):
            for e in self.listener.feed(chunk):
                events.append(e)
                if e["event"] == "learned":
                    events += self.changed("learned")
        return events, finished

    # ------------------------------------------------------------------ state
    @property
    def unsaved(self) -> bool:
        return self.learner.version != self.saved_version

    def save(self) -> Path | None:
        """Save the state atomically if it changed since the last save (OSError when it cannot be written)."""
        if not self.unsaved:
            return None
        path = self.learner.save(self.state_path)
        self.saved_version = self.learner.version
        return path

    def checkpoint(self, reason: str) -> list[dict]:
        """``save`` as events: ``saved`` (path, classes, reason), an ``error`` when it failed, none when unchanged."""
        try:
            path = self.save()
        except OSError as exc:  # disk full, read-only folder: the previous state file is intact (atomic write)
            return [{"event": "error", "time": round(self.time_s, 3),
                     "message": f"could not save the learned state to {self.state_path}: {exc}"}]
        if path is None:
            return []
        return [{"event": "saved", "path": str(path), "classes": self.learner.classes, "reason": reason}]

    def changed(self, reason: str) -> list[dict]:
        """Call after changing the learner outside ``feed`` (e.g. a forget): autosaves when that is on."""
        return self.checkpoint(reason) if self.autosave else []

    def close(self) -> list[dict]:
        """Save what is unsaved and release the state lock; returns the save's events."""
        try:
            return self.checkpoint("exit")
        finally:
            self._lock.close()

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["LiveSession", "load_learner", "StateError", "LOCK_WAIT"]
