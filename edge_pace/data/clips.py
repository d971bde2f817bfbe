"""Labelled clips: ``Clip`` (one audio file, its label, split and group), what every dataset listing shares
(hidden files, audio extensions, CSV metadata, missing files, the per-class held-out rule) and decoding
(``read_clips``: through ``edge_pace.runtime.audio.load_audio``, mono, resampled, fixed length).
Listing datasets by kind: edge_pace/data/loaders.py."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_pace.runtime.audio import AudioError, load_audio

log = logging.getLogger("edge_pace.data.loaders")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
SPLITS = ("train", "test")
TRAIN_ALIASES = ("val", "valid", "validation", "dev")
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
