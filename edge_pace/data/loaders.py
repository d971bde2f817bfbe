"""Dataset loaders: the paper's six benchmarks in their standard on-disk layouts, folder-per-class, the
synthetic corpus written by ``edge-pace data synth`` and the real recordings of ``edge-pace data real``.
Loaders only list files (no decoding); :func:`read_clips` (edge_pace/data/clips.py) decodes them (through
``edge_pace.runtime.audio.load_audio``: mono, resampled).

Every loader returns ``list[Clip]`` sorted by path, with absolute paths, ``split`` in {"train", "test"}
and ``group`` = what held-out splitting is based on (fold, speaker, singer, source). Files named by
metadata but missing on disk are reported by path (logged warning) and skipped, or raise with
``strict=True``. Hidden files (``.*``, e.g. macOS ``._x.wav``) and ``__MACOSX`` folders are ignored.

Splits (the paper gives no class-incremental split for these corpora; these are our choices):

* ``esc50``, ``us8k``, ``sc2``, ``timit2``/``timit3``, ``vocalset``, ``vocalset_technique``: the paper's
  benchmarks in their published layouts, with our split choices (edge_pace/data/published.py).
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

from collections.abc import Callable
from pathlib import Path

from edge_pace.data.clips import (AUDIO_EXTENSIONS, SPLITS, TRAIN_ALIASES, Clip, DatasetError, _audio_files, _clip,
                                  _read_csv, _report_missing, _split_by_rule, _subdirs, fit_length, held_out_positions,
                                  log, read_clips)
from edge_pace.data.published import (VOCALSET_TECHNIQUES, _load_esc50, _load_sc2, _load_timit, _load_us8k,
                                      _load_vocalset)

KINDS = ("esc50", "us8k", "sc2", "timit2", "timit3", "vocalset", "vocalset_technique", "folder", "synth", "real")


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


__all__ = ["KINDS", "AUDIO_EXTENSIONS", "SPLITS", "TRAIN_ALIASES", "VOCALSET_TECHNIQUES", "Clip", "DatasetError",
           "load_dataset", "read_clips", "fit_length", "held_out_positions"]
