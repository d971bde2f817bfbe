"""``edge-pace devices`` and ``edge-pace listen``: the microphone on the device (no torch imported).

``listen`` runs a bundle's learner on live audio. Interactively it shows a terminal view (top classes with
score bars, "unknown", input level, last detection) and reads keys in cbreak mode: ``l`` teaches a new
class (type its name, Enter, then make the sound K times), ``f`` forgets one, ``c`` cancels an enrolment,
``s`` saves, ``q`` quits (and saves). With ``--learn LABEL --shots K`` (repeatable) or ``--json`` it runs
headless: it enrols those classes from the first sounds heard, in order, then prints detections as JSON
lines. Audio flows callback -> bounded queue -> this loop, so keys and learning never block the callback.
The learned state is saved atomically after every learn/forget (``--no-autosave`` to turn off), on
quit, on ``--seconds`` and on errors (a lost device included).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

EXIT_DEVICE = 3  # the device went away mid-run (state saved)
EXIT_INCOMPLETE = 4  # --learn classes still missing shots at the end (what was complete is saved)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _device_spec(device: Optional[str]):
    return None if device is None else (int(device) if device.strip().isdigit() else device)


# ---------------------------------------------------------------------------------------------- devices
def devices_cmd() -> None:
    """List the audio input devices (index, name, host API, channels, native rate; * = default)."""
    from rich.console import Console
    from rich.table import Table

    from edge_pace.runtime.microphone import MicrophoneError, list_input_devices

    try:
        devs = list_input_devices()
    except MicrophoneError as exc:
        _fail(str(exc))
    if not devs:
        from edge_pace.runtime.microphone import _no_input_message

        _fail(_no_input_message(), 1)
    table = Table(title="input devices")
    for col in ("", "index", "name", "host API", "channels", "native rate"):
        table.add_column(col)
    for d in devs:
        table.add_row("*" if d.is_default else "", str(d.index), d.name, d.hostapi, str(d.channels), f"{d.default_rate} Hz")
    Console(width=160).print(table)


# ---------------------------------------------------------------------------------------------- session
class _Session:
    """Learner + microphone + listener + saving, shared by the JSON and the interactive modes."""

    def __init__(self, bundle: Path, device, rate, int8: bool, threads: int, state: Optional[Path], shots: int,
                 buffer_seconds: float, autosave: bool) -> None:
        from edge_pace.runtime.learner import Learner
        from edge_pace.runtime.microphone import Listener, Microphone, find_input_device

        find_input_device(device)  # fail fast (no sounddevice, no such device) before loading the model
        kw = {"int8": int8, "threads": threads}
        if state is not None:
            kw["state"] = state if state.is_file() else False
        self.learner = Learner.load(bundle, **kw)
        self.state_path = state or self.learner.state_path
        self.saved_version = self.learner.version
        self.autosave = autosave
        self.mic = Microphone(device, rate, buffer_seconds=buffer_seconds).open()
        self.listener = Listener(self.learner, self.mic.rate, shots=shots)
        self._dropped = 0
        self._warned = -math.inf

    def save(self, reason: str) -> list[dict]:
        """Save the state atomically if it changed since the last save; returns the "saved" event (or none)."""
        if self.learner.version == self.saved_version:
            return []
        try:
            path = self.learner.save(self.state_path)
        except OSError as exc:  # disk full, read-only folder: the previous state file is intact (atomic write)
            return [{"event": "error", "time": round(self.listener.time_s, 3),
                     "message": f"could not save the learned state to {self.state_path}: {exc}"}]
        self.saved_version = self.learner.version
        return [{"event": "saved", "path": str(path), "classes": self.learner.classes, "reason": reason}]

    def changed(self, reason: str) -> list[dict]:
        return self.save(reason) if self.autosave else []

    def pump(self, seconds: Optional[float], max_chunks: int = 64, timeout: float = 0.05) -> tuple[list[dict], bool]:
        """Read and process queued audio; returns (events, finished: the --seconds limit was reached)."""
        events: list[dict] = []
        for i in range(max_chunks):
            chunk = self.mic.read(timeout if i == 0 else 0)
            if chunk is None:
                break
            done = False
            if seconds is not None:
                left = int(round(seconds * self.mic.rate)) - self.listener.samples
                if left <= len(chunk):
                    chunk, done = chunk[: max(left, 0)], True
            if len(chunk):
                for e in self.listener.feed(chunk):
                    events.append(e)
                    if e["event"] == "learned":
                        events += self.changed("learned")
            if done:
                return events, True
        now = time.monotonic()
        if self.mic.dropped_blocks > self._dropped and now - self._warned >= 5.0:  # at most one warning per 5 s
            self._dropped, self._warned = self.mic.dropped_blocks, now
            events.append({"event": "warning", "time": round(self.listener.time_s, 3),
                           "message": f"recognition is slower than real time: {self.mic.dropped_seconds:.1f} s of "
                                      "audio dropped so far (try --int8, or a machine with more CPU)"})
        return events, False

    def close(self) -> None:
        self.mic.close()


def _install_sigterm(stop: dict) -> None:
    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------------------------- JSON mode
def _run_json(s: _Session, plan: list[tuple[str, int]], seconds: Optional[float], emit) -> int:
    from edge_pace.runtime.microphone import DeviceLost

    for label, k in plan:
        s.listener.enrol(label, k)
    emit({"event": "listening", "device": s.mic.device.name, "device_index": s.mic.device.index,
          "rate": s.mic.rate, "bundle_rate": s.learner.sample_rate, "fell_back": s.mic.fell_back,
          "classes": s.learner.classes, "enrol": [{"label": lb, "shots": k} for lb, k in plan]})
    if s.mic.notice:
        typer.echo(s.mic.notice, err=True)
    stop = {"now": False}
    _install_sigterm(stop)
    code = 0
    try:
        while not stop["now"]:
            events, finished = s.pump(seconds)
            for e in events:
                emit(e)
            if finished:
                break
    except KeyboardInterrupt:
        pass
    except DeviceLost as exc:
        emit({"event": "error", "message": str(exc), "time": round(s.listener.time_s, 3)})
        typer.secho(f"error: {exc}; learned state is saved", fg=typer.colors.RED, err=True)
        code = EXIT_DEVICE
    finally:
        s.close()
        for e in s.save("exit"):
            emit(e)
    missing = [{"label": e.label, "heard": e.heard, "shots": e.shots} for e in s.listener.plan]
    emit({"event": "stopped", "time": round(s.listener.time_s, 3), "classes": s.learner.classes,
          "dropped_seconds": round(s.mic.dropped_seconds, 3), "overflows": s.mic.overflows,
          **({"incomplete": missing} if missing else {})})
    if missing and code == 0:
        typer.echo("not learned (too few shots heard): " + ", ".join(f"{m['label']} ({m['heard']}/{m['shots']})"
                                                                     for m in missing), err=True)
        code = EXIT_INCOMPLETE
    return code


# ---------------------------------------------------------------------------------------------- interactive
class KeyReader:
    """Keys from the terminal in cbreak mode, polled without blocking (restored on exit)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdin
        self.enabled = self.stream.isatty()
        self._old = None

    def __enter__(self) -> "KeyReader":
        if self.enabled:
            import termios
            import tty

            fd = self.stream.fileno()
            self._old = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._old)

    def poll(self) -> list[str]:
        """Keys typed since the last poll: characters, "enter", "backspace", "esc" (escape sequences dropped)."""
        if not self.enabled:
            return []
        import select

        fd = self.stream.fileno()
        data = b""
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            data += chunk
        return parse_keys(data.decode("utf-8", errors="ignore"))


