"""demos/live_mic.py and demos/iot_app.py run for real: a virtual microphone (ALSA file plugin), WAV files,
a WAV stream on stdin with SIGUSR1, the inbox folder, atomic state, and bounded memory."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from audio_devices import (PYTHON, base_env, compose, knock_whistle_session, make_file_mic, require, sox_sound,
                           to_int16, write_wav)

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    require("sox", "espeak-ng")
    return knock_whistle_session(tmp_path_factory.mktemp("session"), seed=1)


def enrol_clips(folder: Path, session_audio: np.ndarray, rate: int = 16000) -> dict[str, list[Path]]:
    """The session's enrolment sounds (3 knocks at 0.6/1.9/3.2 s, 3 whistles at 4.5/5.8/7.1 s) as 1 s clip files,
    the sound starting at 0.1, 0.4 and 0.7 s into its clip (as clips recorded by hand would vary)."""
    out: dict[str, list[Path]] = {}
    for label, times in (("knock", (0.6, 1.9, 3.2)), ("whistle", (4.5, 5.8, 7.1))):
        d = folder / label
        d.mkdir(parents=True)
        out[label] = [write_wav(d / f"{i}.wav", session_audio[int((t - o) * rate) : int((t - o + 1.0) * rate)], rate)
                      for i, (t, o) in enumerate(zip(times, (0.1, 0.4, 0.7)))]
    return out


def json_lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def check_later(events: list[dict], later: list[tuple[float, str]], after: float = 8.0) -> None:
    """Each later known sound detected once with its label, the speech not at all (detections after ``after``)."""
    dets = [e for e in events if e["event"] == "detection" and e["time"] >= after]
    for t, k in later:
        hits = [d for d in dets if d["time"] - 1e-6 <= t < d["time"] + 1.0]
        assert [d["label"] for d in hits] == ([] if k == "speech" else [k]), (t, k, dets)
    assert len(dets) == sum(k != "speech" for _, k in later), dets


# ---------------------------------------------------------------------------------------------- live_mic.py
def test_live_mic_demo_learns_a_sound_and_recognises_it(tmp_path, bundle):
    require("portaudio", "alsa", "sox")
    beep = sox_sound(tmp_path / "beep.wav", "sine 880", 0.4)
    later = [5.5, 8.0]
    audio = compose([(0.5, beep), (1.8, beep), (3.1, beep)] + [(t, beep) for t in later], 10.0)
    mic = make_file_mic(tmp_path / "dev", audio, 16000)
    r = subprocess.run([PYTHON, str(DEMOS / "live_mic.py"), str(bundle), "beep", "--shots", "3", "--device",
                        "edgemic", "--seconds", "10", "--buffer-seconds", "60"], env=mic.env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = [ast.literal_eval(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [e["event"] for e in events[:4]] == ["shot", "shot", "shot", "learned"]
    dets = [e for e in events if e["event"] == "detection"]
    assert [d["label"] for d in dets] == ["beep", "beep"]
    assert all(d["time"] <= t < d["time"] + 1.0 for d, t in zip(dets, later))
    assert "saved ['beep']" in r.stdout
    from edge_pace.runtime.learner import Learner

    assert Learner.load(bundle).classes == ["beep"]


# ---------------------------------------------------------------------------------------------- iot_app.py
def test_iot_app_learns_the_inbox_then_detects_in_a_wav_file(tmp_path, bundle, session):
    audio, later = session
    inbox = tmp_path / "inbox"
    clips = enrol_clips(inbox, audio)
    (inbox / "broken").mkdir()
    (inbox / "broken" / "x.wav").write_bytes(b"RIFF not really a wav")
    wav = write_wav(tmp_path / "session.wav", audio, 16000)
    r = subprocess.run([PYTHON, str(DEMOS / "iot_app.py"), str(bundle), "--wav", str(wav), "--inbox", str(inbox),
                        "--settle", "0"], env=base_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    assert events[0]["event"] == "started" and events[0]["rate"] == 16000
    assert [(e["event"], e.get("label")) for e in events[1:4]] == [("error", "broken"), ("learned", "knock"),
                                                                   ("learned", "whistle")]
    assert "cannot decode audio file" in events[1]["message"]
    check_later(events, later)
    assert events[-1]["event"] == "stopped" and events[-1]["classes"] == ["knock", "whistle"]
    # clips moved out of the inbox: learned ones to .done, the broken one to .failed with the reason
    done = sorted(p.name for p in (inbox / ".done" / "knock").rglob("*.wav"))
    assert done == sorted(p.name for p in clips["knock"]) and not (inbox / "knock").exists()
    failed = list((inbox / ".failed" / "broken").glob("*/reason.txt"))
    assert len(failed) == 1 and "cannot decode" in failed[0].read_text()
    from edge_pace.runtime.learner import Learner

    assert Learner.load(bundle).counts == {"knock": 3, "whistle": 3}  # one window per 1 s clip


def _wav_stream_header(rate: int) -> bytes:
    """A streaming WAV header (PCM 16 mono), sizes unknown (0xFFFFFFFF) as arecord writes to a pipe."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + \
        struct.pack("<I", 0xFFFFFFFF)


