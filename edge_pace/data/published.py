"""The paper's benchmarks in their published on-disk layouts (listing only, no decoding). Splits (the paper
gives no class-incremental split for these corpora; these are our choices):

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
  fits identical data) and differ in the class schedule: see ``edge_pace.evaluation.protocol.BENCHMARK_PROTOCOLS``
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
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from edge_pace.data.clips import (Clip, DatasetError, _audio_files, _clip, _existing_names, _find_child, _int,
                                  _is_audio, _read_csv, _report_missing, _split_by_rule, _subdirs, log)

VOCALSET_TECHNIQUES = ("belt", "breathy", "inhaled", "lip_trill", "spoken", "straight", "trill", "trillo",
                       "vibrato", "vocal_fry")
_TECHNIQUE_ALIASES = {"fry": "vocal_fry", "lip_trills": "lip_trill", "trills": "trill"}


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

