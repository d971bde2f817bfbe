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
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.data.synth_render import (SOUNDFONTS, TEST_SOUNDFONT, TRAIN_SOUNDFONT, _Clip, _Context, _run_task,
                                         _tasks, check_render_settings)
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


# ----------------------------------------------------------------------------------------------
# Clip plans
# ----------------------------------------------------------------------------------------------


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
# Driver
# ----------------------------------------------------------------------------------------------


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
    jobs = check_render_settings(rate, duration, jobs)
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
