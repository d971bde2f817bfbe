"""Offline audio benchmarks synthesised with Debian tools (``edge-pace data synth``).

No public data set can be downloaded where edge-pace is developed, so this module renders four
small benchmarks that mirror the paper's mix of coarse- and fine-grained audio tasks:

``keywords`` (coarse, like Speech Commands)
    20 command words and digits spoken by ~136 voices: espeak-ng (8 English accents x 16
    variants), flite (kal, kal16, awb, rms, slt) and festival (kal_diphone, ked_diphone,
    cmu_us_slt_arctic_hts), with random speaking rate, pitch and speed perturbation.
    **Held-out rule:** test clips are spoken by voices never used in train. A quarter of the
    espeak-ng variants (with every accent) and two of the five non-espeak speakers (kal, slt, awb,
    rms, ked; a speaker's flite and festival voices count as one) are test-only, drawn from the
    seed. ``source`` is ``voice:<engine>/<voice>``.
``environment`` (coarse, like ESC-50 / UrbanSound8K)
    10 sound classes synthesised with sox (sirens, alarm beeps, engine hum, dog-bark-like chirps,
    rain, knocks, bells, whistles, wind, phone rings), every parameter (pitch, rhythm, filters,
    noise realisation) drawn at random per clip, random recording conditions (reverb, band limits),
    background noise of random colour at 0-30 dB SNR and a random level. **Held-out rule:** every
    clip has its own random-parameter seed, and train and test seeds come from disjoint seed
    streams; ``source`` is ``seed:<int>``.
``speakers`` (fine-grained, like TIMIT)
    8 classes that are voices, chosen to be confusable: espeak-ng en-us m1/m3 and en-gb-x-rp f2/f4,
    and two recorded speakers each through two synthesisers (slt: flite and festival HTS; kal: flite
    kal16 and festival diphones), saying words and short phrases with random rate, pitch and speed.
    **Held-out rule:** the text pool is split by the seed; test clips say words/phrases never said
    in train. ``source`` is ``text:<text>``.
``instruments`` (fine-grained, like VocalSet)
    8 General MIDI programs rendered by fluidsynth from MIDI files written here, with random
    notes, velocities and note lengths. **Held-out rule:** train clips use FluidR3_GM
    (fluid-soundfont-gm), test clips the other soundfont, TimGM6mb (timgm6mb-soundfont), so test
    accuracy measures generalisation to new instrument samples. ``source`` is
    ``soundfont:<name>``.

Every clip is post-processed the same way: mono, speed-perturbed and resampled to ``rate`` (soxr),
centred on its active (above -30 dB) region, padded or trimmed to ``duration``, mixed with coloured
noise at a random SNR, scaled to a random peak level, faded in/out over 10 ms, and written as
16-bit mono PCM WAV. Output layout: ``OUT/<benchmark>/<split>/<class>/<id>.wav`` plus
``OUT/<benchmark>/manifest.csv`` (path relative to the benchmark folder, label, split, source,
benchmark). All randomness comes from ``numpy`` generators keyed by (seed, benchmark, class,
split, index) and the external tools run deterministically (sox ``-R``), so a seed gives
byte-identical files whatever the number of jobs. External tools run in a thread pool; festival
and fluidsynth render many clips per process.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import struct
import subprocess
import tempfile
import time
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.runtime.atomic import atomic_replace_dir

__all__ = [
    "BENCHMARKS",
    "CLIPS_PER_CLASS",
    "TEST_FRACTION",
    "MissingToolError",
    "synthesize",
    "check_tools",
    "clip_counts",
]

# ----------------------------------------------------------------------------------------------
# Class lists
# ----------------------------------------------------------------------------------------------

KEYWORDS: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)

ENVIRONMENT: tuple[str, ...] = (
    "siren", "alarm", "engine", "bark", "rain", "knock", "bell", "whistle", "wind", "phone_ring",
)

#: speakers benchmark: class -> (engine, voice)
SPEAKERS: dict[str, tuple[str, str]] = {
    "espeak_us_m1": ("espeak-ng", "en-us+m1"),
    "espeak_us_m3": ("espeak-ng", "en-us+m3"),
    "espeak_rp_f2": ("espeak-ng", "en-gb-x-rp+f2"),
    "espeak_rp_f4": ("espeak-ng", "en-gb-x-rp+f4"),
    "flite_slt": ("flite", "slt"),
    "festival_slt": ("festival", "cmu_us_slt_arctic_hts"),
    "flite_kal16": ("flite", "kal16"),
    "festival_kal": ("festival", "kal_diphone"),
}

#: instruments benchmark: class -> (GM program, lowest note, highest note)
INSTRUMENTS: dict[str, tuple[int, int, int]] = {
    "piano": (0, 45, 84),
    "vibraphone": (11, 53, 89),
    "church_organ": (19, 41, 84),
    "nylon_guitar": (24, 40, 76),
    "violin": (40, 55, 91),
    "cello": (42, 36, 69),
    "trumpet": (56, 55, 82),
    "clarinet": (71, 50, 86),
}

#: benchmark name -> its class names (in label order)
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "keywords": KEYWORDS,
    "environment": ENVIRONMENT,
    "speakers": tuple(SPEAKERS),
    "instruments": tuple(INSTRUMENTS),
}

#: clips per class (train + test) at scale 1.0: 2400 + 1000 + 800 + 800 = 5000 clips, 46 classes
CLIPS_PER_CLASS: dict[str, int] = {"keywords": 120, "environment": 100, "speakers": 100, "instruments": 100}
TEST_FRACTION = 0.2

ESPEAK_ACCENTS: tuple[str, ...] = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
    "en-us-nyc",
)
ESPEAK_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4",
)
#: non-espeak speakers for keywords: one speaker may have several voices (same recorded person)
OTHER_SPEAKERS: dict[str, tuple[tuple[str, str], ...]] = {
    "kal": (("flite", "kal"), ("flite", "kal16"), ("festival", "kal_diphone")),
    "slt": (("flite", "slt"), ("festival", "cmu_us_slt_arctic_hts")),
    "awb": (("flite", "awb"),),
    "rms": (("flite", "rms"),),
    "ked": (("festival", "ked_diphone"),),
}

#: words and short phrases for the speakers benchmark (split into train/test texts by the seed)
SPEAKER_TEXTS: tuple[str, ...] = (
    "apple", "river", "morning", "window", "garden", "yellow", "basket", "summer", "winter",
    "coffee", "table", "pencil", "mountain", "ocean", "forest", "candle", "silver", "market",
    "doctor", "music", "letter", "butter", "orange", "pocket", "rabbit", "tiger", "bridge",
    "castle", "dinner", "engine", "feather", "guitar", "harbor", "island", "jacket", "kitten",
    "ladder", "marble", "needle", "paper", "quiet", "rocket", "saddle", "thunder", "velvet",
    "wagon", "zebra", "blanket", "cherry", "desert", "finger", "hammer", "lemon", "monkey",
    "number", "planet", "shadow", "tunnel", "valley", "wonder", "good morning", "thank you",
    "see you soon", "open the door", "how are you", "nice weather", "turn it up", "call me later",
    "what time is it", "let us go", "I am here", "come with me", "not today", "right away",
    "keep it simple", "one more time", "all is well", "take a seat", "very good", "try again",
    "sounds great", "over there", "just a moment", "be careful", "well done", "hello there",
    "no problem", "see you later", "have a nice day", "excuse me", "where is it", "why not",
    "check this out", "listen closely", "hold on", "fair enough", "it is late", "hurry up",
    "watch out", "of course",
)

# ----------------------------------------------------------------------------------------------
# Tools
# ----------------------------------------------------------------------------------------------

#: executable -> Debian package
TOOL_PACKAGES: dict[str, str] = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival",
    "sox": "sox",
    "fluidsynth": "fluidsynth",
}
FESTIVAL_VOICE_PACKAGES: dict[str, str] = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
FESTIVAL_VOICE_DIRS: tuple[Path, ...] = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))
SOUNDFONTS: dict[str, tuple[Path, str]] = {
    "FluidR3_GM": (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), "fluid-soundfont-gm"),
    "TimGM6mb": (Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont"),
}
TRAIN_SOUNDFONT, TEST_SOUNDFONT = "FluidR3_GM", "TimGM6mb"

_TOOLS_FOR: dict[str, tuple[str, ...]] = {
    "keywords": ("espeak-ng", "flite", "festival"),
    "speakers": ("espeak-ng", "flite", "festival"),
    "environment": ("sox",),
    "instruments": ("fluidsynth",),
}


class MissingToolError(RuntimeError):
    """A system tool, voice or soundfont needed for synthesis is not installed."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"{name} not found: apt-get install {TOOL_PACKAGES[name]}")
    return path


