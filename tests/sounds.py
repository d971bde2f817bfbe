"""Real generated sounds for tests: sox synthesis and espeak-ng speech (Debian packages), as float32 arrays.

Not a mock: these are real audio files written by real synthesizers and decoded with soundfile.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edge_pace.runtime.audio import load_audio

SOX_CLASSES = {  # label -> sox synth arguments with a {f} frequency slot
    "sine": "sine {f}", "square": "square {f}", "saw": "sawtooth {f}", "pluck": "pluck {f}",
    "noise": "whitenoise", "brown": "brownnoise", "sweep": "sine {f}:{f2}", "trem": "sine {f} tremolo 8 90",
}


def sox_clip(path: Path, kind: str, f: float, seconds: float = 1.0, rate: int = 44100) -> Path:
    spec = SOX_CLASSES[kind].format(f=f, f2=f * 4).split()
    effects = spec[spec.index("tremolo"):] if "tremolo" in spec else []
    synth = spec[: spec.index("tremolo")] if effects else spec
    subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-b", "16", "-c", "1", str(path), "synth", str(seconds), *synth,
                    *effects, "fade", "0.02", str(seconds), "0.02", "gain", "-n", "-3"], check=True, capture_output=True)
    return path


def espeak_clip(path: Path, word: str, voice: str, speed: int = 160, pitch: int = 50) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), "-v", voice, "-s", str(speed), "-p", str(pitch), word],
                   check=True, capture_output=True)
    return path


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad to n samples."""
    if len(x) >= n:
        s = (len(x) - n) // 2
        return x[s : s + n]
    out = np.zeros(n, np.float32)
    s = (n - len(x)) // 2
    out[s : s + len(x)] = x
    return out


def sox_set(kinds, per_class: int, seed: int = 0, rate: int = 44100, folder: Path | None = None):
    """[n, rate] float32 clips and labels: each class with per-class random pitches."""
    rng = np.random.default_rng(seed)
    folder = Path(folder or tempfile.mkdtemp(prefix="sox_"))
    waves, labels = [], []
    for kind in kinds:
        for i in range(per_class):
            p = sox_clip(folder / f"{kind}_{seed}_{i}.wav", kind, float(rng.uniform(150, 900)), rate=rate)
            waves.append(fit_length(load_audio(p, rate)[0], rate))
            labels.append(kind)
    return np.stack(waves), labels


def espeak_set(words, voices, rate: int = 44100, folder: Path | None = None):
    """[n, rate] float32 clips of each word spoken by each voice, and labels (the words) and voices."""
    folder = Path(folder or tempfile.mkdtemp(prefix="espeak_"))
    waves, labels, who = [], [], []
    for w in words:
        for v in voices:
            p = espeak_clip(folder / f"{w}_{v.replace('+', '_')}.wav", w, v)
            waves.append(fit_length(load_audio(p, rate)[0], rate))
            labels.append(w)
            who.append(v)
    return np.stack(waves), labels, who
