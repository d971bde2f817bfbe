"""Live input for the device runtime: a microphone (sounddevice/PortAudio), shot segmentation for teaching
new sounds by example, and ``Listener``, which ties a microphone's chunks to a ``Learner``'s stream.

    from edge_pace.runtime.learner import Learner
    from edge_pace.runtime.microphone import Microphone, Listener

    learner = Learner.load("bundle/")
    with Microphone(device="USB") as mic:               # name (substring) or index; None = system default
        listener = Listener(learner, mic.rate)
        listener.enrol("knock", shots=3)               # the next 3 sounds heard teach "knock"
        for chunk in mic.chunks():
            for event in listener.feed(chunk):         # dicts, e.g. {"event": "detection", "label": ...}
                print(event)

Microphone. sounddevice is an optional dependency (``pip install 'edge-pace[mic]'``, and the PortAudio
library, ``apt-get install libportaudio2`` on Debian/Ubuntu); without it ``MicrophoneUnavailable`` says so.
The device is opened at the requested rate when it supports it, else at its native (default) rate, and by
default at its native rate: the stream resamples with soxr (better than most drivers' converters). Audio
goes from PortAudio's callback thread to a bounded queue (``buffer_seconds``) that the main loop drains:
the callback never blocks. When the queue is full the newest block is dropped and counted
(``dropped_seconds``); PortAudio's own input overflows are counted too (``overflows``). A device that stops
delivering (unplugged, server gone) raises ``DeviceLost`` from ``read``; a name that matches no input
device raises ``DeviceNotFound`` listing the inputs there are. All of these are ``MicrophoneError``.

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
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edge_pace.runtime.audio import AudioError, to_float32_mono

INSTALL_HINT = ("install the microphone extra with `pip install 'edge-pace[mic]'` and the PortAudio library "
                "(Debian/Ubuntu: `apt-get install libportaudio2`)")


class MicrophoneError(RuntimeError):
    """A microphone problem, with a message that says what to do."""


class MicrophoneUnavailable(MicrophoneError):
    """sounddevice or the PortAudio library is not installed."""


class DeviceNotFound(MicrophoneError):
    """No input device matches the request (or there is no input device at all)."""


class DeviceLost(MicrophoneError):
    """The input stream stopped delivering audio (device unplugged, sound server gone)."""


def import_sounddevice():
    """The sounddevice module, or ``MicrophoneUnavailable`` naming what to install."""
    try:
        import sounddevice
    except ImportError as exc:
        raise MicrophoneUnavailable(f"the Python package sounddevice is not installed ({exc}); {INSTALL_HINT}") from exc
    except OSError as exc:  # sounddevice raises OSError('PortAudio library not found')
        raise MicrophoneUnavailable(f"the PortAudio library could not be loaded ({exc}); {INSTALL_HINT}") from exc
    return sounddevice


# ---------------------------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class InputDevice:
    """An input device as PortAudio lists it."""

    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: int
    is_default: bool = False


def list_input_devices(sd=None) -> list[InputDevice]:
    """Every device with at least one input channel."""
    sd = sd or import_sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise MicrophoneError(f"PortAudio cannot list the audio devices ({exc})") from exc
    try:
        default_in = int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        default_in = -1
    if default_in < 0:
        try:
            default_in = int(sd.query_devices(kind="input")["index"])
        except (sd.PortAudioError, ValueError, KeyError, TypeError):
            default_in = -1
    out = []
    for d in devices:
        if int(d["max_input_channels"]) > 0:
            out.append(InputDevice(int(d["index"]), str(d["name"]), str(apis[d["hostapi"]]["name"]),
                                   int(d["max_input_channels"]), int(round(d["default_samplerate"])),
                                   int(d["index"]) == default_in))
    return out


def _no_input_message() -> str:
    return ("no audio input device found: plug in a microphone (check `arecord -l`), or start a sound server "
            "(PulseAudio/PipeWire) and use its device (e.g. --device pulse)")


def find_input_device(spec: str | int | None = None, sd=None) -> InputDevice:
    """Resolve ``spec`` to one input device: None = the default input (else the first one), an int or digit
    string = an index, a string = an exact name, else a unique case-insensitive substring of a name."""
    devices = list_input_devices(sd)
    if not devices:
        raise DeviceNotFound(_no_input_message())
    listing = "; ".join(f"{d.index}: {d.name}" for d in devices)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return next((d for d in devices if d.is_default), devices[0])
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        idx = int(spec)
        for d in devices:
            if d.index == idx:
                return d
        raise DeviceNotFound(f"no input device with index {idx}; input devices: {listing}")
    exact = [d for d in devices if d.name == spec]
    if exact:
        return exact[0]
    hits = [d for d in devices if spec.lower() in d.name.lower()]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise DeviceNotFound(f"{spec!r} matches several input devices ({'; '.join(f'{d.index}: {d.name}' for d in hits)}); "
                             "give the index or the full name")
    raise DeviceNotFound(f"no input device matching {spec!r}; input devices: {listing}")


# ---------------------------------------------------------------------------------------------- microphone
class Microphone:
    """A sounddevice input stream delivering float32 mono chunks through a bounded queue.

    ``device``: name, index or None (default input). ``sample_rate``: None = the device's native rate; a
    rate the device refuses falls back to the native one (``fell_back`` is True, ``notice`` says so).
    ``dtype``: the sample format asked of PortAudio, int16 (default: every device has it, and through ALSA's
    plug layer it is bit-exact where float32 was seen not to be) or float32; chunks are float32 either way.
    ``block_seconds``: chunk length; ``buffer_seconds``: most audio held between the callback and the reader.
    """

    def __init__(self, device: str | int | None = None, sample_rate: int | None = None, *, channels: int = 1,
                 dtype: str = "int16", block_seconds: float = 0.05, buffer_seconds: float = 10.0,
                 stall_seconds: float = 5.0) -> None:
        if dtype not in ("int16", "float32"):
            raise ValueError(f"dtype must be 'int16' or 'float32', got {dtype!r}")
        self.dtype = dtype
        if not block_seconds > 0 or not buffer_seconds >= block_seconds:
            raise ValueError(f"need block_seconds > 0 and buffer_seconds >= block_seconds, got {block_seconds}, "
                             f"{buffer_seconds}")
        if sample_rate is not None and (isinstance(sample_rate, bool) or int(sample_rate) != sample_rate
                                        or sample_rate <= 0):
            raise ValueError(f"sample_rate must be a positive integer in Hz or None (native rate), got {sample_rate!r}")
        self.requested = device
        self.requested_rate = None if sample_rate is None else int(sample_rate)
        self.channels = int(channels)
        self.block_seconds, self.buffer_seconds, self.stall_seconds = block_seconds, buffer_seconds, stall_seconds
        self.device: InputDevice | None = None
        self.rate = 0
        self.blocksize = 0
        self.fell_back = False
        self.notice = ""
        self.overflows = 0
        self.dropped_blocks = 0
        self.frames_in = 0
        self._stream = None
        self._queue: queue.Queue | None = None
        self._finished = threading.Event()
        self._closing = False
        self._last_data = 0.0
        self._sd = None

    # ------------------------------------------------------------------ open/close
    def open(self) -> "Microphone":
        """Find the device, pick the rate and start the stream."""
        sd = self._sd = import_sounddevice()
        dev = self.device = find_input_device(self.requested, sd)
        channels = max(1, min(self.channels, dev.channels))
        rate = self.requested_rate or dev.default_rate
        if self.requested_rate is not None:
            try:
                sd.check_input_settings(device=dev.index, samplerate=rate, channels=channels, dtype=self.dtype)
            except (sd.PortAudioError, ValueError) as exc:
                self.fell_back = True
                self.notice = (f"{dev.name} does not take {rate} Hz ({exc}); recording at its native "
                               f"{dev.default_rate} Hz and resampling")
                rate = dev.default_rate
        self.rate = int(rate)
        self.blocksize = max(1, int(round(self.block_seconds * self.rate)))
        self._queue = queue.Queue(maxsize=max(1, int(math.ceil(self.buffer_seconds / self.block_seconds))))
        self._finished.clear()
        self._closing = False
        try:
            self._stream = sd.InputStream(device=dev.index, samplerate=self.rate, channels=channels, dtype=self.dtype,
                                          blocksize=self.blocksize, callback=self._callback,
                                          finished_callback=self._finished.set)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self._stream = None
            raise MicrophoneError(f"cannot open input device {dev.index} ({dev.name}) at {self.rate} Hz, "
                                  f"{channels} channel(s): {exc}") from exc
        self._last_data = time.monotonic()
        return self

    def close(self) -> None:
        """Stop and close the stream (safe to call twice, and after the device was lost)."""
        self._closing = True
        s, self._stream = self._stream, None
        if s is not None:
            try:
                s.abort(ignore_errors=True)
                s.close(ignore_errors=True)
            except Exception:  # a lost device may fail to close; nothing is left to release on our side
                pass

    def __enter__(self) -> "Microphone":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ audio
    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread: never block here
        if status.input_overflow:
            self.overflows += 1
        if indata.dtype == np.int16:
            block = indata.mean(axis=1, dtype=np.float32) if indata.shape[1] > 1 else indata[:, 0].astype(np.float32)
            block *= 1.0 / 32768.0
        else:
            block = indata[:, 0].copy() if indata.shape[1] == 1 else indata.mean(axis=1, dtype=np.float32)
        try:
            self._queue.put_nowait(block)
        except queue.Full:
            self.dropped_blocks += 1

    @property
    def dropped_seconds(self) -> float:
        """Audio dropped because the reader fell behind by more than ``buffer_seconds``."""
        return self.dropped_blocks * self.blocksize / self.rate if self.rate else 0.0

    @property
    def active(self) -> bool:
        return self._stream is not None and not self._finished.is_set()

    def read(self, timeout: float = 0.1) -> np.ndarray | None:
        """The next chunk (float32 mono at ``rate``), or None when none came within ``timeout`` seconds.
        Raises ``DeviceLost`` when the stream has ended or delivered nothing for ``stall_seconds``."""
        if self._queue is None:
            raise MicrophoneError("the microphone is not open: call open() or use it as a context manager")
        try:
            block = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            now = time.monotonic()
            name = self.device.name if self.device else self.requested
            if self._finished.is_set() and not self._closing:
                raise DeviceLost(f"the input device {name!r} stopped delivering audio (unplugged, or its sound "
                                 "server stopped)") from None
            if self._stream is not None and now - self._last_data > self.stall_seconds:
                raise DeviceLost(f"no audio from input device {name!r} for {now - self._last_data:.1f} s "
                                 "(unplugged or stalled)") from None
            return None
        self._last_data = time.monotonic()
        self.frames_in += len(block)
        return block

    def chunks(self, timeout: float = 0.1) -> Iterator[np.ndarray]:
        """Chunks until the stream is closed (DeviceLost when the device goes away)."""
        while self._stream is not None or (self._queue is not None and not self._queue.empty()):
            block = self.read(timeout)
            if block is not None:
                yield block


# ---------------------------------------------------------------------------------------------- shots
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

    @property
    def capturing(self) -> bool:
        return self._shot is not None

    def feed(self, chunk: np.ndarray) -> list[Shot]:
        """Add float32 mono samples; returns the shots completed by them."""
        x = np.asarray(chunk, np.float32).reshape(-1)
        x = np.concatenate([self._pending, x]) if len(self._pending) else x
        nf = len(x) // self.frame
        self._pending = x[nf * self.frame :].copy()
        if nf == 0:
            return []
        frames = x[: nf * self.frame].reshape(nf, self.frame)
        with np.errstate(divide="ignore"):
            levels = 10.0 * np.log10(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / self.frame)
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
                with np.errstate(divide="ignore"):
                    level = float(10 * np.log10(np.mean(a.astype(np.float64) ** 2)))
                out.append(Shot(a, self._onset / self.rate, start / self.rate, level))
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
                 min_gate_dbfs: float = -50.0, smooth: int = 1, debounce_s: float | None = None) -> None:
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
        self.stream = learner.stream(self.rate, smooth=smooth, debounce_s=debounce_s)
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
        p = float(np.mean(self._meter.astype(np.float64) ** 2))
        self.level_dbfs = 10 * math.log10(p) if p > 0 else -math.inf

    def feed(self, chunk) -> list[dict]:
        """Add float32 mono samples at ``sample_rate`` (2-D [frames, channels] is averaged); returns events."""
        a = np.asarray(chunk)
        if a.size == 0:
            return []
        if a.ndim not in (1, 2):
            raise AudioError(f"listener chunk: expected 1-D mono or 2-D [frames, channels], got shape {a.shape}")
        x = to_float32_mono(a.reshape(-1), "listener chunk")  # int16/int32 PCM scaled, NaN/Inf refused
        x = x.reshape(a.shape).mean(axis=1, dtype=np.float32) if a.ndim == 2 else x
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


__all__ = ["Microphone", "MicrophoneError", "MicrophoneUnavailable", "DeviceNotFound", "DeviceLost", "InputDevice",
           "list_input_devices", "find_input_device", "import_sounddevice", "ShotRecorder", "Shot", "Listener",
           "Enrolment", "INSTALL_HINT"]
