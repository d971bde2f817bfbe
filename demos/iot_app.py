"""A headless sound-event app for a small device: listen, report events, learn new classes when asked.

    python demos/iot_app.py BUNDLE [--device NAME|INDEX | --wav FILE|-] [--inbox DIR] [--poll 2]
                            [--realtime] [--seconds S] [--state FILE]

Input: the microphone (default), a WAV/FLAC file (``--wav FILE``, ``--realtime`` paces it like a live
source) or a WAV stream on stdin (``--wav -``, e.g. ``arecord -f S16_LE -r 16000 | ...``).
Events: one JSON object per line on stdout, or to any callback (``IotApp(on_event=...)``):
``detection`` (label, score, time), ``learned`` (label, clips, classes), ``error``, ``started``,
``stopped``. The app is one live session (edge_pace.runtime.live: the state file's lock for the whole run,
saving, the ``--seconds`` limit), as ``edge-pace listen`` is. Learning: put labelled clips in
``INBOX/<label>/*.wav``; a label folder whose files have not changed for ``--settle`` seconds is learned in
one closed-form update (``Learner.learn_many``), the state is saved atomically at once (temp file, fsync,
rename: a power cut leaves the old or the new state, never a broken one), and the clips move to
``INBOX/.done/<label>/<stamp>/`` (``.failed/`` with ``reason.txt`` when they cannot be learned). The inbox is rescanned every ``--poll`` seconds, and at once
on SIGUSR1. SIGTERM/SIGINT stop cleanly (state saved).
Memory is bounded, whatever the run time: audio moves in fixed blocks through a bounded queue
(microphone) or one read buffer (WAV), the stream keeps fixed window buffers, and recent events sit in a
fixed-size ring (``IotApp.recent``).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edge_pace.runtime.audio import downmix, pcm_to_float32
from edge_pace.runtime.live import LiveSession
from edge_pace.runtime.microphone import DeviceLost, Microphone

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


def print_event(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class IotApp:
    """Detection + inbox learning over a ``Learner``; ``feed`` audio, ``scan_inbox`` for new classes."""

    def __init__(self, bundle: str | Path, sample_rate: int, inbox: str | Path | None = None,
                 on_event: Callable[[dict], None] = print_event, state: str | Path | None = None,
                 settle: float = 1.0, history: int = 100, threads: int = 1) -> None:
        self.live = LiveSession.open(bundle, sample_rate, state=state or None, threads=threads)
        self.learner, self.listener = self.live.learner, self.live.listener
        self.inbox = Path(inbox) if inbox else None
        self.settle = settle
        self.on_event = on_event
        self.recent: deque[dict] = deque(maxlen=history)  # ring of the latest events
        if self.inbox:
            self.inbox.mkdir(parents=True, exist_ok=True)

    def emit(self, event: dict) -> None:
        self.recent.append(event)
        self.on_event(event)

    def feed(self, chunk: np.ndarray) -> bool:
        """Feed audio; returns whether the session's time limit is reached."""
        events, finished = self.live.feed(chunk)  # detections (and errors: nothing is enrolled by sound here)
        for event in events:
            self.emit(event)
        return finished

    def save(self) -> None:
        """Write the state atomically when it changed since the last save (OSError when it cannot)."""
        self.live.save()

    def close(self) -> None:
        """Save (errors raise) and release the state lock."""
        try:
            self.live.save()
        finally:
            self.live.close()

    def scan_inbox(self) -> int:
        """Learn every settled label folder in the inbox; returns how many classes were learned."""
        if self.inbox is None or not self.inbox.is_dir():
            return 0
        learned = 0
        now = time.time()
        for folder in sorted(p for p in self.inbox.iterdir() if p.is_dir() and not p.name.startswith(".")):
            clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not clips or max(p.stat().st_mtime for p in clips) > now - self.settle:
                continue  # empty, or still being written
            stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**6}"
            try:
                self.learner.learn_many(clips, folder.name)
                self.save()  # atomic, right after the update
            except Exception as exc:  # a bad clip or label: nothing was learned; keep the clips for a look
                self._move(clips, self.inbox / ".failed" / folder.name / stamp, reason=str(exc))
                self.emit({"event": "error", "message": f"could not learn {folder.name!r}: {exc}",
                           "label": folder.name})
                continue
            self._move(clips, self.inbox / ".done" / folder.name / stamp)
            learned += 1
            self.emit({"event": "learned", "label": folder.name, "clips": len(clips),
                       "classes": self.learner.classes, "time": round(self.listener.time_s, 3)})
        return learned

    @staticmethod
    def _move(files: list[Path], dest: Path, reason: str | None = None) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.move(str(f), dest / f.name)
        if reason is not None:
            (dest / "reason.txt").write_text(reason + "\n")
        try:
            files[0].parent.rmdir()  # the label folder, when nothing else is in it
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------- sources
def read_wav_header(fd: int) -> tuple[int, int, str]:
    """Parse a RIFF/WAVE header from a (possibly non-seekable) file descriptor up to the data chunk.
    Returns (rate, channels, dtype) with dtype '<i2' (PCM 16) or '<f4' (float 32)."""

    def need(n: int) -> bytes:
        out = b""
        while len(out) < n:
            part = os.read(fd, n - len(out))
            if not part:
                raise ValueError("WAV stream ended inside its header")
            out += part
        return out

    riff = need(12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError("not a WAV stream (no RIFF/WAVE header)")
    rate = channels = None
    dtype = None
    while True:
        cid, size = struct.unpack("<4sI", need(8))
        if cid == b"fmt ":
            body = need(size + (size & 1))
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if fmt == 0xFFFE and size >= 26:
                fmt = struct.unpack("<H", body[24:26])[0]  # WAVE_FORMAT_EXTENSIBLE: the sub-format
            dtype = {(1, 16): "<i2", (3, 32): "<f4"}.get((fmt, bits))
            if dtype is None:
                raise ValueError(f"WAV stream format {fmt} with {bits} bits is not supported (PCM 16 or float 32)")
        elif cid == b"data":
            if rate is None:
                raise ValueError("WAV stream has its data before its fmt chunk")
            return rate, channels, dtype
        else:
            need(size + (size & 1))


def stdin_wav(block_seconds: float = 0.1, timeout: float = 0.1) -> tuple[int, Iterator[np.ndarray | None]]:
    """(rate, chunks) of a WAV stream on stdin; yields None when nothing arrived within ``timeout``."""
    fd = sys.stdin.fileno()
    rate, channels, dtype = read_wav_header(fd)
    frame = channels * np.dtype(dtype).itemsize
    block = int(block_seconds * rate) * frame

    def gen():
        buf = bytearray()
        while True:
            if not select.select([fd], [], [], timeout)[0]:
                yield None
                continue
            data = os.read(fd, block - len(buf))
            if not data:
                break
            buf += data
            n = len(buf) // frame * frame
            if n >= block or (n and not select.select([fd], [], [], 0)[0]):
                yield _to_float(bytes(buf[:n]), dtype, channels)
                del buf[:n]
        if len(buf) >= frame:
            yield _to_float(bytes(buf[: len(buf) // frame * frame]), dtype, channels)

    return rate, gen()


def _to_float(data: bytes, dtype: str, channels: int) -> np.ndarray:
    return downmix(pcm_to_float32(np.frombuffer(data, dtype=dtype).reshape(-1, channels)))


def file_wav(path: str, block_seconds: float = 0.1, realtime: bool = False) -> tuple[int, Iterator[np.ndarray]]:
    """(rate, chunks) of an audio file, read block by block (one buffer), optionally paced in real time."""
    import soundfile as sf

    f = sf.SoundFile(path)
    rate = f.samplerate

    def gen():
        start = time.monotonic()
        done = 0
        with f:
            for block in f.blocks(blocksize=int(block_seconds * rate), dtype="float32", always_2d=True):
                yield downmix(block)
                done += len(block)
                if realtime:
                    time.sleep(max(0.0, start + done / rate - time.monotonic()))

    return rate, gen()


def mic_source(mic: Microphone) -> Iterator[np.ndarray | None]:
    while True:
        yield mic.read(0.1)


# ---------------------------------------------------------------------------------------------- main
def run(app: IotApp, chunks: Iterator[np.ndarray | None], poll: float, seconds: float | None, flags: dict) -> None:
    """The loop: rescan the inbox when asked (SIGUSR1) or every ``poll`` s, feed audio, stop when told or after
    ``seconds`` of audio in all (None: no limit)."""
    app.live.seconds = seconds
    app.scan_inbox()
    next_scan = time.monotonic() + poll
    for chunk in chunks:
        if flags.get("stop"):
            break
        if flags.pop("rescan", False) or time.monotonic() >= next_scan:
            app.scan_inbox()
            next_scan = time.monotonic() + poll
        if chunk is None or not len(chunk):
            continue
        if app.feed(chunk):
            break


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Headless sound-event detection with learning from an inbox folder.")
    p.add_argument("bundle")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", default=None, help="microphone name or index (default: system default input)")
    src.add_argument("--wav", default=None, help="read this audio file, or '-' for a WAV stream on stdin")
    p.add_argument("--inbox", default="inbox", help="watch folder: INBOX/<label>/*.wav are learned (default ./inbox)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between inbox scans (SIGUSR1: scan now)")
    p.add_argument("--settle", type=float, default=1.0, help="a label folder is learned once unchanged this long")
    p.add_argument("--state", default=None, help="state file (default: the bundle's state.safetensors)")
    p.add_argument("--realtime", action="store_true", help="pace --wav FILE like a live source")
    p.add_argument("--seconds", type=float, default=None, help="stop after this much audio")
    a = p.parse_args(argv)

    flags: dict = {}
    signal.signal(signal.SIGUSR1, lambda *_: flags.__setitem__("rescan", True))
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    mic = None
    try:
        if a.wav == "-":
            rate, chunks = stdin_wav()
        elif a.wav:
            rate, chunks = file_wav(a.wav, realtime=a.realtime)
        else:
            mic = Microphone(a.device).open()  # a name, or an index as digits
            rate, chunks = mic.rate, mic_source(mic)
    except Exception as exc:  # no device, no sounddevice, unreadable file or stream
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = IotApp(a.bundle, rate, a.inbox, state=a.state, settle=a.settle)
    app.emit({"event": "started", "rate": rate, "classes": app.learner.classes,
              "source": a.wav or (mic.device.name if mic else None)})
    code = 0
    try:
        run(app, chunks, a.poll, a.seconds, flags)
    except KeyboardInterrupt:
        pass
    except DeviceLost as exc:
        app.emit({"event": "error", "message": str(exc)})
        code = 3
    finally:
        if mic is not None:
            mic.close()
        app.close()
        app.emit({"event": "stopped", "time": round(app.listener.time_s, 3), "classes": app.learner.classes})
    return code


if __name__ == "__main__":
    sys.exit(main())
