"""A benchmark of real recordings that ship in Debian packages (``edge-pace data real``).

Nothing is synthesised: every clip is cut from a microphone recording. Sources (``--sources``; all
four by default, leave out ``0ad``, a 1.4 GB package, with ``--sources drums,voices,freepats``):

``drums`` (avldrums.lv2-soundfont: kits Black Pearl and Red Zeppelin, SF2, rendered by fluidsynth)
    kick, snare (centre + edge), tom (floor + rack, centre + edge), crash (two), ride (two), hihat
    (closed, pedal, semi-open). A kit piece has 5 velocity layers, one recorded strike each; each
    distinct strike is rendered once (at its layer's middle velocity; rescaled copies of a strike
    are dropped). **Held out by kit**: train Black Pearl, test Red Zeppelin, except the hi-hats,
    which are the same recordings in both kits: **held out by velocity layer** (Black Pearl; its
    distinct hi-hat strikes, by note then velocity, alternate between train and test).
``voices`` (asterisk-prompt-es-co, -fr-armelle, -it-menardi-wav: one speaker each, 8 kHz prompts)
    voice_es, voice_fr, voice_it. **Held out by prompt file**: a seeded third of a voice's prompts
    is test-only; 100 train and 50 test prompts are drawn (seeded), one clip each (the first second
    of speech). es and fr are GSM 06.10; the it prompts (PCM) go through the same codec (sox).
``freepats`` (GUS patches of recorded instruments; read here, neither fluidsynth nor sox can)
    piano, harp, violin, french_horn. **Held out by sample**: of a patch's distinct recorded samples
    in pitch order, every third (2nd, 5th, ...) is test-only. A clip is a note in its sample's key
    range (within 7 semitones of the recorded pitch; seeded) held 0.5-0.9 s; 60 + 30 clips per class.
``0ad`` (0ad-data: 0 A.D.'s ``public.zip``, game sounds recorded as OGG Vorbis)
    footsteps, death_cry, woodchop, mining, arrow_impact, sword_clash, leaves (foraging rustle).
    **Held out by recording file** (a seeded third; the a/b parts of one recording are one file;
    byte-identical files count once), footsteps **by surface** (rock and wood test-only: a surface's
    single steps may be cut from its long walking/running takes). A file gives up to 3 clips.

Every clip: mono, resampled to ``rate`` (soxr), cut around the active (above -30 dB) part
(:func:`edge_pace.data.real_audio.cut`; several non-overlapping windows of a long recording share its
source and split), peak level drawn from [-20, -1] dBFS (seeded), 10 ms fades, 16-bit WAV. Layout
``OUT/real/<split>/<class>/<id>.wav`` + ``OUT/real/manifest.csv`` (path relative to ``OUT/real``, label,
split, source, benchmark=real), written atomically. Same seed, same bytes, whatever ``jobs``. Source
locations: :class:`RealPaths`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import re
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.data import real_audio as A
from edge_pace.data.synth_render import _write_wav, check_render_settings
from edge_pace.runtime.atomic import atomic_replace_dir

__all__ = ["SOURCES", "CLASSES", "HELD_OUT", "RealPaths", "MissingPackageError", "build_real", "class_counts"]

SOURCES = ("drums", "voices", "freepats", "0ad")
BENCHMARK = "real"

DRUM_PACKAGE = "avldrums.lv2-soundfont"
#: class -> (GM notes, held-out rule: "kit" or "layer")
DRUMS: dict[str, tuple[tuple[int, ...], str]] = {
    "kick": ((36,), "kit"), "snare": ((38, 40), "kit"), "tom": ((41, 43, 45, 47), "kit"), "crash": ((49, 57), "kit"),
    "ride": ((51, 59), "kit"), "hihat": ((42, 44, 46), "layer"),
}
DRUM_BATCH = 32  # hits per fluidsynth process (fixed: output never depends on jobs)

#: class -> (folder, Debian package, pass through GSM)
VOICES: dict[str, tuple[str, str, bool]] = {
    "voice_es": ("es", "asterisk-prompt-es-co", False),
    "voice_fr": ("fr", "asterisk-prompt-fr-armelle", False),
    "voice_it": ("it_IT_f_Menardi", "asterisk-prompt-it-menardi-wav", True),
}
VOICE_FILES = (100, 50)  # train, test prompt files per voice
VOICE_EXTENSIONS = (".gsm", ".wav")

FREEPATS_PACKAGE = "freepats"
FREEPATS: dict[str, str] = {
    "piano": "Tone_000/000_Acoustic_Grand_Piano.pat", "harp": "Tone_000/046_Harp.pat",
    "violin": "Tone_000/040_Violin.pat", "french_horn": "Tone_000/060_French_Horn.pat",
}
FREEPATS_CLIPS = (60, 30)
MAX_SEMITONES = 7

ZERO_AD_PACKAGE = "0ad-data"
ZERO_AD: dict[str, str] = {  # class -> regular expression on the member path
    "footsteps": r"audio/actor/(singlesteps/fs_|human/movement/)", "death_cry": r"audio/actor/human/death/",
    "woodchop": r"audio/resource/lumbering/", "mining": r"audio/resource/mining/",
    "arrow_impact": r"audio/attack/impact/arrow", "sword_clash": r"audio/attack/weapon/sword",
    "leaves": r"audio/resource/foraging/",
}
SURFACES = ("grass", "gravel", "rock", "sand", "snow", "wood", "dirt")
TEST_SURFACES = ("rock", "wood")
ZERO_AD_MAX_CLIPS = 3

CLASSES: dict[str, tuple[str, ...]] = {
    "drums": tuple(DRUMS), "voices": tuple(VOICES), "freepats": tuple(FREEPATS), "0ad": tuple(ZERO_AD),
}
HELD_OUT: dict[str, str] = {
    **{c: "kit (Red Zeppelin test)" for c, (_, r) in DRUMS.items() if r == "kit"},
    **{c: "velocity layer (alternate strikes)" for c, (_, r) in DRUMS.items() if r == "layer"},
    **{c: "prompt file" for c in VOICES}, **{c: "recorded sample (every 3rd in pitch order)" for c in FREEPATS},
    **{c: "recording file" for c in ZERO_AD}, "footsteps": "surface (rock, wood test)",
}
LEVEL_DB = (-20.0, -1.0)


class MissingPackageError(RuntimeError):
    """A tool or a Debian package with recordings is not installed (the message names the apt command)."""


@dataclass
class RealPaths:
    """Where the recordings are (defaults: where the Debian packages install them).

    ``drum_kits``: kit -> (SF2 file, bank, program); the first kit trains, the second tests.
    """

    drum_kits: dict[str, tuple[Path, int, int]] = field(default_factory=lambda: {
        "black_pearl": (Path("/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2"), 0, 0),
        "red_zeppelin": (Path("/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"), 0, 0)})
    asterisk: Path = Path("/usr/share/asterisk/sounds")
    freepats: Path = Path("/usr/share/midi/freepats")
    zero_ad_zip: Path = Path("/usr/share/games/0ad/mods/public/public.zip")
    dpkg_info: Path = Path("/var/lib/dpkg/info")


@dataclass
class _Clip:
    label: str
    split: str
    source: str
    stem: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


def _seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingPackageError(f"{name} not found: apt-get install {name}")
    return path


def _package_files(paths: RealPaths, package: str) -> set[str]:
    for name in (f"{package}.list", f"{package}:all.list"):
        if (paths.dpkg_info / name).is_file():
            return set((paths.dpkg_info / name).read_text(errors="replace").split("\n"))
    return set()


def _voice_files(paths: RealPaths, label: str) -> list[Path]:
    folder, package, _ = VOICES[label]
    root = paths.asterisk / folder
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VOICE_EXTENSIONS and p.is_file()) \
        if root.is_dir() else []
    listed = _package_files(paths, package)
    if listed & {str(p) for p in files}:  # the folder may hold other packages' prompts
        files = [p for p in files if str(p) in listed]
    if len(files) < 2:
        raise MissingPackageError(f"{label}: no prompts of {package} in {root}: apt-get install {package}")
    return files


def _zero_ad_members(paths: RealPaths) -> dict[str, list[tuple[str, str]]]:
    """class -> [(member, group)]: the group is what splits (a surface for footsteps, else the file)."""
    if not paths.zero_ad_zip.is_file():
        raise MissingPackageError(
            f"0 A.D. sounds not found ({paths.zero_ad_zip}): apt-get install {ZERO_AD_PACKAGE} (a 1.4 GB download), "
            "or point --0ad-zip at its public.zip, or leave it out with --sources drums,voices,freepats")
    out: dict[str, list[tuple[str, str]]] = {}
    for label, names in A.zip_members(paths.zero_ad_zip, ZERO_AD).items():
        if label == "footsteps":
            tagged = [(n, next((s for s in SURFACES if s in n.lower().rsplit("/", 1)[-1]), "")) for n in names]
            out[label] = [(n, f"footsteps/{s}") for n, s in tagged if s]
        else:  # the a/b parts of one recording (swordhit_11a, _11b) are one file
            out[label] = [(n, re.sub(r"(?<=\d)[ab]$", "", n.rsplit(".", 1)[0])) for n in names]
        groups = {g for _, g in out[label]}
        if len(groups) < 2 or (label == "footsteps" and not groups & {f"footsteps/{s}" for s in TEST_SURFACES}):
            raise MissingPackageError(f"0ad: too few recordings for class {label} in {paths.zero_ad_zip}: "
                                      f"apt-get install {ZERO_AD_PACKAGE}")
    return out


def check_sources(sources: list[str], paths: RealPaths) -> dict[str, str]:
    """Raise MissingPackageError (naming the apt command) unless every source's tool and files exist."""
    tools: dict[str, str] = {}
    if "drums" in sources:
        tools["fluidsynth"] = _tool("fluidsynth")
        if len(paths.drum_kits) != 2:
            raise ValueError("drums need exactly two kits (train, test)")
        for kit, (sf2, _, _) in paths.drum_kits.items():
            if not Path(sf2).is_file():
                raise MissingPackageError(f"drum kit {kit} ({sf2}) not found: apt-get install {DRUM_PACKAGE}")
    if "voices" in sources:
        tools["sox"] = _tool("sox")
        for label in VOICES:
            _voice_files(paths, label)
    if "freepats" in sources:
        for label, rel in FREEPATS.items():
            if not (paths.freepats / rel).is_file():
                raise MissingPackageError(f"freepats patch {paths.freepats / rel} ({label}) not found: "
                                          f"apt-get install {FREEPATS_PACKAGE}")
    return tools


