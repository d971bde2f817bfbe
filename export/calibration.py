"""Calibration audio for a frozen export: what sets the projection's standardisation and the bundle's gamma prior.

``edge-pace export --audio DIR`` uses the user's clips (``DIR/<class>/*.wav``: labelled, so gamma can be
chosen by leave-one-clip-out; or flat files: statistics only). Without ``--audio`` the default set is
rendered on the spot by ``edge_pace.data.synth`` (sox, espeak-ng, flite, festival, fluidsynth: the set-up
script installs them) with its own seed, disjoint from the benchmarks' default seed 0: all four synthetic
benchmarks at scale ``DEFAULT_SCALE`` (46 classes: words, sox sounds, voices, instruments; about 280 clips of
1 s, a few seconds to render). The same seed gives the same clips, so a frozen export is reproducible.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

DEFAULT_SEED = 20261202
DEFAULT_SCALE = 0.06


def default_calibration(sample_rate: int, seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE,
                        duration: float = 1.0) -> tuple[np.ndarray, list[str], list[int]]:
    """(clips [n, samples] float32 at ``sample_rate``, labels, groups) of the default calibration set."""
    from edge_pace.data.loaders import load_dataset, read_clips
    from edge_pace.data.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="edge-pace-calibration-") as tmp:
        out = Path(tmp) / "cal"
        folders = synthesize(out, scale=scale, seed=seed, duration=duration, jobs=None, progress=False)
        clips = [c for name in folders for c in load_dataset(f"synth:{name}", out)]
        waves, kept = read_clips(clips, sample_rate, duration=duration, strict=True)
        labels = [f"{Path(c.path).parts[-4]}:{c.label}" for c in kept]  # benchmark:class
    return waves, labels, list(range(len(labels)))


def folder_calibration(folder: str | Path, sample_rate: int, duration: float = 1.0
                       ) -> tuple[np.ndarray, list[str] | None, list[int]]:
    """Clips of ``folder``: ``<class>/*`` (labelled) or audio files directly inside (unlabelled: labels None)."""
    from edge_pace.data.loaders import AUDIO_EXTENSIONS, Clip, read_clips

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: calibration audio folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    labelled = all(p.parent != folder for p in files)
    clips = [Clip(str(p), p.parent.name if labelled else "", "train", "") for p in files]
    waves, kept = read_clips(clips, sample_rate, duration=duration)
    return waves, ([c.label for c in kept] if labelled else None), list(range(len(kept)))