def parse_keys(text: str) -> list[str]:
    keys, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            if i + 1 < len(text) and text[i + 1] in "[O":  # CSI/SS3 sequence (arrows, F-keys): skip it
                j = i + 2
                while j < len(text) and not text[j].isalpha() and text[j] != "~":
                    j += 1
                i = j + 1
                continue
            keys.append("esc")
        elif ch in "\r\n":
            keys.append("enter")
        elif ch in "\x7f\x08":
            keys.append("backspace")
        elif ch == "\x03":
            keys.append("ctrl-c")
        elif ch.isprintable():
            keys.append(ch)
        i += 1
    return keys


class _View:
    """State of the interactive view and its rendering (rich)."""

    def __init__(self, s: _Session, bundle: Path, shots: int) -> None:
        self.s, self.bundle, self.shots = s, bundle, shots
        self.mode = "normal"  # normal | name | forget
        self.typed = ""
        self.message = "listening"
        self.detections: list[dict] = []
        self.quit = False

    def handle(self, key: str) -> None:
        s, li = self.s, self.s.listener
        if self.mode in ("name", "forget"):
            if key == "esc":
                self.mode, self.typed, self.message = "normal", "", "cancelled"
            elif key == "backspace":
                self.typed = self.typed[:-1]
            elif key == "enter":
                name, mode = self.typed.strip(), self.mode
                self.mode, self.typed = "normal", ""
                if not name:
                    self.message = "no name given"
                elif mode == "name":
                    try:
                        li.enrol(name, self.shots)
                        self.message = f"make the sound {name!r} {self.shots} times"
                    except (ValueError, TypeError) as exc:
                        self.message = f"cannot learn {name!r}: {exc}"
                else:
                    try:
                        s.learner.forget(name)
                        self.message = f"forgot {name!r}"
                        for e in s.changed("forgot"):
                            self.event(e)
                    except KeyError:
                        self.message = f"no class {name!r}; classes: {', '.join(s.learner.classes) or 'none'}"
            elif len(key) == 1 and len(self.typed) < 40:
                self.typed += key
            return
        if key == "l":
            self.mode, self.typed = "name", ""
        elif key == "f":
            self.mode, self.typed = ("forget", "") if s.learner.classes else ("normal", "")
            if not s.learner.classes:
                self.message = "nothing to forget yet"
        elif key in ("c", "esc") and li.enrolling is not None:
            e = li.cancel()
            self.message = f"enrolment of {e.label!r} cancelled ({e.heard} shots dropped)"
        elif key == "s":
            v = s.learner.version
            if v == s.saved_version:
                self.message = f"nothing new to save ({s.state_path})"
            else:
                for e in s.save("key"):
                    self.event(e)
        elif key in ("q", "ctrl-c"):
            self.quit = True

    def event(self, e: dict) -> None:
        kind = e["event"]
        if kind == "detection":
            self.detections = (self.detections + [e])[-5:]
        elif kind == "shot":
            self.message = f"{e['label']!r}: shot {e['n']}/{e['of']} heard"
        elif kind == "learned":
            self.message = f"learned {e['label']!r} from {e['shots']} shots: now listening for it"
        elif kind in ("error", "warning"):
            self.message = e["message"]
        elif kind == "saved":
            saved = f"saved {len(e['classes'])} classes to {e['path']}"
            self.message = f"{self.message}; {saved}" if e.get("reason") in ("learned", "forgot") else saved

    def render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        s, li = self.s, self.s.listener

        def bar(frac: float, width: int = 30) -> str:
            n = int(round(max(0.0, min(1.0, frac)) * width))
            return "█" * n + "░" * (width - n)

        lines = []
        dev = s.mic.device
        lines.append(Text(f"device {dev.index}: {dev.name}   {s.mic.rate} Hz → {s.learner.sample_rate} Hz   "
                          f"audio {li.time_s:7.1f} s", style="dim"))
        lv = li.level_dbfs
        lvf = 0.0 if not math.isfinite(lv) else (lv + 60.0) / 60.0
        lines.append(Text(f"level  {bar(lvf, 40)} {lv:6.1f} dBFS" if math.isfinite(lv) else f"level  {bar(0, 40)}  silent"))
        lines.append(Text(""))
        classes = s.learner.classes
        sc = li.scores
        table = Table(box=None, show_header=False, padding=(0, 1))
        table.add_column(width=16)
        table.add_column()
        table.add_column(justify="right")
        if not classes:
            lines.append(Text("no classes yet: press l to teach one", style="yellow"))
        elif sc is None or set(sc.ridge) != set(classes):
            lines.append(Text("now: (quiet)", style="dim"))
        else:
            head = "unknown" if sc.unknown else sc.label
            lines.append(Text(f"now: {head}", style="bold red" if sc.unknown else "bold green"))
            ranked = sorted(sc.ridge.items(), key=lambda kv: -kv[1])[:5]
            for name, v in ranked:
                table.add_row(name, bar(v), f"{v:5.2f}")
            lines.append(table)
            if sc.threshold is not None:
                lines.append(Text(f"unknown below {sc.threshold:.2f}", style="dim"))
        lines.append(Text(""))
        if self.detections:
            d = self.detections[-1]
            ago = li.time_s - d["time"]
            lines.append(Text(f"last detection: {d['label']} ({d['score']:.2f}) at {d['time']:.1f} s, {ago:.1f} s ago",
                              style="bold"))
        else:
            lines.append(Text("last detection: -"))
        counts = s.learner.counts
        lines.append(Text("classes: " + (", ".join(f"{c} ({counts.get(c, 0)})" for c in classes) or "none")))
        e = li.enrolling
        if e is not None:
            lines.append(Text(f"enrolling {e.label!r}: make the sound {e.shots} times, {e.heard}/{e.shots} heard",
                              style="bold yellow"))
        if self.mode == "name":
            lines.append(Text(f"name of the new class: {self.typed}▌  (Enter to start, Esc to cancel)", style="bold cyan"))
        elif self.mode == "forget":
            lines.append(Text(f"forget which class: {self.typed}▌  (Enter, Esc to cancel)", style="bold cyan"))
        else:
            lines.append(Text(self.message, style="italic"))
        if s.mic.dropped_blocks or s.mic.overflows:
            lines.append(Text(f"dropped {s.mic.dropped_seconds:.1f} s, {s.mic.overflows} input overflows", style="red"))
        lines.append(Text(""))
        lines.append(Text("keys: [l] learn a new class  [f] forget  [c] cancel  [s] save  [q] quit", style="dim"))
        return Panel(Group(*lines), title=f"edge-pace listen — {self.bundle}", expand=False, width=96)


