"""The microphone path (runtime/microphone.py, `edge-pace devices|listen`) on the real audio stack.

Virtual microphones (tests/audio_devices.py): ALSA's file plugin (bit-exact, unpaced) for a recorded session,
a private PulseAudio server for real-time pacing and for a device that goes away, tmux for the live view.
sounddevice is only imported in subprocesses, after their ALSA/Pulse environment is set.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from audio_devices import (PYTHON, PulseServer, Tmux, base_env, compose, knock_whistle_session, make_file_mic, require,
                           sox_sound, write_wav)
from edge_pace.runtime.enrol import Listener, ShotRecorder
from edge_pace.runtime.microphone import INSTALL_HINT

CLI = [PYTHON, "-m", "edge_pace.cli"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    require("sox", "espeak-ng")
    return knock_whistle_session(tmp_path_factory.mktemp("session"), seed=0)


def run_cli(args: list[str], env: dict, timeout: float = 120) -> tuple[int, list[dict], str]:
    r = subprocess.run(CLI + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.returncode, events, r.stderr


def check_detections(events: list[dict], later: list[tuple[float, str]]) -> None:
    """Every later known sound is detected exactly once, with its label, by a window that contains its
    onset; nothing else (the unrelated speech included) is detected."""
    dets = [e for e in events if e["event"] == "detection"]
    known = [(t, k) for t, k in later if k != "speech"]
    matched = []
    for t, k in known:
        hits = [d for d in dets if d["time"] - 1e-6 <= t < d["time"] + 1.0]
        assert [d["label"] for d in hits] == [k], f"sound {k!r} at {t} s: detections {hits}; all: {dets}"
        assert hits[0]["score"] > 0.5
        matched += hits
    assert len(matched) == len(dets), f"unexpected detections: {[d for d in dets if d not in matched]}"


# ---------------------------------------------------------------------------------------------- no sounddevice
def test_missing_sounddevice_says_what_to_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["sounddevice"] = None  # as if it were not installed
        from edge_pace.cli import main
        sys.argv = ["edge-pace", "devices"]
        main()
    """)
    r = subprocess.run([PYTHON, "-c", code], env=base_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pip install 'edge-pace[mic]'" in r.stderr and "apt-get install libportaudio2" in r.stderr
    assert "edge-pace[mic]" in INSTALL_HINT


# ---------------------------------------------------------------------------------------------- shots
def test_shot_recorder_finds_onsets_and_cuts_exact_shots():
    rate = 16000
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(6 * rate) * 10 ** (-70 / 20)).astype(np.float32)  # -70 dBFS floor
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.3 * rate)) / rate)).astype(np.float32)
    onsets = [0.1, 1.5, 1.85, 4.0]  # 0.1 s: less than pre_seconds of history; 1.85 s: 50 ms after the last one
    for t in onsets:
        x[int(t * rate) : int(t * rate) + len(tone)] += tone
    long_tone = np.tile(tone, 4)  # 1.2 s sustained sound: one shot, not several
    x[int(4.6 * rate) : int(4.6 * rate) + len(long_tone)] += long_tone
    rec = ShotRecorder(rate, shot_seconds=0.6, pre_seconds=0.2)
    shots = []
    for i in range(0, len(x), 333):  # odd chunk size: frames carry over between chunks
        shots += rec.feed(x[i : i + 333])
    got = [s.onset_s for s in shots]
    assert got == pytest.approx([0.1, 1.5, 4.0, 4.6], abs=0.0101), got
    for s in shots:
        assert len(s.audio) == int(0.6 * rate)
        start = int(round(s.start_s * rate))
        if start >= 0:  # bit-exact copy of the signal around the onset
            assert np.array_equal(s.audio, x[start : start + len(s.audio)])
        else:  # first shot: the missing history is zeros, the onset still at pre_seconds
            assert np.array_equal(s.audio[-start:], x[: len(s.audio) + start]) and not s.audio[:-start].any()
    assert -75 < rec.floor < -65 and rec.gate_dbfs == pytest.approx(-50.0)  # min gate: floor + 15 dB < -50


