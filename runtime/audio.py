"""Audio input for the runtime: decoding (soundfile), validation and documented conversions, resampling (soxr).

Conversions (documented, never silent surprises):
* int16 / int32 PCM -> float32 in [-1, 1); float64 / float16 -> float32; other dtypes (int64, uint8, bool,
  complex, strings, objects) are refused. Float samples are expected in [-1, 1]; their scale only matters
  to the level gate (the embedder peak-normalises every window). float64 values beyond float32's range
  (|x| > 3.4e38) are refused.
* [samples, channels] or [channels, samples] with 2+ channels -> mean over channels (mono). The channel
  axis is the shorter one; ambiguous 2-D input (both axes > 8) is refused.
* any sample rate from ``MIN_RATE`` (1 kHz) to ``MAX_RATE`` (1 MHz) -> the bundle's rate with soxr (high
  quality). Rates outside that range are refused (soxr hangs on absurd ratios, e.g. 10^15 Hz).
Errors: empty audio, NaN/Inf, 3-D+ arrays, non-numeric data, sample rates out of range, clips longer than
a caller's limit (``check_duration``; the learner's ``max_clip_seconds``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_RATE = 1_000
MAX_RATE = 1_000_000


class AudioError(ValueError):
    """Bad audio input, with a message that says what was expected."""


def check_rate(sample_rate, name: str = "audio") -> int:
    """A sample rate as int: an integer (or integral float) from MIN_RATE to MAX_RATE Hz, else AudioError."""
    ok = isinstance(sample_rate, (int, np.integer)) or (isinstance(sample_rate, (float, np.floating))
                                                       and float(sample_rate).is_integer())
    if isinstance(sample_rate, (bool, np.bool_)) or not ok or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioError(f"{name}: sample_rate must be a positive integer in Hz from {MIN_RATE} to {MAX_RATE}, "
                         f"got {sample_rate!r}")
    return int(sample_rate)


def n_samples(audio) -> int:
    """Samples per channel of a 1-D or 2-D array (the longer axis of 2-D input), without converting it."""
    shape = np.shape(audio) if not isinstance(audio, np.ndarray) else audio.shape
    return int(max(shape)) if len(shape) == 2 else int(shape[0]) if len(shape) == 1 else 0


def check_duration(samples: int, rate: int, max_seconds: float | None, name: str = "audio") -> None:
    """AudioError when ``samples`` at ``rate`` last longer than ``max_seconds`` (None: no limit)."""
    if max_seconds is not None and samples > max_seconds * rate:
        raise AudioError(f"{name}: {samples / rate:.1f} s of audio is longer than the {max_seconds:g} s limit for one "
                         "clip (max_clip_seconds); cut it, or feed long recordings to stream()")


def to_float32_mono(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Validate and convert an array to float32 mono [samples] (see module docstring)."""
    try:
        a = np.asarray(audio)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise AudioError(f"{name}: expected an array of samples, got {type(audio).__name__} ({exc})") from exc
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif a.dtype == np.int32:
        a = a.astype(np.float32) / 2147483648.0
    elif a.dtype in (np.float32, np.float64, np.float16):
        if a.dtype == np.float64 and a.size and np.all(np.isfinite(a)):  # NaN/Inf: refused below
            big = float(np.abs(a).max())
            if big > float(np.finfo(np.float32).max):
                raise AudioError(f"{name}: float64 samples as large as {big:.3g} do not fit float32; expected [-1, 1]")
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
            a = a.astype(np.float32, copy=False)
    else:
        raise AudioError(f"{name}: expected float32/float64 samples in [-1, 1] or int16/int32 PCM, got dtype {a.dtype}")
    if a.ndim == 2:
        if min(a.shape) > 8:
            raise AudioError(f"{name}: expected mono [samples] or [samples, channels] with <= 8 channels, "
                             f"got shape {a.shape}")
        if a.size == 0:
            raise AudioError(f"{name}: audio is empty (shape {a.shape})")
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
    from_rate = check_rate(from_rate, "resample")
    if from_rate == int(to_rate):
        return audio
    import soxr

    return soxr.resample(audio, from_rate, int(to_rate), quality="HQ").astype(np.float32, copy=False)


def prepare(audio: np.ndarray, sample_rate: int, target_rate: int, name: str = "audio") -> np.ndarray:
    """Validate, convert to float32 mono and resample to ``target_rate``."""
    return resample(to_float32_mono(audio, name), sample_rate, target_rate)


def load_audio(path: str | Path, target_rate: int | None = None, max_seconds: float | None = None
               ) -> tuple[np.ndarray, int]:
    """Decode any libsndfile-readable file to float32 mono; resample when ``target_rate`` is given.
    Returns (audio, rate). Unreadable files, and files longer than ``max_seconds`` (checked from the header,
    before decoding), raise AudioError naming the path."""
    import soundfile as sf

    try:
        if max_seconds is not None:
            info = sf.info(str(path))
            check_duration(int(info.frames), max(int(info.samplerate), 1), max_seconds, str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError / TypeError
        raise AudioError(f"cannot decode audio file {path}: {exc}") from exc
    if data.shape[1] == 0:
        raise AudioError(f"{path}: the file has no audio channel")
    # the file says which axis holds channels: average it here rather than guess in to_float32_mono
    audio = to_float32_mono(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], name=str(path))
    rate = check_rate(rate, str(path))
    if target_rate is not None:
        audio, rate = resample(audio, rate, target_rate), target_rate
    return audio, rate
