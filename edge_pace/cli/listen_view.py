"""The interactive view of ``edge-pace listen`` (rich): top classes with score bars, "unknown", input level, last
detection, and keys read in cbreak mode: ``l`` teach a new class (type its name, Enter, make the sound K times),
``b`` learn the next 10 sounds as background (what to ignore), ``f`` forget one, ``c`` cancel an enrolment, ``s``
save, ``q`` quit (saves). Runtime only: no torch."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import typer

EXIT_DEVICE = 3  # the device went away mid-run (state saved)


def install_sigterm(stop: dict) -> None:
    """SIGTERM sets ``stop["now"]``: the loops stop, close the device and save."""
    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)


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


BACKGROUND_SHOTS = 10  # sounds recorded by the ``b`` key as background


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


class View:
    """State of the interactive view and its rendering (rich)."""

    def __init__(self, s, bundle: Path, shots: int) -> None:
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
                        for e in s.live.changed("forgot"):
                            self.event(e)
                    except KeyError:
                        self.message = f"no class {name!r}; classes: {', '.join(s.learner.classes) or 'none'}"
            elif len(key) == 1 and len(self.typed) < 40:
                self.typed += key
            return
        if key == "l":
            self.mode, self.typed = "name", ""
        elif key == "b" and li.enrolling is None:  # background: the next sounds are what to ignore
            from edge_pace.runtime.analytic import BACKGROUND

            n = max(self.shots, BACKGROUND_SHOTS)
            li.enrol(BACKGROUND, n)
            self.message = f"background: the next {n} sounds are learned as sounds to ignore (c cancels)"
        elif key == "f":
            self.mode, self.typed = ("forget", "") if s.learner.classes else ("normal", "")
            if not s.learner.classes:
                self.message = "nothing to forget yet"
        elif key in ("c", "esc") and li.enrolling is not None:
            e = li.cancel()
            self.message = f"enrolment of {e.label!r} cancelled ({e.heard} shots dropped)"
        elif key == "s":
            if not s.live.unsaved:
                self.message = f"nothing new to save ({s.state_path})"
            else:
                for e in s.live.checkpoint("key"):
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


def run_interactive(s, bundle: Path, shots: int) -> int:
    """The live view until q, SIGTERM, the --seconds limit or a lost device; returns the exit code."""
    from rich.console import Console
    from rich.live import Live

    from edge_pace.runtime.microphone import DeviceLost

    view = View(s, bundle, shots)
    if s.mic.notice:
        view.message = s.mic.notice
    stop = {"now": False}
    install_sigterm(stop)
    code = 0
    console = Console()
    with KeyReader() as keys, Live(view.render(), console=console, auto_refresh=False, transient=False) as live:
        if not keys.enabled:
            view.message = "stdin is not a terminal: keys are off (use --learn for scripts)"
        last_draw = 0.0
        try:
            while not (view.quit or stop["now"]):
                events, finished = s.pump(max_chunks=16, timeout=0.03)
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
            try:
                for e in s.close():
                    view.event(e)
            finally:
                live.update(view.render(), refresh=True)
    if code == EXIT_DEVICE:
        typer.secho(f"error: {lost}; learned state is saved", fg=typer.colors.RED, err=True)
    return code