def _run_interactive(s: _Session, bundle: Path, shots: int, seconds: Optional[float]) -> int:
    from rich.console import Console
    from rich.live import Live

    from edge_pace.runtime.microphone import DeviceLost

    view = _View(s, bundle, shots)
    if s.mic.notice:
        view.message = s.mic.notice
    stop = {"now": False}
    _install_sigterm(stop)
    code = 0
    console = Console()
    with KeyReader() as keys, Live(view.render(), console=console, auto_refresh=False, transient=False) as live:
        if not keys.enabled:
            view.message = "stdin is not a terminal: keys are off (use --learn for scripts)"
        last_draw = 0.0
        try:
            while not (view.quit or stop["now"]):
                events, finished = s.pump(seconds, max_chunks=16, timeout=0.03)
                for e in events:
                    view.event(e)
                for k in keys.poll():
                    view.handle(k)
                now = time.monotonic()
                if now - last_draw >= 0.1 or events:
                    live.update(view.render(), refresh=True)
                    last_draw = now
                if finished:
                    break
        except KeyboardInterrupt:
            pass
        except DeviceLost as exc:
            lost = str(exc)
            view.message = f"error: {lost}"
            code = EXIT_DEVICE
        finally:
            s.close()
            try:
                for e in s.save("exit"):
                    view.event(e)
            finally:
                live.update(view.render(), refresh=True)
    if code == EXIT_DEVICE:
        typer.secho(f"error: {lost}; learned state is saved", fg=typer.colors.RED, err=True)
    return code


