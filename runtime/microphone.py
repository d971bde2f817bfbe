"""The microphone for the device runtime: PortAudio input devices through sounddevice, delivering float32 mono
chunks. Teaching sounds by example from these chunks is runtime/enrol.py; a whole live session (autosave, the
state lock, a time limit) is runtime/live.py.

    from edge_pace.runtime.microphone import Microphone

    with Microphone(device="USB") as mic:               # name (substring), index (or its digits); None = default
        for chunk in mic.chunks():                      # float32 mono at mic.rate
            ...

sounddevice is an optional dependency (``pip install 'edge-pace[mic]'``, and the PortAudio library,
``apt-get install libportaudio2`` on Debian/Ubuntu); without it ``MicrophoneUnavailable`` says so.
The device is opened at the requested rate when it supports it, else at its native (default) rate, and by
default at its native rate: the stream resamples with soxr (better than most drivers' converters). Audio
goes from PortAudio's callback thread to a bounded queue (``buffer_seconds``) that the main loop drains:
the callback never blocks. When the queue is full the newest block is dropped and counted
(``dropped_seconds``); PortAudio's own input overflows are counted too (``overflows``). A device that stops
delivering (unplugged, server gone) raises ``DeviceLost`` from ``read``; a name that matches no input
device raises ``DeviceNotFound`` listing the inputs there are. All of these are ``MicrophoneError``.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_pace.runtime.audio import downmix, pcm_to_float32

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


def no_input_message() -> str:
    return ("no audio input device found: plug in a microphone (check `arecord -l`), or start a sound server "
            "(PulseAudio/PipeWire) and use its device (e.g. --device pulse)")


def find_input_device(spec: str | int | None = None, sd=None) -> InputDevice:
    """Resolve ``spec`` to one input device: None = the default input (else the first one), an int or digit
    string = an index, a string = an exact name, else a unique case-insensitive substring of a name."""
    devices = list_input_devices(sd)
    if not devices:
        raise DeviceNotFound(no_input_message())
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
        block = downmix(pcm_to_float32(indata)).copy()  # PortAudio reuses indata's buffer
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


__all__ = ["Microphone", "MicrophoneError", "MicrophoneUnavailable", "DeviceNotFound", "DeviceLost", "InputDevice",
           "list_input_devices", "find_input_device", "import_sounddevice", "no_input_message", "INSTALL_HINT"]
