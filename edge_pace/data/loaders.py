"""Dataset loaders: the paper's six benchmarks in their standard on-disk layouts, folder-per-class, the
synthetic corpus written by ``edge-pace data synth`` and the real recordings of ``edge-pace data real``.
Loaders only list files (no decoding); :func:`read_clips` decodes them (through
``edge_pace.runtime.audio.load_audio``: mono, resampled).

Every loader returns ``list[Clip]`` sorted by path, with absolute paths, ``split`` in {"train", "test"}
and ``group`` = what held-out splitting is based on (fold, speaker, singer, source). Files named by
metadata but missing on disk are reported by path (logged warning) and skipped, or raise with
``strict=True``. Hidden files (``.*``, e.g. macOS ``._x.wav``) and ``__MACOSX`` folders are ignored.

Splits (the paper gives no class-incremental split for these corpora; these are our choices):

* ``esc50``  ``ROOT/audio/*.wav`` + ``ROOT/meta/esc50.csv``. Label = ``category``. Fold 5 = test
  (400 clips), folds 1-4 = train (1600); group = ``fold<k>`` (ESC-50 keeps clips cut from one source
  recording in one fold, so the fold split is source-disjoint).
* ``us8k``   ``ROOT/audio/fold<k>/*.wav`` + ``ROOT/metadata/UrbanSound8K.csv``. Label = ``class``.
  Fold 10 = test (837 clips), folds 1-9 = train; group = ``fold<k>`` (folds are source-disjoint).
* ``sc2``    Speech Commands v2: ``ROOT/<word>/<speaker>_nohash_<n>.wav``, ``testing_list.txt``,
  ``validation_list.txt``. Label = word folder (35 words); ``_background_noise_`` and any folder
  starting with ``_`` are excluded. ``testing_list`` -> test; everything else, *including the
  validation list*, -> train (the CIL protocol has no model-selection stage that needs it; the analytic
  classifier's gamma search holds out part of session-0 train itself). group = speaker hash. The
  official lists are speaker-disjoint, so no test speaker is heard in training.
* ``timit2`` / ``timit3``  TIMIT, ``ROOT/{TRAIN,TEST}/DR<d>/<SPEAKER>/<SENT>.WAV`` (NIST SPHERE; any
  letter case; a RIFF copy ``SA1.WAV.wav`` next to ``SA1.WAV`` is de-duplicated). **Our definition**
  (the paper does not publish one): speaker identification over every speaker in TRAIN and TEST
  (630 in the full corpus); label = speaker folder name (e.g. ``FCJF0``), group = the speaker too.
  Per speaker, SA1-2 and SX (7 sentences) -> train, SI (3 phonetically diverse, speaker-unique
  sentences) -> test, so test sentences are texts never read by that speaker in training. The two
  benchmarks share this data (the paper's joint upper bound is identical for both, 95.22, which only
  fits identical data) and differ in the class schedule: see ``edge_pace.data.protocol.BENCHMARK_PROTOCOLS``
  (TIMIT-k: k new speakers per incremental session, our reading).
* ``vocalset``  ``ROOT/FULL/<singer>/<context>/<technique>/*.wav`` (``ROOT`` may also be ``FULL``
  itself). **Our task definition**: singer identification (20 singers: female1-9, male1-11); label =
  singer folder (file name prefixes are not trusted: VocalSet has e.g. ``male8/.../m9_*.wav``).
  Split, per singer: sort the singer's files by relative path, hold out ``k = round(0.2 n)``
  (at least 1 when n >= 2) evenly spaced positions ``floor((j + 0.5) n / k)`` -> test, so every
  context/technique block contributes test files. group = singer.
* ``vocalset_technique``  (extra) the 10 standard techniques (belt, breathy, inhaled, lip_trill,
  spoken, straight, trill, trillo, vibrato, vocal_fry; folder ``fry`` = vocal_fry); other folders
  (fast_forte, messa, ...) are left out. Singer-disjoint split from ``test_singers_technique.txt``
  when the file is in ROOT (the publisher's split), else the per-singer rule above. group = singer.
* ``folder``  ``ROOT/<class>/*.{wav,flac,ogg,mp3,aif,aiff}`` (split per class by the rule above), or
  ``ROOT/train/<class>/...`` + ``ROOT/test/<class>/...`` when both ``train`` and ``test`` folders
  exist (``val``/``valid``/``validation``/``dev`` folders are then merged into train). group = "".
* ``synth``  ``ROOT/manifest.csv`` (columns ``path`` relative to ROOT, ``label``, ``split``, optional
  ``source`` -> group, ``benchmark``), as ``edge-pace data synth`` writes into ``OUT/<benchmark>/``.
  ``synth:<benchmark>`` with ROOT = OUT reads ``OUT/<benchmark>/manifest.csv`` (or keeps only that
  benchmark's rows of ``ROOT/manifest.csv``). Without a manifest: the ``folder`` layout.
* ``real``   ``ROOT/manifest.csv`` as ``edge-pace data real OUT`` writes into ``OUT/real/`` (same columns as
  ``synth``; ROOT may be ``OUT`` or ``OUT/real``). The split is the manifest's (test clips held out by drum
  kit or velocity layer, prompt, recorded sample, recording file or surface: ``edge_pace.data.real``);
  group = ``source``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_pace.runtime.audio import AudioError, load_audio

log = logging.getLogger(__name__)

KINDS = ("esc50", "us8k", "sc2", "timit2", "timit3", "vocalset", "vocalset_technique", "folder", "synth", "real")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
SPLITS = ("train", "test")
TRAIN_ALIASES = ("val", "valid", "validation", "dev")
VOCALSET_TECHNIQUES = ("belt", "breathy", "inhaled", "lip_trill", "spoken", "straight", "trill", "trillo",
                       "vibrato", "vocal_fry")
_TECHNIQUE_ALIASES = {"fry": "vocal_fry", "lip_trills": "lip_trill", "trills": "trill"}
HELD_OUT_FRACTION = 0.2


class DatasetError(ValueError):
    """A dataset root that does not have the expected layout, or a missing file in strict mode."""


@dataclass(frozen=True)
class Clip:
    """One labelled audio file."""

    path: str  # absolute path to the audio file
    label: str  # class name
    split: str  # "train" or "test"
    group: str = ""  # speaker / singer / voice / fold: what held-out splitting is based on


# ----------------------------------------------------------------------------------------------- helpers

def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_audio(name: str, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> bool:
    return not _is_hidden(name) and name.lower().endswith(tuple(extensions))


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _audio_files(path: Path, recursive: bool = False) -> list[Path]:
    """Audio files under ``path`` (sorted), skipping hidden files and ``__MACOSX`` anywhere."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d)) if recursive else []
        out.extend(Path(dirpath) / f for f in filenames if _is_audio(f))
    return sorted(out)