def _read_until(proc: subprocess.Popen, event: str) -> list[dict]:
    """JSON events from a binary stdout pipe, up to and including the first ``event``."""
    lines = []
    while True:
        line = proc.stdout.readline().decode()
        if not line:
            raise AssertionError(f"iot_app ended before {event!r}: {proc.stderr.read().decode()}")
        lines.append(json.loads(line))
        if lines[-1]["event"] == event:
            return lines


def test_iot_app_on_a_stdin_stream_learns_on_sigusr1(tmp_path, bundle, session):
    audio, later = session
    rate = 16000
    staging, inbox = tmp_path / "staging", tmp_path / "inbox"
    inbox.mkdir()
    enrol_clips(staging, audio)
    proc = subprocess.Popen([PYTHON, str(DEMOS / "iot_app.py"), str(bundle), "--wav", "-", "--inbox", str(inbox),
                             "--poll", "3600", "--settle", "0"], env=base_env(), cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    try:
        proc.stdin.write(_wav_stream_header(rate) + to_int16(audio[: int(8.0 * rate)]).tobytes())  # enrolment part
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["event"] == "started"
        for label in ("knock", "whistle"):  # clips "dropped" into the inbox (atomic renames), then SIGUSR1
            os.rename(staging / label, inbox / label)
        proc.send_signal(signal.SIGUSR1)
        events = _read_until(proc, "learned")
        events += _read_until(proc, "learned")
        assert [e["label"] for e in events if e["event"] == "learned"] == ["knock", "whistle"]
        rest = to_int16(audio[int(8.0 * rate) :]).tobytes()  # the later occurrences, then end of stream
        out, err = proc.communicate(input=rest, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events += json_lines(out.decode())
    check_later(events, later)
    assert events[-1]["event"] == "stopped" and events[-1]["time"] == pytest.approx(len(audio) / rate, abs=1e-3)
    from edge_pace.runtime.learner import Learner

    assert Learner.load(bundle).classes == ["knock", "whistle"]


def _load_iot():
    spec = importlib.util.spec_from_file_location("iot_app", DEMOS / "iot_app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_iot_app_memory_stays_bounded_on_a_long_stream(tmp_path, bundle, session):
    iot = _load_iot()
    audio, _ = session
    rate = 16000
    inbox = tmp_path / "inbox"
    enrol_clips(inbox, audio)
    events: list[dict] = []
    app = iot.IotApp(bundle, rate, inbox, on_event=events.append, settle=0, history=8)
    assert app.scan_inbox() == 2
    loop = audio[int(8.0 * rate) :]  # the later occurrences: sounds and quiet, over and over
    block = int(0.1 * rate)

    def source(n_loops: int):
        for _ in range(n_loops):
            for i in range(0, len(loop), block):
                yield loop[i : i + block]

    iot.run(app, source(1), poll=3600, seconds=None, flags={})  # warm up (allocators, caches)
    tracemalloc.start()
    try:
        iot.run(app, source(1), poll=3600, seconds=None, flags={})
        short = tracemalloc.get_traced_memory()[0]
        iot.run(app, source(3), poll=3600, seconds=None, flags={})
        long_ = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    n_det = sum(e["event"] == "detection" for e in events)
    assert n_det >= 4 * 5  # 4 known sounds per loop, 5 loops (~65 s of audio)
    assert len(app.recent) == 8  # the event ring keeps only the latest
    assert long_ - short < 256 * 1024, (short, long_)  # 3x more audio, no growth beyond noise