def test_shot_recorder_gate_follows_the_noise_floor():
    rate = 16000
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(4 * rate) * 10 ** (-40 / 20)).astype(np.float32)  # a noisy room: -40 dBFS
    rec = ShotRecorder(rate, 0.5, 0.1)
    assert rec.feed(noise) == []  # the noise itself is never a shot once the floor is tracked
    assert rec.floor == pytest.approx(-40, abs=2.5) and rec.gate_dbfs == pytest.approx(rec.floor + 15)
    loud = noise[:rate].copy()
    loud[rate // 2 : rate // 2 + 1600] += 0.5  # +~40 dB step
    shots = rec.feed(loud) + rec.feed(noise[: rate // 2])
    assert len(shots) == 1 and shots[0].onset_s == pytest.approx(4.5, abs=0.011)
    with pytest.raises(ValueError, match="pre_seconds < shot_seconds"):
        ShotRecorder(rate, 0.5, 0.5)


def test_listener_events_do_not_depend_on_chunk_size(runtime_bundle, session):
    from edge_pace.runtime.learner import Learner

    audio, later = session
    runs = []
    for chunk in (160, 7001):
        learner = Learner.load(runtime_bundle, state=False)
        li = Listener(learner, 16000, shots=3)
        assert li.stream.hop == learner.hop and Listener(learner, 16000, hop_s=0.25).stream.hop == learner.hop // 2
        li.enrol("knock")
        li.enrol("whistle")
        events = []
        for i in range(0, len(audio), chunk):
            events += li.feed(audio[i : i + chunk])
        runs.append(events)
        assert learner.classes == ["knock", "whistle"] and learner.counts == {"knock": 9, "whistle": 9}
    assert runs[0] == runs[1]
    shots = [e for e in runs[0] if e["event"] == "shot"]
    assert [e["time"] for e in shots] == pytest.approx([0.6, 1.9, 3.2, 4.5, 5.8, 7.1], abs=0.011)
    check_detections(runs[0], later)
    with pytest.raises(ValueError, match="reserved"):
        li.enrol("unknown")


# ---------------------------------------------------------------------------------------------- ALSA file device
MIC_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from edge_pace.runtime.microphone import Microphone, list_input_devices, find_input_device, DeviceNotFound
    name, rate, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = {"devices": [d.name for d in list_input_devices()]}
    for spec in ("nosuchmic", 7):
        try:
            find_input_device(spec)
        except DeviceNotFound as exc:
            out[str(spec)] = str(exc)
    with Microphone(name, sample_rate=rate, buffer_seconds=60) as mic:
        got, total = [], 0
        while total < n:
            c = mic.read(1.0)
            got.append(c); total += len(c)
        out.update(rate=mic.rate, fell_back=mic.fell_back, notice=mic.notice, dropped=mic.dropped_blocks)
    np.save(sys.argv[4], np.concatenate(got)[:n])
    print(json.dumps(out))
""")


def test_file_microphone_is_bit_exact_and_falls_back_to_the_native_rate(tmp_path):
    require("portaudio", "alsa")
    rng = np.random.default_rng(3)
    audio = np.round(rng.uniform(-0.5, 0.5, 16000 * 2) * 32768).astype(np.int16)
    mic = make_file_mic(tmp_path, audio, 16000)
    for asked in (16000, 1000):  # 1000 Hz: refused by the device -> its native 16 kHz
        out_npy = tmp_path / f"got{asked}.npy"
        r = subprocess.run([PYTHON, "-c", MIC_SCRIPT, "edgemic", str(asked), str(len(audio)), str(out_npy)],
                           env=mic.env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout.strip().splitlines()[-1])
        assert "edgemic" in info["devices"]
        assert "no input device matching 'nosuchmic'" in info["nosuchmic"] and "edgemic" in info["nosuchmic"]
        assert "no input device with index 7" in info["7"]
        assert info["rate"] == 16000 and info["fell_back"] == (asked == 1000)
        if asked == 1000:
            assert "does not take 1000 Hz" in info["notice"] and "native 16000 Hz" in info["notice"]
        got = np.load(out_npy)
        assert np.array_equal(np.round(got * 32768).astype(np.int16), audio)  # bit-exact through PortAudio


def test_devices_and_listen_without_any_input_device(tmp_path, bundle):
    require("portaudio", "alsa")
    env = base_env()
    env["ALSA_CONFIG_PATH"] = "/usr/share/alsa/alsa.conf"  # the system's config alone: no card, no input
    r = subprocess.run(CLI + ["devices"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no audio input device found" in r.stderr
    code, _, err = run_cli(["listen", str(bundle), "--json", "--seconds", "1"], env)
    assert code == 2 and "no audio input device found" in err
    mic = make_file_mic(tmp_path / "dev", np.zeros(1600, np.int16), 16000)
    r = subprocess.run(CLI + ["devices"], env=mic.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "edgemic" in r.stdout and "16000 Hz" in r.stdout
    code, _, err = run_cli(["listen", str(bundle), "--device", "nosuchmic", "--json"], mic.env)
    assert code == 2 and "no input device matching 'nosuchmic'" in err and "edgemic" in err
    code, _, err = run_cli(["listen", str(bundle), "--learn", "a", "--learn", "b", "--shots", "1", "--shots", "2",
                            "--shots", "3"], mic.env)
    assert code == 2 and "one --shots for all classes or one per --learn" in err
    code, _, err = run_cli(["listen", str(bundle), "--learn", "unknown"], mic.env)
    assert code == 2 and "reserved" in err
    code, _, err = run_cli(["listen", str(bundle), "--device", "edgemic", "--json", "--hop", "5"], mic.env)
    assert code == 2 and "hop_s must be a number of seconds in (0, window = 1]" in err
    assert not (bundle / "state.safetensors").exists()


def test_listen_learns_two_classes_from_a_recorded_session_and_detects_them(tmp_path, bundle, session):
    require("portaudio", "alsa")
    audio, later = session
    mic = make_file_mic(tmp_path / "dev", audio, 16000)
    seconds = len(audio) / 16000
    code, events, err = run_cli(["listen", str(bundle), "--device", "edgemic", "--learn", "knock", "--shots", "3",
                                 "--learn", "whistle", "--shots", "3", "--seconds", f"{seconds}",
                                 "--buffer-seconds", "60"], mic.env)
    assert code == 0, err
    start = events[0]
    assert start["event"] == "listening" and start["device"] == "edgemic" and start["rate"] == 16000
    learned = [e for e in events if e["event"] == "learned"]
    assert [e["label"] for e in learned] == ["knock", "whistle"]
    shots = [e for e in events if e["event"] == "shot"]
    assert [(e["label"], e["n"]) for e in shots] == [("knock", 1), ("knock", 2), ("knock", 3), ("whistle", 1),
                                                      ("whistle", 2), ("whistle", 3)]
    assert [e["time"] for e in shots] == pytest.approx([0.6, 1.9, 3.2, 4.5, 5.8, 7.1], abs=0.011)
    check_detections(events, later)
    assert events[-1]["event"] == "stopped" and events[-1]["time"] == pytest.approx(seconds, abs=1e-3)
    # the state was saved (atomically, after each learn) and a new learner starts with both classes
    from edge_pace.runtime.learner import Learner

    assert Learner.load(bundle).classes == ["knock", "whistle"]
    saved = [e for e in events if e["event"] == "saved"]
    assert saved and saved[-1]["classes"] == ["knock", "whistle"]


def test_listen_reports_an_enrolment_that_heard_too_few_shots(tmp_path, bundle):
    require("portaudio", "alsa", "sox")
    tone = sox_sound(tmp_path / "t.wav", "sine 700", 0.3)
    audio = compose([(0.5, tone), (1.8, tone)], 3.0)
    mic = make_file_mic(tmp_path / "dev", audio, 16000)
    code, events, err = run_cli(["listen", str(bundle), "--device", "edgemic", "--learn", "beep", "--shots", "3",
                                 "--seconds", "3", "--buffer-seconds", "30"], mic.env)
    assert code == 4 and "beep (2/3)" in err
    assert events[-1]["incomplete"] == [{"label": "beep", "heard": 2, "shots": 3}]
    assert not (bundle / "state.safetensors").exists()  # nothing learned, nothing written


def test_listen_reports_audio_dropped_when_it_falls_behind(tmp_path, bundle):
    """The file device delivers ~600 s of audio a second: a 1 s queue must drop, and say so, not grow."""
    require("portaudio", "alsa")
    mic = make_file_mic(tmp_path / "dev", np.zeros(16000, np.int16), 16000)
    code, events, err = run_cli(["listen", str(bundle), "--device", "edgemic", "--json", "--seconds", "4",
                                 "--buffer-seconds", "1"], mic.env)
    assert code == 0, err
    warnings = [e for e in events if e["event"] == "warning"]
    assert warnings and "slower than real time" in warnings[0]["message"] and "dropped" in warnings[0]["message"]
    assert events[-1]["event"] == "stopped" and events[-1]["dropped_seconds"] > 0


def test_keys_are_parsed_from_raw_terminal_input():
    from edge_pace.cli.listen_view import parse_keys

    assert parse_keys("lclap\r") == ["l", "c", "l", "a", "p", "enter"]
    assert parse_keys("\x1b[A\x1bOPq") == ["q"]  # arrow up and F1 are dropped whole
    assert parse_keys("\x1b") == ["esc"] and parse_keys("ab\x7f\n") == ["a", "b", "backspace", "enter"]
    assert parse_keys("\x03") == ["ctrl-c"]


# ---------------------------------------------------------------------------------------------- PulseAudio
def _pulse_session(folder: Path) -> tuple[Path, list[tuple[float, str]]]:
    """Leading silence (Pulse drops the first ~50 ms), 2 beeps and 2 buzzes to enrol, then beep, buzz, beep."""
    beep = sox_sound(folder / "beep.wav", "sine 880", 0.4)
    buzz = sox_sound(folder / "buzz.wav", "square 150", 0.4)
    later = [(6.4, "beep"), (8.6, "buzz"), (10.8, "beep")]
    plan = [(0.6, beep), (1.9, beep), (3.2, buzz), (4.5, buzz)] + [(t, beep if k == "beep" else buzz) for t, k in later]
    return write_wav(folder / "session.wav", compose(plan, 12.0), 16000), later


@pytest.mark.slow
@pytest.mark.audio
def test_listen_in_real_time_through_pulseaudio(tmp_path, bundle):
    require("sox")
    wav, later = _pulse_session(tmp_path)
    with PulseServer() as pa:
        t0 = time.monotonic()
        proc = subprocess.Popen(CLI + ["listen", str(bundle), "--device", "pulse", "--learn", "beep", "--learn", "buzz",
                                       "--shots", "2", "--seconds", "13"], env=pa.env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()  # "listening": the stream is open
            assert json.loads(first)["event"] == "listening", first + proc.stderr.read()
            pa.play(wav)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        wall = time.monotonic() - t0
    assert proc.returncode == 0, err
    events = [json.loads(first)] + [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [e["label"] for e in events if e["event"] == "learned"] == ["beep", "buzz"]
    shot_times = [e["time"] for e in events if e["event"] == "shot"]
    lag = shot_times[0] - 0.6  # when playback started, in the stream's clock
    assert np.diff(shot_times) == pytest.approx([1.3, 1.3, 1.3], abs=0.03)  # paced: real-time spacing kept
    check_detections(events, [(t + lag, k) for t, k in later])
    assert wall >= 12.5  # 13 s of audio took real time


@pytest.mark.audio
def test_listen_saves_learned_state_when_the_device_goes_away(tmp_path, bundle):
    require("sox")
    beep = sox_sound(tmp_path / "beep.wav", "sine 880", 0.4)
    wav = write_wav(tmp_path / "shots.wav", compose([(0.5, beep), (1.8, beep)], 3.0), 16000)
    with PulseServer() as pa:
        proc = subprocess.Popen(CLI + ["listen", str(bundle), "--device", "pulse", "--learn", "beep", "--shots", "2",
                                       "--no-autosave"], env=pa.env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            lines = [proc.stdout.readline()]
            pa.play(wav)
            while '"learned"' not in lines[-1]:
                lines.append(proc.stdout.readline())
                assert lines[-1], "listen ended before learning: " + proc.stderr.read()
            pa.kill()  # the microphone disappears
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    events = [json.loads(x) for x in lines + out.splitlines() if x.startswith("{")]
    assert proc.returncode == 3, err
    assert "stopped delivering audio" in err and "learned state is saved" in err
    errors = [e for e in events if e["event"] == "error"]
    assert errors and "stopped delivering audio" in errors[0]["message"]
    assert [e for e in events if e["event"] == "saved"][-1]["classes"] == ["beep"]
    from edge_pace.runtime.learner import Learner

    assert Learner.load(bundle).classes == ["beep"]


@pytest.mark.audio
def test_interactive_view_teaches_a_class_with_keys(tmp_path, bundle):
    require("sox", "tmux")
    beep = sox_sound(tmp_path / "beep.wav", "sine 880", 0.4)
    shots = write_wav(tmp_path / "shots.wav", compose([(0.5, beep), (1.8, beep), (3.1, beep)], 4.2), 16000)
    again = write_wav(tmp_path / "again.wav", compose([(0.4, beep)], 2.0), 16000)
    cmd = f"{PYTHON} -m edge_pace.cli listen {bundle} --device pulse --shots 3; echo EXITED $?; sleep 60"
    with PulseServer() as pa, Tmux() as tm:
        tm.start(cmd, pa.env, ROOT)
        screen = tm.wait_for("keys: [l] learn", 60)
        assert "no classes yet" in screen and "level" in screen
        tm.keys("l")
        tm.wait_for("name of the new class")
        tm.keys("clap", literal=True)
        tm.keys("Enter")
        tm.wait_for("enrolling 'clap': make the sound 3 times, 0/3 heard", 10)
        pa.play(shots)
        screen = tm.wait_for("learned 'clap' from 3 shots", 15)
        assert "classes: clap (9)" in screen
        pa.play(again)
        screen = tm.wait_for("last detection: clap", 15)
        tm.keys("q")
        screen = tm.wait_for("EXITED 0", 15)
    assert (bundle / "state.safetensors").is_file()
    from edge_pace.runtime.learner import Learner

    assert Learner.load(bundle).classes == ["clap"]


def test_listener_enrols_background_sounds_as_rows_to_ignore(runtime_bundle, session):
    """The ``b`` key of `edge-pace listen` queues a BACKGROUND enrolment: the shots become all-zero-target rows,
    never a class."""
    from edge_pace.runtime.analytic import BACKGROUND
    from edge_pace.runtime.learner import Learner

    audio, _ = session
    learner = Learner.load(runtime_bundle, state=False)
    li = Listener(learner, 16000, shots=3)
    li.enrol("knock")
    li.enrol(BACKGROUND)
    for i in range(0, len(audio), 4000):
        li.feed(audio[i : i + 4000])
    assert learner.classes == ["knock"] and BACKGROUND not in learner.counts
    # 3 shots x 3 windows, each learned edge-padded (runtime/openset.py edge_padded: up to 3 windows, the
    # silent-edged ones may fall under the level gate)
    assert 9 < sum(len(f) for f in learner.classifier.features[BACKGROUND]) <= 27
