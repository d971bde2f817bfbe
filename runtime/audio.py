"""Audio input for the runtime: decoding (soundfile), validation and documented conversions, resampling (soxr).

Conversions (documented, never silent surprises):
* int16 / int32 PCM -> float32 in [-1, 1); float64 -> float32; other dtypes are refused.
* [samples, channels] or [channels, samples] with 2+ channels -> mean over channels (mono). The channel
  axis is the shorter one; ambiguous 2-D input (both axes > 8) is refused.
* any sample rate -> the bundle's rate with soxr (high quality).
Errors: empty audio, NaN/Inf, 3-D+ arrays, non-numeric data, sample rates <= 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """Bad audio input, with a message that says what was expected."""


def to_float32_mono(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Validate and convert an array to float32 mono [samples] (see module docstring)."""
    a = np.asarray(audio)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif a.dtype == np.int32:
        a = a.astype(np.float32) / 2147483648.0
    elif a.dtype in (np.float32, np.float64, np.float16):
        a = a.astype(np.float32, copy=False)
    else:
        raise AudioError(f"{name}: expected float32/float64 samples in [-1, 1] or int16/int32 PCM, got dtype {a.dtype}")
    if a.ndim == 2:
        if min(a.shape) > 8:
            raise AudioError(f"{name}: expected mono [samples] or [samples, channels] with <= 8 channels, "
                             f"got shape {a.shape}")
        a = a.mean(axis=0 if a.shape[0] < a.shape[1] else 1)
    elif a.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D mono signal (or 2-D with channels), got shape {a.shape}")
    if a.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(a)):
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    return np.ascontiguousarray(a, dtype=np.float32)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 mono audio with soxr (no-op when the rates match)."""
    if from_rate is None or int(from_rate) <= 0 or int(from_rate) != from_rate:
        raise AudioError(f"sample_rate must be a positive integer in Hz, got {from_rate!r}")
    if int(from_rate) == int(to_rate):
        return audio
    import soxr

    return soxr.resample(audio, int(from_rate), int(to_rate), quality="HQ").astype(np.float32, copy=False)


def prepare(audio: np.ndarray, sample_rate: int, target_rate: int, name: str = "audio") -> np.ndarray:
    """Validate, convert to float32 mono and resample to ``target_rate``."""
    return resample(to_float32_mono(audio, name), sample_rate, target_rate)


def load_audio(path: str | Path, target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode any libsndfile-readable file to float32 mono; resample when ``target_rate`` is given.
    Returns (audio, rate). Unreadable files raise AudioError naming the path."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise AudioError(f"cannot decode audio file {path}: {exc}") from exc
    # the file says which axis holds channels: average it here rather than guess in to_float32_mono
    audio = to_float32_mono(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], name=str(path))
    if target_rate is not None:
        audio, rate = resample(audio, rate, target_rate), target_rate
    return audio, rate