def _find_child(path: Path, name: str) -> Path | None:
    """Child of ``path`` whose name equals ``name`` ignoring case (exact match preferred)."""
    exact = path / name
    if exact.exists():
        return exact
    for p in sorted(path.iterdir()):
        if p.name.lower() == name.lower():
            return p
    return None


def _report_missing(kind: str, missing: list[str], strict: bool) -> None:
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
    if strict:
        raise DatasetError(f"{kind}: {len(missing)} file(s) named by the metadata are missing: {shown}")
    for m in missing:
        log.warning("%s: file named by the metadata is missing, skipped: %s", kind, m)


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        lacking = [c for c in required if c not in header]
        if lacking:
            raise DatasetError(f"{path}: expected columns {list(required)}, missing {lacking} (header: {header})")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _int(value: str, source: Path, row: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{source}: row {row!r}: expected an integer fold, got {value!r}") from None


def held_out_positions(n: int, fraction: float = HELD_OUT_FRACTION) -> set[int]:
    """Positions (0-based, in a sorted list of ``n`` files) that go to test: ``k = round(fraction*n)``
    (at least 1 when ``n >= 2``, none when ``n < 2``), evenly spaced at ``floor((j + 0.5) * n / k)``."""
    if n < 2:
        return set()
    k = min(n - 1, max(1, int(math.floor(fraction * n + 0.5))))
    return {int(math.floor((j + 0.5) * n / k)) for j in range(k)}


def _split_by_rule(files: list[Path], rel_to: Path) -> list[tuple[Path, str]]:
    """Deterministic per-class/per-singer split: sort by path relative to ``rel_to``, hold out positions."""
    ordered = sorted(files, key=lambda p: p.relative_to(rel_to).as_posix())
    test = held_out_positions(len(ordered))
    return [(p, "test" if i in test else "train") for i, p in enumerate(ordered)]


def _clip(path: Path, label: str, split: str, group: str = "") -> Clip:
    return Clip(path=os.path.abspath(path), label=label, split=split, group=group)


def _existing_names(folder: Path) -> set[str]:
    return {e.name for e in os.scandir(folder) if e.is_file()} if folder.is_dir() else set()


# ----------------------------------------------------------------------------------------------- loaders

def _load_esc50(root: Path, strict: bool) -> list[Clip]:
    meta = root / "meta" / "esc50.csv"
    audio = root / "audio"
    if not meta.is_file() or not audio.is_dir():
        raise DatasetError(f"esc50: expected {root}/meta/esc50.csv and {root}/audio/*.wav (the ESC-50 repository layout)")
    rows = _read_csv(meta, ("filename", "fold", "category"))
    present = _existing_names(audio)
    clips, missing = [], []
    for r in rows:
        fold = _int(r["fold"], meta, r["filename"])
        if r["filename"] not in present:
            missing.append(str(audio / r["filename"]))
            continue
        clips.append(_clip(audio / r["filename"], r["category"], "test" if fold == 5 else "train", f"fold{fold}"))
    _report_missing("esc50", missing, strict)
    return clips


def _load_us8k(root: Path, strict: bool) -> list[Clip]:
    meta = root / "metadata" / "UrbanSound8K.csv"
    audio = root / "audio"
    if not meta.is_file() or not audio.is_dir():
        raise DatasetError(f"us8k: expected {root}/metadata/UrbanSound8K.csv and {root}/audio/fold<k>/*.wav "
                           "(the UrbanSound8K layout)")
    rows = _read_csv(meta, ("slice_file_name", "fold", "class"))
    present: dict[int, set[str]] = {}
    clips, missing = [], []
    for r in rows:
        fold = _int(r["fold"], meta, r["slice_file_name"])
        if fold not in present:
            present[fold] = _existing_names(audio / f"fold{fold}")
        path = audio / f"fold{fold}" / r["slice_file_name"]
        if r["slice_file_name"] not in present[fold]:
            missing.append(str(path))
            continue
        clips.append(_clip(path, r["class"], "test" if fold == 10 else "train", f"fold{fold}"))
    _report_missing("us8k", missing, strict)
    return clips


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {ln.strip().replace("\\", "/") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()}


def _load_sc2(root: Path, strict: bool) -> list[Clip]:
    testing_path = root / "testing_list.txt"
    if not testing_path.is_file():
        raise DatasetError(f"sc2: expected {root}/testing_list.txt and one folder per word (Speech Commands v2 layout)")
    testing = _read_list(testing_path)
    words = [d for d in _subdirs(root) if not d.name.startswith("_")]
    if not words:
        raise DatasetError(f"sc2: no word folders in {root}")
    clips, seen = [], set()
    for d in words:
        for e in sorted(os.scandir(d), key=lambda e: e.name):
            if not e.is_file() or not _is_audio(e.name, (".wav",)):
                continue
            rel = f"{d.name}/{e.name}"
            seen.add(rel)
            speaker = e.name.split("_nohash_")[0] if "_nohash_" in e.name else ""
            clips.append(_clip(Path(e.path), d.name, "test" if rel in testing else "train", speaker))
    missing = sorted(str(root / t) for t in testing - seen if not t.startswith("_"))
    _report_missing("sc2 (testing_list.txt)", missing, strict)
    return clips


_TIMIT_SENTENCE = re.compile(r"^(s[aix])\d+$", re.IGNORECASE)


def _timit_base(root: Path) -> Path:
    for cand in (root, *(c for n in ("data", "timit") if (c := _find_child(root, n)) is not None)):
        if cand.is_dir() and _find_child(cand, "TRAIN") is not None and _find_child(cand, "TEST") is not None:
            return cand
    raise DatasetError(f"timit: expected {root}/TRAIN/DR*/<speaker>/*.WAV and {root}/TEST/... "
                       "(LDC TIMIT layout, any letter case; ROOT/data/ or ROOT/TIMIT/ also searched)")


def _load_timit(root: Path, strict: bool) -> list[Clip]:
    base = _timit_base(root)
    clips: list[Clip] = []
    odd: list[str] = []
    speakers_seen: dict[str, str] = {}
    for part in ("TRAIN", "TEST"):
        part_dir = _find_child(base, part)
        for region in _subdirs(part_dir):
            for spk in _subdirs(region):
                label = spk.name.upper()
                where = f"{part_dir.name}/{region.name}/{spk.name}"
                if label in speakers_seen:
                    raise DatasetError(f"timit: speaker {label} appears twice ({speakers_seen[label]} and {where})")
                speakers_seen[label] = where
                by_utt: dict[str, list[Path]] = defaultdict(list)
                for f in _audio_files(spk):
                    by_utt[f.name.split(".")[0].lower()].append(f)
                for utt, files in sorted(by_utt.items()):
                    m = _TIMIT_SENTENCE.match(utt)
                    if m is None:
                        odd.extend(str(f) for f in files)
                        continue
                    # SA1.WAV (NIST) and SA1.WAV.wav (RIFF copy): keep the shortest name, the original.
                    f = min(files, key=lambda p: (len(p.name), p.name))
                    split = "test" if m.group(1).lower() == "si" else "train"
                    clips.append(_clip(f, label, split, label))
    if odd:
        log.warning("timit: %d audio file(s) not named SA*/SI*/SX* were ignored, e.g. %s", len(odd), odd[0])
    if not clips:
        raise DatasetError(f"timit: no SA/SI/SX utterances found under {base}")
    return clips


def _vocalset_full(root: Path) -> Path:
    full = _find_child(root, "FULL") if root.is_dir() else None
    if full is not None and full.is_dir():
        return full
    if root.is_dir() and any(d.name.lower().startswith(("female", "male")) for d in _subdirs(root)):
        return root
    raise DatasetError(f"vocalset: expected {root}/FULL/<singer>/<context>/<technique>/*.wav (VocalSet layout), "
                       "or ROOT being the FULL folder itself")


def _load_vocalset(root: Path, strict: bool, technique: bool = False) -> list[Clip]:
    full = _vocalset_full(root)
    clips: list[Clip] = []
    test_singers: set[str] | None = None
    if technique:
        for cand in (root / "test_singers_technique.txt", full.parent / "test_singers_technique.txt"):
            if cand.is_file():
                test_singers = {s.strip().lower() for s in cand.read_text(encoding="utf-8").split() if s.strip()}
                break
    for singer_dir in _subdirs(full):
        singer = singer_dir.name
        files = _audio_files(singer_dir, recursive=True)
        if technique:
            kept = []
            for f in files:
                parts = f.relative_to(singer_dir).parts
                tech = _TECHNIQUE_ALIASES.get(parts[1].lower(), parts[1].lower()) if len(parts) >= 3 else ""
                if tech in VOCALSET_TECHNIQUES:
                    kept.append((f, tech))
            if test_singers is not None:
                split = "test" if singer.lower() in test_singers else "train"
                clips.extend(_clip(f, tech, split, singer) for f, tech in kept)
            else:
                tech_of = dict(kept)
                clips.extend(_clip(f, tech_of[f], s, singer)
                             for f, s in _split_by_rule([f for f, _ in kept], singer_dir))
        else:
            clips.extend(_clip(f, singer, s, singer) for f, s in _split_by_rule(files, singer_dir))
    if not clips:
        raise DatasetError(f"vocalset: no audio under {full}")
    return clips


def _load_folder(root: Path, strict: bool, kind: str = "folder") -> list[Clip]:
    if not root.is_dir():
        raise DatasetError(f"{kind}: {root} is not a directory")
    top = {d.name.lower(): d for d in _subdirs(root)}
    clips: list[Clip] = []
    if "train" in top and "test" in top:
        for name, d in sorted(top.items()):
            if name in SPLITS or name in TRAIN_ALIASES:
                split = "test" if name == "test" else "train"
                for cls in _subdirs(d):
                    clips.extend(_clip(f, cls.name, split) for f in _audio_files(cls, recursive=True))
            else:
                log.warning("%s: folder %s ignored (split layout: only train/test/%s are read)",
                            kind, d, "/".join(TRAIN_ALIASES))
    elif "train" in top or "test" in top:
        raise DatasetError(f"{kind}: {root} has a '{'train' if 'train' in top else 'test'}' folder but not the "
                           "other: use ROOT/train/<class>/ AND ROOT/test/<class>/, or ROOT/<class>/ only")
    else:
        for cls in top.values():
            files = _audio_files(cls, recursive=True)
            clips.extend(_clip(f, cls.name, s) for f, s in _split_by_rule(files, cls))
    if not clips:
        raise DatasetError(f"{kind}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {root}/<class>/ "
                           f"or {root}/<split>/<class>/")
    return clips


def _load_synth(root: Path, strict: bool, benchmark: str | None = None, kind: str = "synth") -> list[Clip]:
    manifest = root / "manifest.csv"
    if not manifest.is_file() and benchmark and (root / benchmark / "manifest.csv").is_file():
        root, manifest = root / benchmark, root / benchmark / "manifest.csv"  # OUT/<benchmark>/ (synth's layout)
        benchmark = None  # the folder is the selection
    if not manifest.is_file():
        if benchmark:
            raise DatasetError(f"synth:{benchmark}: expected {manifest} or {root / benchmark / 'manifest.csv'}")
        nested = [d.name for d in _subdirs(root) if (d / "manifest.csv").is_file()]
        if nested:
            raise DatasetError(f"synth: {root} holds benchmarks {nested}: pass ROOT/<benchmark> as the root, "
                               f"or kind 'synth:<benchmark>'")
        return _load_folder(root, strict, kind="synth")
    rows = _read_csv(manifest, ("path", "label", "split"))
    if benchmark is not None:
        if rows and "benchmark" not in rows[0]:
            raise DatasetError(f"synth:{benchmark}: {manifest} has no 'benchmark' column")
        found = sorted({r["benchmark"] for r in rows})
        rows = [r for r in rows if r["benchmark"] == benchmark]
        if not rows:
            raise DatasetError(f"synth: no rows with benchmark={benchmark!r} in {manifest}; found {found}")
    clips, missing = [], []
    for i, r in enumerate(rows, start=2):
        split = r["split"].lower()
        if split in TRAIN_ALIASES:
            split = "train"
        if split not in SPLITS:
            raise DatasetError(f"{manifest}:{i}: split must be train or test, got {r['split']!r}")
        path = root / r["path"]
        if not path.is_file():
            missing.append(str(path))
            continue
        clips.append(_clip(path, r["label"], split, r.get("source", "")))
    _report_missing(kind, missing, strict)
    return clips


def _load_real(root: Path, strict: bool) -> list[Clip]:
    if not (root / "manifest.csv").is_file() and (root / "real" / "manifest.csv").is_file():
        root = root / "real"  # OUT as given to `edge-pace data real OUT`
    if not (root / "manifest.csv").is_file():
        raise DatasetError(f"real: expected {root / 'manifest.csv'} or {root / 'real' / 'manifest.csv'} "
                           "(written by `edge-pace data real OUT`)")
    return _load_synth(root, strict, kind="real")


def load_dataset(kind: str, root: str | Path, strict: bool = False) -> list[Clip]:
    """List a dataset's clips: ``kind`` in :data:`KINDS` (or ``synth:<benchmark>``), ``root`` its top
    folder (layouts and splits: module docstring). Files named by metadata but absent are reported by
    path and skipped, or raise :class:`DatasetError` when ``strict``. Result is sorted by path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{kind}: dataset root {root} is not a directory")
    base_kind, _, option = kind.partition(":")
    if base_kind not in KINDS or (option and base_kind != "synth"):
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {', '.join(KINDS)} or synth:<benchmark>")
    loaders: dict[str, Callable[[], list[Clip]]] = {
        "esc50": lambda: _load_esc50(root, strict),
        "us8k": lambda: _load_us8k(root, strict),
        "sc2": lambda: _load_sc2(root, strict),
        "timit2": lambda: _load_timit(root, strict),
        "timit3": lambda: _load_timit(root, strict),
        "vocalset": lambda: _load_vocalset(root, strict),
        "vocalset_technique": lambda: _load_vocalset(root, strict, technique=True),
        "folder": lambda: _load_folder(root, strict),
        "synth": lambda: _load_synth(root, strict, option or None),
        "real": lambda: _load_real(root, strict),
    }
    clips = sorted(loaders[base_kind](), key=lambda c: c.path)
    if not clips:
        raise DatasetError(f"{kind}: no clips found under {root}")
    return clips


def summarize(clips: Iterable[Clip]) -> dict[str, int]:
    """Counts for a quick look: clips per split, number of classes and groups."""
    clips = list(clips)
    return {"clips": len(clips), "train": sum(c.split == "train" for c in clips),
            "test": sum(c.split == "test" for c in clips), "classes": len({c.label for c in clips}),
            "groups": len({c.group for c in clips})}


# ----------------------------------------------------------------------------------------------- decoding

def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop (start = (len - n) // 2) or zero-pad at the end to exactly ``n`` samples."""
    if len(audio) >= n:
        start = (len(audio) - n) // 2
        return audio[start:start + n]
    return np.concatenate([audio, np.zeros(n - len(audio), dtype=audio.dtype)])


def read_clips(clips: Sequence[Clip], sample_rate: int, duration: float | None = None, strict: bool = False,
               errors: list[tuple[str, str]] | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, list[Clip]]:
    """Decode clips to float32 mono at ``sample_rate`` (``runtime.audio.load_audio``: any rate/channels).

    With ``duration`` (seconds) every clip is centre-cropped / zero-padded at the end to
    ``round(duration * sample_rate)`` samples; without it, clips are zero-padded at the end to the
    longest one. Returns ``(audio [n, samples] float32, kept clips)`` in input order.
    Unreadable files: a logged warning naming the path, appended to ``errors`` as (path, message) when
    a list is given, and skipped; with ``strict=True`` the first one raises ``AudioError`` naming it.
    ``progress(done, total)`` is called after each file."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive number of seconds or None, got {duration!r}")
    target = None if duration is None else int(round(duration * sample_rate))
    if target is not None and target < 1:
        raise ValueError(f"duration {duration} s is shorter than one sample at {sample_rate} Hz")
    kept: list[Clip] = []
    waves: list[np.ndarray] = []  # only without a fixed duration (else rows go straight into `fixed`)
    fixed = np.empty((len(clips), target), dtype=np.float32) if target is not None else None
    for i, clip in enumerate(clips):
        try:
            audio, _ = load_audio(clip.path, int(sample_rate))
        except AudioError as exc:
            if strict:
                raise
            log.warning("unreadable audio skipped: %s (%s)", clip.path, exc)
            if errors is not None:
                errors.append((clip.path, str(exc)))
        else:
            if fixed is not None:
                fixed[len(kept)] = fit_length(audio, target)
            else:
                waves.append(audio)
            kept.append(clip)
        if progress is not None:
            progress(i + 1, len(clips))
    if fixed is not None:
        out = fixed if len(kept) == len(clips) else fixed[:len(kept)].copy()
    else:
        out = np.zeros((len(waves), max((len(w) for w in waves), default=0)), dtype=np.float32)
        for row, w in zip(out, waves):
            row[:len(w)] = w
    if len(kept) < len(clips):
        log.warning("read_clips: %d of %d file(s) were unreadable and skipped", len(clips) - len(kept), len(clips))
    return out, kept
