"""Virtual microphones for tests, on the real audio stack (no sound card needed, nothing mocked).

* ``make_file_mic``: an ALSA capture device that plays back a raw file through ALSA's ``file`` plugin
  (``plug`` -> ``file`` -> ``null``, S16_LE mono at the file's rate). PortAudio/sounddevice open it like
  any microphone and read the exact samples back, as fast as they are asked for (not paced). The device
  exists only for processes started with ``FileMic.env`` (ALSA_CONFIG_PATH = the system alsa.conf plus
  ours), so sounddevice must be imported in such a subprocess, never in the test process.
* ``PulseServer``: a private PulseAudio server (its own runtime folder and socket) with a 16 kHz mono
  null sink whose monitor is the default source: what ``paplay`` plays there is heard, in real time, by
  PortAudio's ALSA device ``pulse`` (libasound2-plugins). Always stopped, even when a test fails.
* ``Tmux``: a private tmux server (own socket) to drive an interactive terminal program.

System packages: libportaudio2 libasound2-plugins pulseaudio pulseaudio-utils tmux (+ sox for sounds).
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else "python3"


def require(*tools: str) -> None:
    """Skip (with the reason) when a required system tool or library is missing."""
    for tool in tools:
        if tool == "portaudio":
            if ctypes.util.find_library("portaudio") is None:
                pytest.skip("PortAudio library missing (apt-get install libportaudio2)")
        elif tool == "alsa":
            if not os.path.isfile(SYSTEM_ALSA_CONF):
                pytest.skip(f"ALSA configuration {SYSTEM_ALSA_CONF} missing (apt-get install libasound2-data)")
        elif tool == "alsa-pulse":
            if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") + \
                    glob.glob("/usr/lib/alsa-lib/libasound_module_pcm_pulse.so"):
                pytest.skip("ALSA pulse plugin missing (apt-get install libasound2-plugins)")
        elif shutil.which(tool) is None:
            pkg = {"pulseaudio": "pulseaudio", "paplay": "pulseaudio-utils", "pactl": "pulseaudio-utils",
                   "tmux": "tmux", "sox": "sox", "espeak-ng": "espeak-ng"}.get(tool, tool)
            pytest.skip(f"{tool} missing (apt-get install {pkg})")


def base_env() -> dict[str, str]:
    """The test process's environment without any audio routing of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALSA_", "PULSE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def to_int16(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a
    return np.clip(np.round(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------- ALSA file
@dataclass
class FileMic:
    name: str
    rate: int
    raw: Path
    conf: Path
    samples: np.ndarray  # int16 as written, before padding
    env: dict[str, str]


def make_file_mic(folder: Path, audio: np.ndarray, rate: int, name: str = "edgemic",
                  pad_seconds: float = 3.0) -> FileMic:
    """A capture device ``name`` that yields ``audio`` (float in [-1, 1] or int16) at ``rate``, then
    ``pad_seconds`` of digital silence (reading past the file's end returns junk)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pcm = to_int16(audio)
    raw = folder / f"{name}.raw"
    np.concatenate([pcm, np.zeros(int(pad_seconds * rate), np.int16)]).astype("<i2").tofile(raw)
    conf = folder / f"{name}.asoundrc"
    conf.write_text(f"""pcm.{name} {{
  type plug
  slave {{
    pcm {{
      type file
      slave.pcm "null"
      file "/dev/null"
      infile "{raw}"
      format "raw"
    }}
    format S16_LE
    rate {rate}
    channels 1
  }}
  hint {{ show on description "edge-pace test microphone ({rate} Hz file)" }}
}}
""")
    env = base_env()
    env["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{conf}"
    return FileMic(name, rate, raw, conf, pcm, env)


# ---------------------------------------------------------------------------------------------- PulseAudio
class PulseServer:
    """A private PulseAudio server with a 16 kHz mono null sink ``edgesink``; its monitor is the default
    source, so PortAudio's device ``pulse`` hears what ``play`` plays. Use as a context manager."""

    def __init__(self, rate: int = 16000) -> None:
        self.rate = rate
        self.dir = Path(tempfile.mkdtemp(prefix="ep-pa-"))  # short: unix socket paths are limited to 108 bytes
        self.socket = self.dir / "native"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "pulseaudio.log"
        client = self.dir / "client.conf"
        client.write_text("autospawn = no\n")
        self.env = base_env()
        self.env.update(PULSE_SERVER=f"unix:{self.socket}", PULSE_CLIENTCONFIG=str(client),
                        PULSE_RUNTIME_PATH=str(self.dir), XDG_RUNTIME_DIR=str(self.dir), HOME=str(self.dir))

    def start(self, timeout: float = 15.0) -> "PulseServer":
        require("pulseaudio", "pactl", "paplay", "alsa-pulse", "portaudio")
        script = self.dir / "default.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name=edgesink rate={self.rate} channels=1 format=s16le\n"
            "load-module module-always-sink\n"
            "set-default-sink edgesink\n"
            "set-default-source edgesink.monitor\n")
        cmd = ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1", "--system=false",
               "--use-pid-file=false", "--disable-shm=true", "--log-target=stderr", "--log-level=notice"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            r = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, text=True)
            if r.returncode == 0 and "edgesink" in r.stdout:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not come up in {timeout} s: {self.log.read_text()[-2000:]}")

    def play(self, wav: Path, wait: bool = True) -> subprocess.Popen:
        """Play a WAV file into the null sink (heard by the ``pulse`` device)."""
        p = subprocess.Popen(["paplay", "--device=edgesink", str(wav)], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        if wait:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                raise RuntimeError(f"paplay {wav} failed: {err.decode(errors='replace')}")
        return p

    def kill(self) -> None:
        """Stop the server abruptly (a microphone being unplugged, as its clients see it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PulseServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- tmux
class Tmux:
    """A private tmux server (own socket name) running one program in a fixed-size window."""

    def __init__(self, width: int = 110, height: int = 40) -> None:
        require("tmux")
        self.sock = f"edgepace-{os.getpid()}-{time.monotonic_ns()}"
        self.width, self.height = width, height

    def _tmux(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def start(self, command: str, env: dict[str, str], cwd: Path) -> None:
        envargs = [a for k, v in env.items() if k.startswith(("PULSE_", "ALSA_", "XDG_RUNTIME", "PYTHON"))
                   for a in ("-e", f"{k}={v}")]
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", str(self.width), "-y",
                   str(self.height), "-c", str(cwd), *envargs, command)
        self._tmux("set-option", "-t", "main", "remain-on-exit", "on")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._tmux("send-keys", "-t", "main", *(["-l"] if literal else []), *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main", check=False)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear on the screen within {timeout} s; screen:\n{screen}")

    def dead(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "main", "#{pane_dead}", check=False).strip() == "1"

    def stop(self) -> None:
        self._tmux("kill-server", check=False)

    def __enter__(self) -> "Tmux":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- sounds
def sox_sound(path: Path, synth: str, seconds: float, rate: int = 16000, gain_db: float = -6.0) -> np.ndarray:
    """A sox-synthesised sound (``synth`` = sox synth arguments) as float32 at ``rate``."""
    import soundfile as sf

    subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-b", "16", "-c", "1", str(path), "synth", str(seconds),
                    *synth.split(), "fade", "0.01", str(seconds), "0.05", "gain", "-n", str(gain_db)],
                   check=True, capture_output=True)
    return sf.read(str(path), dtype="float32")[0]


def compose(events: list[tuple[float, np.ndarray]], seconds: float, rate: int = 16000, noise_dbfs: float = -70.0,
            seed: int = 0) -> np.ndarray:
    """A session: each (time, sound) placed at its time over faint white noise at ``noise_dbfs`` RMS."""
    rng = np.random.default_rng(seed)
    out = (rng.standard_normal(int(seconds * rate)) * 10 ** (noise_dbfs / 20)).astype(np.float32)
    for t, s in events:
        i = int(round(t * rate))
        if i + len(s) > len(out):
            raise ValueError(f"sound at {t} s does not fit in a {seconds} s session")
        out[i : i + len(s)] += s
    return out


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    import soundfile as sf

    sf.write(str(path), to_int16(audio), rate, subtype="PCM_16")
    return path


def knock_whistle_session(folder: Path, seed: int = 0, rate: int = 16000) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A recorded session at ``rate``: 3 knocks (sox pluck) and 3 whistles (rising sine sweeps) to enrol,
    then later occurrences (other pitches and levels) of each, with an unrelated spoken phrase among
    them (espeak-ng). Returns the audio and the later occurrences as (onset seconds, label)."""
    import soundfile as sf
    import soxr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def knock(i: int) -> np.ndarray:
        return sox_sound(folder / f"knock{i}.wav", f"pluck {120 + rng.uniform(-20, 20):.0f}", 0.3, rate,
                         rng.uniform(-12, -3))

    def whistle(i: int) -> np.ndarray:
        f = 1200 + rng.uniform(-100, 100)
        return sox_sound(folder / f"whistle{i}.wav", f"sine {f:.0f}:{f * 1.5:.0f}", 0.5, rate, rng.uniform(-12, -3))

    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "-v", "en", "hello there"], check=True, capture_output=True)
    speech, sr = sf.read(str(wav), dtype="float32")
    speech = soxr.resample(speech, sr, rate).astype(np.float32) * 0.5
    events, t = [], 0.6
    for i in range(3):
        events.append((t, knock(i)))
        t += 1.3
    for i in range(3):
        events.append((t, whistle(i)))
        t += 1.3
    t += 1.0
    later = []
    for i, kind in enumerate(["whistle", "knock", "speech", "knock", "whistle"]):
        sound = speech if kind == "speech" else (whistle if kind == "whistle" else knock)(10 + i)
        events.append((t, sound))
        later.append((round(t, 3), kind))
        t += 2.2 + (0.5 if kind == "speech" else 0.0) + rng.uniform(0, 0.5)
    return compose(events, t + 1.0, rate, seed=seed), later
