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
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from edge_pace.cli.common import fail
from edge_pace.cli.listen_view import EXIT_DEVICE, install_sigterm, run_interactive

EXIT_INCOMPLETE = 4  # --learn classes still missing shots at the end (what was complete is saved)


# ---------------------------------------------------------------------------------------------- devices
def devices_cmd() -> None:
    """List the audio input devices (index, name, host API, channels, native rate; * = default)."""
    from rich.console import Console
    from rich.table import Table

    from edge_pace.runtime.microphone import MicrophoneError, list_input_devices

    try:
        devs = list_input_devices()
    except MicrophoneError as exc:
        fail(str(exc))
    if not devs:
        from edge_pace.runtime.microphone import no_input_message

        fail(no_input_message(), 1)
    table = Table(title="input devices")
    for col in ("", "index", "name", "host API", "channels", "native rate"):
        table.add_column(col)
    for d in devs:
        table.add_row("*" if d.is_default else "", str(d.index), d.name, d.hostapi, str(d.channels), f"{d.default_rate} Hz")
    Console(width=160).print(table)


# ---------------------------------------------------------------------------------------------- session
class _Session:
    """The microphone and one live session (runtime/live.py: learner, listener, state lock, autosave, time limit),
    shared by the JSON and the interactive modes."""

    def __init__(self, bundle: Path, device: Optional[str], rate, int8: bool, threads: int, state: Optional[Path],
                 shots: int, buffer_seconds: float, autosave: bool, seconds: Optional[float],
                 miss: Optional[float] = None, hop: Optional[float] = None) -> None:
        from edge_pace.runtime.live import LiveSession, load_learner
        from edge_pace.runtime.microphone import Microphone, find_input_device

        find_input_device(device)  # fail fast (no sounddevice, no such device) before loading the model
        learner = load_learner(bundle, state, int8=int8, threads=threads, unknown_quantile=miss)
        self.mic = Microphone(device, rate, buffer_seconds=buffer_seconds).open()  # after loading: no backlog
        try:
            self.live = LiveSession(learner, self.mic.rate, state_path=state, autosave=autosave, seconds=seconds,
                                    shots=shots, hop_s=hop)
        except BaseException:
            self.mic.close()
            raise
        self.learner, self.listener = learner, self.live.listener
        self._dropped = 0
        self._warned = -math.inf

    @property
    def state_path(self) -> Path:
        return self.live.state_path

    def pump(self, max_chunks: int = 64, timeout: float = 0.05) -> tuple[list[dict], bool]:
        """Read and process queued audio; returns (events, finished: the --seconds limit was reached)."""
        events: list[dict] = []
        for i in range(max_chunks):
            chunk = self.mic.read(timeout if i == 0 else 0)
            if chunk is None:
                break
            new, finished = self.live.feed(chunk)
            events += new
            if finished:
                return events, True
        now = time.monotonic()
        if self.mic.dropped_blocks > self._dropped and now - self._warned >= 5.0:  # at most one warning per 5 s
            self._dropped, self._warned = self.mic.dropped_blocks, now
            events.append({"event": "warning", "time": round(self.live.time_s, 3),
                           "message": f"recognition is slower than real time: {self.mic.dropped_seconds:.1f} s of "
                                      "audio dropped so far (try --int8, or a machine with more CPU)"})
        return events, False

    def close(self) -> list[dict]:
        """Stop the microphone, save what is unsaved and release the state lock; returns the save's events."""
        self.mic.close()
        return self.live.close()


# ---------------------------------------------------------------------------------------------- JSON mode
def _run_json(s: _Session, plan: list[tuple[str, int]], emit) -> int:
    from edge_pace.runtime.microphone import DeviceLost

    for label, k in plan:
        s.listener.enrol(label, k)
    emit({"event": "listening", "device": s.mic.device.name, "device_index": s.mic.device.index,
          "rate": s.mic.rate, "bundle_rate": s.learner.sample_rate, "fell_back": s.mic.fell_back,
          "classes": s.learner.classes, "enrol": [{"label": lb, "shots": k} for lb, k in plan]})
    if s.mic.notice:
        typer.echo(s.mic.notice, err=True)
    stop = {"now": False}
    install_sigterm(stop)
    code = 0
    try:
        while not stop["now"]:
            events, finished = s.pump()
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
        for e in s.close():
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
    miss: Optional[float] = typer.Option(None, "--miss", min=0.0, max=1.0, help="Sensitivity of the unknown rule: the "
                               "target fraction of genuine sounds called unknown (higher = fewer false accepts)."),
    hop: Optional[float] = typer.Option(None, "--hop", help="Seconds between recognition windows (default: the "
                               "bundle's, 0.5 s). 0.25 gives events ~0.25 s sooner for twice the embedder work."),
) -> None:
    """Listen to a microphone: live view of the top classes, teach new classes by example, detect them.

    Keys in the live view: l learn a new class (type its name, Enter, make the sound --shots times), b learn the
    next 10 sounds as background (sounds to ignore), f forget,
    c cancel an enrolment, s save, q quit (saves). Headless (--learn/--json): JSON lines on stdout.
    """
    from edge_pace.runtime.bundle import BundleError
    from edge_pace.runtime.microphone import MicrophoneError
    from edge_pace.runtime.state import StateError

    learn = list(learn or [])
    shots = list(shots or [])
    if shots and any(k < 1 for k in shots):
        fail(f"--shots must be >= 1, got {shots}")
    if learn:
        if len(shots) not in (0, 1, len(learn)):
            fail(f"give one --shots for all classes or one per --learn; got {len(learn)} --learn and "
                  f"{len(shots)} --shots")
        per = shots if len(shots) == len(learn) else [shots[0] if shots else 3] * len(learn)
        plan = list(zip(learn, per))
    else:
        if len(shots) > 1:
            fail("several --shots need as many --learn")
        plan = []
    if seconds is not None and not seconds > 0:
        fail(f"--seconds must be > 0, got {seconds}")
    headless = bool(plan) or json_out or not sys.stdout.isatty()

    def emit(e: dict) -> None:
        sys.stdout.write(json.dumps(e) + "\n")
        sys.stdout.flush()

    from edge_pace.runtime.learner import check_label

    for label, _ in plan:
        try:
            check_label(label)
        except (ValueError, TypeError) as exc:
            fail(f"--learn {label!r}: {exc}")
    try:
        s = _Session(bundle, device, rate, int8, threads, state, shots[0] if shots else 3, buffer_seconds, autosave,
                     seconds, miss, hop)
    except (MicrophoneError, BundleError, StateError, ValueError) as exc:
        fail(str(exc))
    if headless:
        code = _run_json(s, plan, emit)
    else:
        code = run_interactive(s, bundle, shots[0] if shots else 3)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``devices`` and ``listen`` to the edge-pace CLI."""
    app.command("devices")(devices_cmd)
    app.command("listen")(listen_cmd)