# ---------------------------------------------------------------------------------------------- listen
def listen_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder or zip (learned state is kept beside it)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Input device name (or unique part of it) "
                                         "or index; see `edge-pace devices`. Default: the system's default input."),
    learn: Optional[List[str]] = typer.Option(None, "--learn", help="Headless: learn this class from the next "
                                              "--shots sounds heard (repeat for several classes, in order)."),
    shots: Optional[List[int]] = typer.Option(None, "--shots", help="Shots per class: one value for all, or one "
                                              "per --learn (default 3)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Stop after this many seconds of audio."),
    json_out: bool = typer.Option(False, "--json", help="Headless JSON-lines output even without --learn."),
    rate: Optional[int] = typer.Option(None, "--rate", help="Ask the device for this rate (Hz); a rate it refuses "
                                       "falls back to its native rate. Default: native (the runtime resamples)."),
    state: Optional[Path] = typer.Option(None, "--state", help="Learned state file to load (if present) and save. "
                                         "Default: the bundle's state.safetensors."),
    int8: bool = typer.Option(False, "--int8", help="Use the bundle's int8 embedder."),
    threads: int = typer.Option(1, "--threads", help="ONNX Runtime threads."),
    buffer_seconds: float = typer.Option(10.0, "--buffer-seconds", help="Audio held between the device and the "
                                         "recogniser; beyond it new audio is dropped (and reported)."),
    autosave: bool = typer.Option(True, "--autosave/--no-autosave", help="Save after every learn/forget."),
) -> None:
    """Listen to a microphone: live view of the top classes, teach new classes by example, detect them.

    Keys in the live view: l learn a new class (type its name, Enter, make the sound --shots times), f forget,
    c cancel an enrolment, s save, q quit (saves). Headless (--learn/--json): JSON lines on stdout.
    """
    from edge_pace.runtime.bundle import BundleError
    from edge_pace.runtime.microphone import MicrophoneError
    from edge_pace.runtime.state import StateError

    learn = list(learn or [])
    shots = list(shots or [])
    if shots and any(k < 1 for k in shots):
        _fail(f"--shots must be >= 1, got {shots}")
    if learn:
        if len(shots) not in (0, 1, len(learn)):
            _fail(f"give one --shots for all classes or one per --learn; got {len(learn)} --learn and "
                  f"{len(shots)} --shots")
        per = shots if len(shots) == len(learn) else [shots[0] if shots else 3] * len(learn)
        plan = list(zip(learn, per))
    else:
        if len(shots) > 1:
            _fail("several --shots need as many --learn")
        plan = []
    if seconds is not None and not seconds > 0:
        _fail(f"--seconds must be > 0, got {seconds}")
    headless = bool(plan) or json_out or not sys.stdout.isatty()

    def emit(e: dict) -> None:
        sys.stdout.write(json.dumps(e) + "\n")
        sys.stdout.flush()

    from edge_pace.runtime.learner import check_label

    for label, _ in plan:
        try:
            check_label(label)
        except (ValueError, TypeError) as exc:
            _fail(f"--learn {label!r}: {exc}")
    try:
        s = _Session(bundle, _device_spec(device), rate, int8, threads, state, shots[0] if shots else 3,
                     buffer_seconds, autosave)
    except (MicrophoneError, BundleError, StateError, ValueError) as exc:
        _fail(str(exc))
    if headless:
        code = _run_json(s, plan, seconds, emit)
    else:
        code = _run_interactive(s, bundle, shots[0] if shots else 3, seconds)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices_cmd)
    app.command("listen")(listen_cmd)