def _plan_drums(paths: RealPaths, seed: int) -> list[_Clip]:
    (train_kit, test_kit) = list(paths.drum_kits)
    strikes = {kit: A.sf2_strikes(Path(sf2), bank, program) for kit, (sf2, bank, program) in paths.drum_kits.items()}
    clips = []
    for ci, (label, (notes, rule)) in enumerate(DRUMS.items()):
        heard: list[A.Strike] = []
        picks: list[tuple[str, str, int, A.Strike]] = []  # split, kit, note, strike
        for split, kit in (("train", train_kit), ("test", test_kit)) if rule == "kit" else (("train", train_kit),):
            for note in notes:
                new = A.distinct_strikes(strikes[kit].get(note, []), heard)
                heard += new
                picks += [(split, kit, note, st) for st in new]
        if rule == "layer":  # alternate the distinct strikes (by note, then velocity) between the splits
            picks = [("test" if r % 2 else "train", *rest) for r, (_, *rest) in enumerate(picks)]
        counters = Counter[str]()
        for split, kit, note, st in picks:
            clips.append(_Clip(label, split, f"drums:{kit}/note{note}/v{st.low}-{st.high}",
                               f"{label}-{counters[split]:04d}", _seed(seed, 0, ci, len(clips)),
                               {"kit": kit, "note": note, "velocity": (st.low + st.high) // 2}))
            counters[split] += 1
        if not (counters["train"] and counters["test"]):
            raise ValueError(f"drums: class {label} (notes {notes}) needs distinct recordings in kits {train_kit} "
                             f"(train) and {test_kit} (test); found {dict(counters)}")
    return clips


def _plan_voices(paths: RealPaths, seed: int) -> list[_Clip]:
    clips = []
    for ci, label in enumerate(VOICES):
        files = _voice_files(paths, label)
        rng = np.random.default_rng([seed, 1, ci])
        order = rng.permutation(len(files))
        n_test = max(1, len(files) // 3)
        for split, idx, cap in (("test", order[:n_test], VOICE_FILES[1]), ("train", order[n_test:], VOICE_FILES[0])):
            for i, k in enumerate(sorted(int(j) for j in idx[:cap])):
                rel = files[k].relative_to(paths.asterisk).as_posix()
                clips.append(_Clip(label, split, f"prompt:{rel}", f"{label}-{i:04d}", _seed(seed, 1, ci, k),
                                   {"path": str(files[k]), "gsm": VOICES[label][2]}))
    return clips


@functools.lru_cache(maxsize=16)
def _patch(path: str) -> list[A.GusSample]:
    return A.read_gus_patch(Path(path))


def _patch_split(samples: list[A.GusSample]) -> dict[str, list[int]]:
    """Sample indices per split: of the distinct recordings in pitch order, every third from the 2nd is test."""
    order = sorted(range(len(samples)), key=lambda j: (samples[j].root_hz, j))
    digests = [hashlib.sha256(samples[j].data.tobytes()).hexdigest() for j in order]
    order = [j for k, j in enumerate(order) if digests[k] not in digests[:k]]
    if len(order) < 2:
        raise ValueError("a freepats class needs a patch with at least two distinct samples")
    return {"train": [j for r, j in enumerate(order) if r % 3 != 1],
            "test": [j for r, j in enumerate(order) if r % 3 == 1]}


def _plan_freepats(paths: RealPaths, seed: int) -> list[_Clip]:
    clips = []
    for ci, (label, rel) in enumerate(FREEPATS.items()):
        samples = _patch(str(paths.freepats / rel))
        for si, (split, chosen) in enumerate(_patch_split(samples).items()):
            rng = np.random.default_rng([seed, 2, ci, si])
            for i in range(FREEPATS_CLIPS[si]):
                j = chosen[i % len(chosen)]
                s = samples[j]
                root = 69 + 12 * math.log2(s.root_hz / 440.0)
                lo = max(root - MAX_SEMITONES, 12 * math.log2(max(s.low_hz, 8.0) / 440.0) + 69)
                hi = min(root + MAX_SEMITONES, 12 * math.log2(max(s.high_hz, 8.0) / 440.0) + 69)
                notes = np.arange(math.ceil(lo), math.floor(hi) + 1) if hi >= lo else np.array([round(root)])
                note = int(notes[rng.integers(len(notes))]) if len(notes) else round(root)
                clips.append(_Clip(label, split, f"patch:{Path(rel).stem}/sample{j}", f"{label}-{i:04d}",
                                   _seed(seed, 2, ci, si, i), {"patch": str(paths.freepats / rel), "sample": j,
                                                               "hz": 440.0 * 2 ** ((note - 69) / 12),
                                                               "hold": float(rng.uniform(0.5, 0.9))}))
    return clips


def _plan_zero_ad(paths: RealPaths, seed: int) -> list[_Clip]:
    clips = []
    for ci, (label, members) in enumerate(_zero_ad_members(paths).items()):
        groups = sorted({g for _, g in members})
        if label == "footsteps":
            test = {g for g in groups if g.split("/")[1] in TEST_SURFACES}
        else:
            order = np.random.default_rng([seed, 3, ci]).permutation(len(groups))
            test = {groups[int(k)] for k in order[:max(1, round(len(groups) / 3))]}
        counters = Counter[str]()
        for member, group in members:
            split = "test" if group in test else "train"
            i = counters[split]
            counters[split] += 1
            clips.append(_Clip(label, split, f"0ad:{group}", f"{label}-{i:04d}", _seed(seed, 3, ci, len(clips)),
                               {"member": member}))
    return clips


@dataclass(frozen=True)
class _Context:
    tools: dict[str, str]
    paths: RealPaths
    tmp: Path
    staging: Path
    rate: int
    duration: float


def _write(clip: _Clip, x: np.ndarray, ctx: _Context, max_clips: int) -> list[list[str]]:
    pieces = A.cut(x, ctx.rate, ctx.duration, max_clips)
    if not pieces:
        raise RuntimeError(f"{clip.label}: silent recording ({clip.source})")
    rows = []
    for w, piece in enumerate(pieces):
        rng = np.random.default_rng([clip.seed, w])
        rel = f"{clip.split}/{clip.label}/{clip.stem}" + (f"-{w}" if max_clips > 1 else "") + ".wav"
        _write_wav(ctx.staging / rel, A.finish(piece, ctx.rate, float(rng.uniform(*LEVEL_DB))), ctx.rate)
        rows.append([rel, clip.label, clip.split, clip.source, BENCHMARK])
    return rows


def _run_task(kind: str, clips: list[_Clip], ctx: _Context) -> tuple[int, list[list[str]]]:
    rows: list[list[str]] = []
    if kind == "drums":
        sf2, bank, program = ctx.paths.drum_kits[clips[0].params["kit"]]
        hits = [(c.params["note"], c.params["velocity"]) for c in clips]
        audio = A.render_drum_hits(Path(sf2), bank, program, hits, ctx.tools["fluidsynth"], ctx.tmp, ctx.rate,
                                   ctx.duration + 0.5, f"kit{clips[0].seed}")
        for clip, x in zip(clips, audio, strict=True):
            rows += _write(clip, x, ctx, 1)
        return len(clips), rows
    (clip,) = clips
    p = clip.params
    if kind == "voices":
        x, sr = A.decode_with_sox(Path(p["path"]), ctx.tools["sox"], p["gsm"])
    elif kind == "freepats":
        x, sr = A.play_gus_note(_patch(p["patch"])[p["sample"]], p["hz"], p["hold"] * ctx.duration)
    else:
        x, sr = A.read_zip_member(ctx.paths.zero_ad_zip, p["member"])
    return 1, _write(clip, A.resample(x, sr, ctx.rate), ctx, ZERO_AD_MAX_CLIPS if kind == "0ad" else 1)


def _tasks(plans: dict[str, list[_Clip]]) -> list[tuple[str, list[_Clip]]]:
    tasks: list[tuple[str, list[_Clip]]] = []
    by_kit: dict[str, list[_Clip]] = {}
    for clip in plans.get("drums", []):
        by_kit.setdefault(clip.params["kit"], []).append(clip)
    for group in by_kit.values():
        tasks += [("drums", group[k:k + DRUM_BATCH]) for k in range(0, len(group), DRUM_BATCH)]
    return tasks + [(kind, [c]) for kind, clips in plans.items() if kind != "drums" for c in clips]


def build_real(out: Path, sources: list[str] | None = None, seed: int = 0, rate: int = 44100, duration: float = 1.0,
               jobs: int | None = None, progress: bool = True, paths: RealPaths | None = None) -> Path:
    """Build ``out/real`` (layout and rules: module docstring) from ``sources`` (default: all four); returns it.

    Raises MissingPackageError naming the apt command when a source is not installed. An existing
    ``out/real`` written by this function (or synth) is replaced atomically.
    """
    names = list(SOURCES) if sources is None else list(dict.fromkeys(sources))
    unknown = [s for s in names if s not in SOURCES]
    if unknown or not names:
        raise ValueError(f"unknown source(s) {unknown}: expected a subset of {list(SOURCES)}")
    jobs = check_render_settings(rate, duration, jobs)
    paths = paths or RealPaths()
    tools = check_sources(names, paths)
    planners = {"drums": _plan_drums, "voices": _plan_voices, "freepats": _plan_freepats, "0ad": _plan_zero_ad}
    plans = {s: planners[s](paths, seed) for s in SOURCES if s in names}
    out = Path(out)
    target = out / BENCHMARK
    if target.exists() and any(target.iterdir()) and not (target / "manifest.csv").is_file():
        raise FileExistsError(f"{target} exists and is not an edge-pace benchmark (no manifest.csv); "
                              "choose another OUT or remove it")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{BENCHMARK}.partial-", dir=out))
    tasks = _tasks(plans)
    total = sum(len(c) for _, c in tasks)
    bar = None
    if progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        bar = Progress(TextColumn("[bold]real[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TaskProgressColumn(), TextColumn("{task.fields[speed]:.0f} recordings/s"),
                       TimeElapsedColumn(), TimeRemainingColumn())
    try:
        rows: list[list[str]] = []
        with tempfile.TemporaryDirectory(prefix="edge-pace-real-") as tmpdir:
            ctx = _Context(tools, paths, Path(tmpdir), staging, rate, duration)
            t0, done = time.perf_counter(), 0
            if bar is not None:
                bar.start()
                task_id = bar.add_task(", ".join(names), total=total, speed=0.0)
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(_run_task, kind, clips, ctx) for kind, clips in tasks]
                try:
                    for fut in as_completed(futures):
                        n, new = fut.result()  # re-raises a worker's error
                        rows += new
                        done += n
                        if bar is not None:
                            bar.update(task_id, completed=done, speed=done / max(time.perf_counter() - t0, 1e-9))
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        with open(staging / "manifest.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["path", "label", "split", "source", "benchmark"])
            writer.writerows(sorted(rows))
        atomic_replace_dir(staging, target)
        return target
    finally:
        if bar is not None:
            bar.stop()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def class_counts(folder: Path) -> dict[str, dict[str, int]]:
    """label -> {"train": n, "test": n} from ``folder/manifest.csv`` (in manifest order of first sight)."""
    counts: dict[str, dict[str, int]] = {}
    with open(Path(folder) / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            counts.setdefault(row["label"], {"train": 0, "test": 0})[row["split"]] += 1
    return counts