def check_tools(benchmarks: Sequence[str]) -> dict[str, str]:
    """Check that every tool, festival voice and soundfont the benchmarks need is installed.

    Returns tool name -> absolute path; raises MissingToolError naming the apt package otherwise.
    """
    tools: dict[str, str] = {}
    for bench in benchmarks:
        for name in _TOOLS_FOR[bench]:
            tools[name] = _tool(name)
    if "festival" in tools:
        needed = {v for e, v in SPEAKERS.values() if e == "festival"}
        if "keywords" in benchmarks:
            needed |= {v for evs in OTHER_SPEAKERS.values() for e, v in evs if e == "festival"}
        for voice in sorted(needed):
            if not any((d / lang / voice).is_dir() for d in FESTIVAL_VOICE_DIRS if d.is_dir()
                       for lang in os.listdir(d)):
                raise MissingToolError(
                    f"festival voice {voice} not found: apt-get install {FESTIVAL_VOICE_PACKAGES[voice]}")
    if "fluidsynth" in tools:
        for name, (path, package) in SOUNDFONTS.items():
            if not path.is_file():
                raise MissingToolError(f"soundfont {name} ({path}) not found: apt-get install {package}")
    return tools


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{err}")
    return proc.stdout


def _parse_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Mono float64 samples and rate from WAV bytes (tolerates streamed headers with bogus sizes)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError(f"{what}: expected WAV output, got {len(data)} bytes")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[body:body + 16])
        elif cid == b"data":
            if fmt is None:
                break
            end = min(body + size, len(data))
            tag, channels, rate, _, _, bits = fmt
            raw = data[body:end]
            if tag == 1 and bits == 16:
                x = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float64) / 32768.0
            elif tag == 3 and bits == 32:
                x = np.frombuffer(raw[: len(raw) // 4 * 4], "<f4").astype(np.float64)
            else:
                raise RuntimeError(f"{what}: unsupported WAV format tag={tag} bits={bits}")
            x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
            return x, rate
        pos = body + size + (size & 1)
    raise RuntimeError(f"{what}: WAV output has no fmt/data chunk")


# ----------------------------------------------------------------------------------------------
# Clip plans
# ----------------------------------------------------------------------------------------------


@dataclass
class _Clip:
    benchmark: str
    label: str
    split: str
    source: str
    relpath: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Finish:
    """Per-benchmark post-processing ranges."""

    snr_db: tuple[float, float]
    level_db: tuple[float, float] = (-24.0, -1.0)
    speed: tuple[float, float] = (1.0, 1.0)


_FINISH: dict[str, _Finish] = {
    "keywords": _Finish(snr_db=(10.0, 40.0), speed=(0.9, 1.1)),
    "speakers": _Finish(snr_db=(15.0, 45.0), speed=(0.94, 1.06)),
    "environment": _Finish(snr_db=(0.0, 30.0)),
    "instruments": _Finish(snr_db=(25.0, 50.0)),
}


def clip_counts(benchmark: str, scale: float) -> tuple[int, int]:
    """(train, test) clips per class for a benchmark at a scale (at least one of each)."""
    n = max(2, round(CLIPS_PER_CLASS[benchmark] * scale))
    test = min(n - 1, max(1, round(n * TEST_FRACTION)))
    return n - test, test


def _clip_seed(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0] >> 1)


def _split_items(items: Sequence[Any], n_test: int, rng: np.random.Generator) -> tuple[list[Any], list[Any]]:
    order = rng.permutation(len(items))
    test = sorted(int(i) for i in order[:n_test])
    return [items[i] for i in range(len(items)) if i not in test], [items[i] for i in test]


def keyword_voice_split(seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train voices, test voices) of the keywords benchmark as (engine, voice) pairs."""
    rng = np.random.default_rng([seed, 0, 999])
    train_var, test_var = _split_items(ESPEAK_VARIANTS, len(ESPEAK_VARIANTS) // 4, rng)
    train_spk, test_spk = _split_items(sorted(OTHER_SPEAKERS), 2, rng)

    def voices(variants: list[str], speakers: list[str]) -> list[tuple[str, str]]:
        out = [("espeak-ng", f"{a}+{v}") for v in variants for a in ESPEAK_ACCENTS]
        return out + [ev for s in speakers for ev in OTHER_SPEAKERS[s]]

    return voices(train_var, train_spk), voices(test_var, test_spk)


def speaker_text_split(seed: int) -> tuple[list[str], list[str]]:
    """(train texts, test texts) of the speakers benchmark."""
    rng = np.random.default_rng([seed, 2, 999])
    return _split_items(SPEAKER_TEXTS, len(SPEAKER_TEXTS) // 4, rng)


def _tts_params(engine: str, rng: np.random.Generator, fine: bool) -> dict[str, Any]:
    if engine == "espeak-ng":
        if fine:
            return {"speed": int(rng.integers(140, 201)), "pitch": int(rng.integers(35, 66))}
        return {"speed": int(rng.integers(120, 211)), "pitch": int(rng.integers(20, 81))}
    lo, hi = (0.9, 1.1) if fine else (0.8, 1.25)
    return {"stretch": round(float(rng.uniform(lo, hi)), 3)}


def _plan(bench: str, bench_idx: int, scale: float, seed: int) -> list[_Clip]:
    n_train, n_test = clip_counts(bench, scale)
    clips: list[_Clip] = []
    if bench == "keywords":
        pools = keyword_voice_split(seed)
    elif bench == "speakers":
        texts = speaker_text_split(seed)
    for c, label in enumerate(BENCHMARKS[bench]):
        for s, (split, count) in enumerate((("train", n_train), ("test", n_test))):
            for i in range(count):
                cs = _clip_seed(seed, bench_idx, c, s, i)
                rng = np.random.default_rng(cs)
                params: dict[str, Any]
                if bench == "keywords":
                    pool = pools[s]
                    espeak = [v for v in pool if v[0] == "espeak-ng"]
                    other = [v for v in pool if v[0] != "espeak-ng"]
                    cand = espeak if rng.random() < 0.6 else other
                    engine, voice = cand[int(rng.integers(len(cand)))]
                    params = {"engine": engine, "voice": voice, "text": label, **_tts_params(engine, rng, False)}
                    source = f"voice:{engine}/{voice}"
                elif bench == "speakers":
                    engine, voice = SPEAKERS[label]
                    text = texts[s][int(rng.integers(len(texts[s])))]
                    params = {"engine": engine, "voice": voice, "text": text, **_tts_params(engine, rng, True)}
                    source = f"text:{text}"
                elif bench == "environment":
                    params = {}
                    source = f"seed:{cs}"
                else:
                    program, lo, hi = INSTRUMENTS[label]
                    params = {
                        "soundfont": TRAIN_SOUNDFONT if split == "train" else TEST_SOUNDFONT,
                        "program": program,
                        "note": int(rng.integers(lo, hi + 1)),
                        "velocity": int(rng.integers(45, 128)),
                        "length": float(rng.uniform(0.3, 0.8)),
                    }
                    source = f"soundfont:{params['soundfont']}"
                idx = f"{label}_{split}_{i:05d}"
                clips.append(_Clip(bench, label, split, source, f"{split}/{label}/{idx}.wav", cs, params))
    return clips


# ----------------------------------------------------------------------------------------------
# Renderers: clip(s) -> raw audio (mono float64, rate)
# ----------------------------------------------------------------------------------------------


def _render_espeak(clip: _Clip, tools: dict[str, str]) -> tuple[np.ndarray, int]:
    p = clip.params
    cmd = [tools["espeak-ng"], "-v", p["voice"], "-s", str(p["speed"]), "-p", str(p["pitch"]), "--stdout", p["text"]]
    return _parse_wav(_run(cmd), f"espeak-ng {p['voice']}")


def _render_flite(clip: _Clip, tools: dict[str, str]) -> tuple[np.ndarray, int]:
    p = clip.params
    cmd = [tools["flite"], "-voice", p["voice"], "--setf", f"duration_stretch={p['stretch']}",
           "-t", p["text"], "-o", "/dev/stdout"]
    return _parse_wav(_run(cmd), f"flite {p['voice']}")


def _render_festival(clips: list[_Clip], tools: dict[str, str], tmp: Path) -> list[tuple[np.ndarray, int]]:
    voice = clips[0].params["voice"]
    lines = [f"(voice_{voice})"]
    paths = []
    for k, clip in enumerate(clips):
        path = tmp / f"fest_{clip.seed}_{k}.wav"
        paths.append(path)
        text = clip.params["text"].replace('"', "").replace("\\", "")
        lines.append(f"(Parameter.set 'Duration_Stretch {clip.params['stretch']})")
        lines.append(f'(utt.save.wave (SynthText "{text}") "{path}" \'riff)')
    script = tmp / f"fest_{clips[0].seed}.scm"
    script.write_text("\n".join(lines) + "\n")
    _run([tools["festival"], "-b", str(script)])
    out = []
    for path in paths:
        if not path.is_file():
            raise RuntimeError(f"festival {voice} wrote no audio for {path.name}")
        out.append(_parse_wav(path.read_bytes(), f"festival {voice}"))
        path.unlink()
    script.unlink()
    return out


def _sox(tools: dict[str, str], rate: int, effects: list[Any], stdin: np.ndarray | None = None,
         channels: int = 1) -> np.ndarray:
    """Run sox (repeatable mode) on stdin float samples or on nothing (-n); float64 mono out."""
    out_fmt = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-"]
    fx = [f"{e:.6g}" if isinstance(e, float) else str(e) for e in effects]
    if stdin is None:
        cmd = [tools["sox"], "-R", "-V1", "-r", str(rate), "-c", str(channels), "-n", *out_fmt, *fx]
        data = None
    else:
        cmd = [tools["sox"], "-R", "-V1", "-t", "raw", "-r", str(rate), "-e", "floating-point", "-b", "32",
               "-c", "1", "-", *out_fmt, *fx]
        data = stdin.astype("<f4").tobytes()
    raw = _run(cmd, data)
    return np.frombuffer(raw[: len(raw) // 4 * 4], "<f4").astype(np.float64)


def _env_recipe(label: str, rng: np.random.Generator, rate: int,
                duration: float) -> tuple[list[Any], np.ndarray | None, int]:
    """sox effects (and optional stdin noise, channel count) for one environment clip."""
    u = rng.uniform
    nyq = 0.45 * rate
    n = int(round(duration * rate))
    if label == "siren":
        length = duration * u(0.8, 1.0)
        f0 = u(450, 900)
        cents = int(u(600, 1300))
        half = u(0.08, 0.5)
        bends = []
        t, up = 0.0, True
        while t + half <= length:
            bends.append(f"0,{cents if up else -cents},{half:.4f}")
            t, up = t + half, not up
        wave_ = str(rng.choice(["sine", "triangle", "square"]))
        return ["synth", length, wave_, f0, "bend", *bends, "lowpass", min(3500.0, nyq), "gain", -3], None, 1
    if label == "alarm":
        beep, gap = u(0.05, 0.2), u(0.04, 0.15)
        reps = max(0, int(duration * 0.9 // (beep + gap)) - 1)
        f = min(u(800, 3500), nyq)
        return ["synth", beep, str(rng.choice(["square", "sine", "triangle"])), f, "gain", -6,
                "fade", "q", 0.004, beep, 0.004, "pad", 0, gap, "repeat", reps], None, 1
    if label == "engine":
        f0 = u(25, 75)
        noise = _noise(rng, n, u(1.5, 2.0))
        return ["synth", "sawtooth", "mix", f0, "synth", "square", "mix", f0 * u(1.98, 2.02),
                "lowpass", u(200, 700), "tremolo", u(3, 15), u(10, 50), "gain", -3], noise * u(0.2, 0.8), 1
    if label == "bark":
        b = u(0.07, 0.18)
        f1 = u(350, 750)
        reps = int(rng.integers(0, 3))
        gap = u(0.08, 0.2)
        return ["synth", b, "sawtooth", f"{f1:.1f}-{f1 * u(0.5, 0.85):.1f}", "overdrive", u(5, 25),
                "bandpass", min(u(600, 1400), nyq), "1.2q", "fade", "q", 0.006, b, b * 0.6,
                "pad", 0, gap, "repeat", reps, "gain", -3], None, 1
    if label == "rain":
        x = _noise(rng, n, u(0.0, 1.0))
        drops = rng.random(n) < u(2e-4, 2e-3)
        x = x * 0.3 + drops * rng.uniform(-1, 1, n) * u(2, 6)
        return ["highpass", u(500, 2000), "lowpass", min(u(5000, 12000), nyq), "reverb", u(10, 50),
                "gain", -6], x, 1
    if label == "knock":
        x = np.zeros(n)
        t = int(u(0.0, 0.2) * rate)
        for _ in range(int(rng.integers(2, 6))):
            if t + 200 >= n:
                break
            x[t:t + 132] += rng.standard_normal(132) * np.hanning(132) * u(0.5, 1.0)
            t += int(u(0.08, 0.25) * rate)
        return ["lowpass", u(600, 2000), "bandpass", u(150, 500), f"{u(3, 8):.2f}q", "norm", -3], x, 1
    if label == "bell":
        f = u(300, 1200)
        length = duration * u(0.7, 1.0)
        ratios = [1.0, 2.76, 5.4, 8.93]
        parts = [r for r in ratios if f * r < nyq]
        tones = [a for r in parts for a in ("sine", f * r * u(0.99, 1.01))]
        return ["synth", length, *tones, "remix", "-", "fade", "l", 0.002, length, length * u(0.5, 0.98),
                "gain", -3], None, len(parts)
    if label == "whistle":
        length = u(0.3, 0.9) * duration
        f = min(u(1000, 4000), nyq)
        if rng.random() < 0.5:  # pea whistle trill
            return ["synth", length, "sine", f, "tremolo", u(18, 35), u(50, 90),
                    "fade", "q", 0.02, length, 0.05, "gain", -3], None, 1
        f2 = min(f * u(0.6, 1.5), nyq)  # slide whistle
        return ["synth", length, "sine", f"{f:.1f}:{f2:.1f}", "fade", "q", 0.03, length, 0.05, "gain", -3], None, 1
    if label == "wind":
        x = _noise(rng, n, u(1.0, 2.0))
        fc = u(200, 900)
        return ["sinc", f"{fc * 0.5:.1f}-{fc * 1.5:.1f}", "tremolo", u(0.5, 2.0), u(40, 90), "norm", -3], x, 1
    if label == "phone_ring":
        ring = u(0.25, 0.45)
        gap = u(0.1, 0.25)
        base = u(300, 1000)
        pair = (base, base * u(1.08, 1.3))
        reps = max(0, int(duration * 0.95 // (ring + gap)) - 1)
        return ["synth", ring, "sine", pair[0], "sine", pair[1], "remix", "-", "tremolo", u(15, 25), 100,
                "fade", "q", 0.01, ring, 0.01, "pad", 0, gap, "repeat", reps, "gain", -3], None, 2
    raise ValueError(f"unknown environment class {label!r}")


def _render_environment(clip: _Clip, tools: dict[str, str], rate: int, duration: float) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([clip.seed, 1])
    effects, stdin, channels = _env_recipe(clip.label, rng, rate, duration)
    return _sox(tools, rate, effects + _env_channel(rng, rate), stdin, channels), rate


def _env_channel(rng: np.random.Generator, rate: int) -> list[Any]:
    """Random recording conditions added to every environment clip: room, band limits."""
    fx: list[Any] = []
    if rng.random() < 0.5:
        fx += ["reverb", rng.uniform(10, 80), rng.uniform(20, 80), rng.uniform(30, 100)]
    if rng.random() < 0.3:
        fx += ["lowpass", min(rng.uniform(1500, 8000), 0.45 * rate)]
    if rng.random() < 0.3:
        fx += ["highpass", rng.uniform(80, 600)]
    return fx


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(events: Sequence[tuple[int, bytes]]) -> bytes:
    """A format-0 MIDI file at 1 tick = 1 ms from (absolute ms, event bytes) pairs."""
    track = _vlq(0) + b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big")  # 1 s per quarter note
    now = 0
    for t, ev in sorted(events, key=lambda e: e[0]):
        track += _vlq(t - now) + ev
        now = t
    track += _vlq(0) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1000) + b"MTrk" + struct.pack(">I", len(track)) + track


def _render_fluidsynth(clips: list[_Clip], tools: dict[str, str], tmp: Path, rate: int,
                       duration: float) -> list[tuple[np.ndarray, int]]:
    """Render clips back to back in one MIDI file (all-sound-off between them) and slice."""
    sf_name = clips[0].params["soundfont"]
    seg_ms = int(round(duration * 1000)) + 400
    events: list[tuple[int, bytes]] = []
    for k, clip in enumerate(clips):
        p = clip.params
        t0 = k * seg_ms + 10
        events += [(t0, bytes([0xB0, 121, 0])), (t0, bytes([0xC0, p["program"]])),
                   (t0 + 1, bytes([0x90, p["note"], p["velocity"]])),
                   (t0 + 1 + int(p["length"] * duration * 1000), bytes([0x80, p["note"], 0])),
                   (t0 + seg_ms - 20, bytes([0xB0, 120, 0]))]
    mid = tmp / f"fs_{clips[0].seed}.mid"
    wav = tmp / f"fs_{clips[0].seed}.wav"
    mid.write_bytes(midi_file(events))
    _run([tools["fluidsynth"], "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "1.0", "-r", str(rate),
          "-T", "wav", "-O", "s16", "-F", str(wav), str(SOUNDFONTS[sf_name][0]), str(mid)])
    x, sr = _parse_wav(wav.read_bytes(), f"fluidsynth {sf_name}")
    mid.unlink()
    wav.unlink()
    seg = seg_ms * sr / 1000
    return [(x[int(round(k * seg)):int(round((k + 1) * seg))], sr) for k in range(len(clips))]


# ----------------------------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Unit-RMS noise with a 1/f^beta power spectrum (0 white, 1 pink, 2 brown)."""
    m = n // 2 + 1
    spec = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    spec *= np.arange(1, m + 1, dtype=np.float64) ** (-beta / 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _finish(x: np.ndarray, sr: int, clip: _Clip, rate: int, duration: float) -> np.ndarray:
    """Resample, centre, pad/trim, add noise, set level, fade; int16 samples."""
    cfg = _FINISH[clip.benchmark]
    rng = np.random.default_rng([clip.seed, 2])
    speed = float(rng.uniform(*cfg.speed))
    x = np.asarray(x, np.float64)
    if not np.any(x):
        raise RuntimeError(f"{clip.benchmark}/{clip.label}: the tool produced silence ({clip.source}, {clip.params})")
    if sr * speed != rate:
        import soxr

        x = soxr.resample(x, sr * speed, rate, quality="HQ")
    x = x - x.mean()
    n = int(round(duration * rate))
    hop = max(1, rate // 100)
    frames = len(x) // hop
    if frames > 0:
        e = np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1))
        active = np.flatnonzero(e >= e.max() * 10 ** (-30 / 20))
        first, last = int(active[0]) * hop, (int(active[-1]) + 1) * hop
    else:
        first, last = 0, len(x)
    centre = (first + last) // 2
    out = np.zeros(n)
    start = n // 2 - centre  # where x[0] lands in out
    lo, hi = max(0, start), min(n, start + len(x))
    out[lo:hi] = x[lo - start:hi - start]
    a, b = max(0, first + start), min(n, last + start)
    sig = out[a:b] if b > a else out
    power = float(np.mean(sig * sig))
    if power <= 0:
        raise RuntimeError(f"{clip.benchmark}/{clip.label}: no signal left after centring ({clip.source})")
    snr = rng.uniform(*cfg.snr_db)
    out = out + _noise(rng, n, rng.uniform(0.0, 2.0)) * math.sqrt(power / 10 ** (snr / 10))
    out *= 10 ** (rng.uniform(*cfg.level_db) / 20) / np.abs(out).max()
    fade = min(int(0.01 * rate), n // 4)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        out[:fade] *= ramp
        out[n - fade:] *= ramp[::-1]
    return np.clip(np.round(out * 32767.0), -32768, 32767).astype("<i2")


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    path.write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


#: clips per festival / fluidsynth process: fixed (never derived from jobs) so output is identical
#: for any number of jobs
FESTIVAL_BATCH = 24
FLUIDSYNTH_BATCH = 32


@dataclass(frozen=True)
class _Context:
    tools: dict[str, str]
    tmp: Path
    staging: dict[str, Path]
    rate: int
    duration: float


def _tasks(clips: list[_Clip]) -> list[tuple[str, list[_Clip]]]:
    """Group clips into units of work (kind, clips): one clip per process, or festival/fluidsynth batches."""
    tasks: list[tuple[str, list[_Clip]]] = []
    batches: dict[tuple[str, str], list[_Clip]] = {}
    for clip in clips:
        engine = clip.params.get("engine")
        if clip.benchmark == "environment":
            tasks.append(("sox", [clip]))
        elif engine in ("espeak-ng", "flite"):
            tasks.append((engine, [clip]))
        elif engine == "festival":
            batches.setdefault(("festival", clip.params["voice"]), []).append(clip)
        else:
            batches.setdefault(("fluidsynth", clip.params["soundfont"]), []).append(clip)
    for (kind, _), group in batches.items():
        size = FESTIVAL_BATCH if kind == "festival" else FLUIDSYNTH_BATCH
        tasks += [(kind, group[k:k + size]) for k in range(0, len(group), size)]
    # batches first: they are the longest units, start them early
    return sorted(tasks, key=lambda t: -len(t[1]))


def _run_task(kind: str, clips: list[_Clip], ctx: _Context) -> int:
    """Render, finish and write the clips of one unit of work; returns the number written."""
    if kind == "sox":
        audio = [_render_environment(clips[0], ctx.tools, ctx.rate, ctx.duration)]
    elif kind == "espeak-ng":
        audio = [_render_espeak(clips[0], ctx.tools)]
    elif kind == "flite":
        audio = [_render_flite(clips[0], ctx.tools)]
    elif kind == "festival":
        audio = _render_festival(clips, ctx.tools, ctx.tmp)
    else:
        audio = _render_fluidsynth(clips, ctx.tools, ctx.tmp, ctx.rate, ctx.duration)
    for clip, (x, sr) in zip(clips, audio, strict=True):
        _write_wav(ctx.staging[clip.benchmark] / clip.relpath, _finish(x, sr, clip, ctx.rate, ctx.duration), ctx.rate)
    return len(clips)


def _prepare_target(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()) and not (folder / "manifest.csv").is_file():
        raise FileExistsError(f"{folder} exists and is not an edge-pace synth benchmark (no manifest.csv); "
                              "choose another OUT or remove it")


def synthesize(
    out: Path,
    benchmarks: list[str] | None = None,
    scale: float = 1.0,
    seed: int = 0,
    rate: int = 44100,
    duration: float = 1.0,
    jobs: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Render benchmarks into ``out/<benchmark>/`` and return benchmark -> its folder.

    ``scale`` multiplies the clips per class (CLIPS_PER_CLASS; at least one train and one test clip
    per class). An existing benchmark folder written by this function is replaced atomically.
    """
    names = list(BENCHMARKS) if benchmarks is None else list(dict.fromkeys(benchmarks))
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"unknown benchmark(s) {unknown}: expected a subset of {list(BENCHMARKS)}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, got {scale}")
    if not (isinstance(rate, int) and 8000 <= rate <= 192000):
        raise ValueError(f"rate must be an integer sample rate in [8000, 192000], got {rate}")
    if not (0.1 <= duration <= 30.0):
        raise ValueError(f"duration must be in [0.1, 30] seconds, got {duration}")
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    tools = check_tools(names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for bench in names:
        _prepare_target(out / bench)

    plans = {b: _plan(b, list(BENCHMARKS).index(b), scale, seed) for b in names}
    total = sum(len(p) for p in plans.values())
    staging = {b: Path(tempfile.mkdtemp(prefix=f".{b}.partial-", dir=out)) for b in names}
    bar = None
    if progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        bar = Progress(TextColumn("[bold]synth[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TaskProgressColumn(), TextColumn("{task.fields[rate]:.0f} clips/s"),
                       TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with tempfile.TemporaryDirectory(prefix="edge-pace-synth-") as tmpdir:
            ctx = _Context(tools, Path(tmpdir), staging, rate, duration)
            tasks = _tasks([c for b in names for c in plans[b]])
            t0 = time.perf_counter()
            done = 0
            if bar is not None:
                bar.start()
                task_id = bar.add_task(", ".join(names), total=total, rate=0.0)
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(_run_task, kind, clips, ctx) for kind, clips in tasks]
                try:
                    for fut in as_completed(futures):
                        done += fut.result()  # re-raises a worker's error
                        if bar is not None:
                            bar.update(task_id, completed=done, rate=done / max(time.perf_counter() - t0, 1e-9))
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        for bench in names:
            with open(staging[bench] / "manifest.csv", "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["path", "label", "split", "source", "benchmark"])
                for clip in sorted(plans[bench], key=lambda c: c.relpath):
                    writer.writerow([clip.relpath, clip.label, clip.split, clip.source, bench])
        result = {}
        for bench in names:
            target = out / bench
            _prepare_target(target)
            atomic_replace_dir(staging[bench], target)
            result[bench] = target
        return result
    finally:
        if bar is not None:
            bar.stop()
        for path in staging.values():
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
