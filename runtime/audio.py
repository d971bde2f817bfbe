"""Audio input for the runtime: one place for decoding (soundfile), validation, conversion to float32 mono,
levels in dBFS and resampling (soxr). Clips (``Learner``), streams (``Stream``), the microphone and the
listener all convert through ``to_float32_mono``/``downmix`` and measure levels with ``level_dbfs``.

Conversions (documented, never silent surprises):
* int16 / int32 PCM -> float32 in [-1, 1); float64 / float16 -> float32; other dtypes (int64, uint8, bool,
  complex, strings, objects) are refused. Float samples are expected in [-1, 1]; their scale only matters
  to the level gate (the embedder peak-normalises every window). float64 values beyond float32's range
  (|x| > 3.4e38) are refused.
* 2-D input is [samples, channels] (soundfile's and sounddevice's layout) with at most ``MAX_CHANNELS`` (8)
  channels, or [channels, samples] when only the first axis can be the channel axis (at most 8 rows, more
  than 8 columns: a [2, N] array is stereo); channels are averaged (mono). When both axes are longer than 8
  the input is refused as ambiguous. The same rule holds for a whole clip and for a stream chunk.
* any sample rate from ``MIN_RATE`` (1 kHz) to ``MAX_RATE`` (1 MHz) -> the bundle's rate with soxr (high
  quality). Rates outside that range are refused (soxr hangs on absurd ratios, e.g. 10^15 Hz).
Errors: empty audio, NaN/Inf, 3-D+ arrays, non-numeric data, sample rates out of range, clips longer than
a caller's limit (``check_duration``; the learner's ``max_clip_seconds``).

Level (``level_dbfs``): 10 log10(mean x^2) of each row, i.e. RMS in dB relative to a full-scale square
wave (a full-scale sine is -3.01 dBFS, digital silence -inf).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_RATE = 1_000
MAX_RATE = 1_000_000
MAX_CHANNELS = 8
_DTYPES = (np.float16, np.float32, np.float64, np.int16, np.int32)


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


def _channels_first(shape: tuple[int, ...]) -> bool:
    """Whether a 2-D shape is [channels, samples] under the layout rule of the module docstring."""
    return shape[0] <= MAX_CHANNELS < shape[1]


def n_samples(audio) -> int:
    """Samples per channel of a 1-D or 2-D array (layout rule of the module docstring), without converting it."""
    shape = np.shape(audio) if not isinstance(audio, np.ndarray) else audio.shape
    if len(shape) == 2:
        return int(shape[1] if _channels_first(shape) else shape[0])
    return int(shape[0]) if len(shape) == 1 else 0


def check_duration(samples: int, rate: int, max_seconds: float | None, name: str = "audio") -> None:
    """AudioError when ``samples`` at ``rate`` last longer than ``max_seconds`` (None: no limit)."""
    if max_seconds is not None and samples > max_seconds * rate:
        raise AudioError(f"{name}: {samples / rate:.1f} s of audio is longer than the {max_seconds:g} s limit for one "
                         "clip (max_clip_seconds); cut it, or feed long recordings to stream()")


def audio_array(audio, name: str = "audio") -> np.ndarray:
    """``audio`` as an array of samples, validated but not converted: 1-D [samples], or 2-D returned as
    [samples, channels] (a [channels, samples] input is transposed, a view). AudioError otherwise."""
    try:
        a = np.asarray(audio)
    except (ValueError, TypeError) as exc:  # ragged nested sequences
        raise AudioError(f"{name}: expected an array of samples, got {type(audio).__name__} ({exc})") from exc
    if a.dtype not in _DTYPES:
        raise AudioError(f"{name}: expected float32/float64 samples in [-1, 1] or int16/int32 PCM, got dtype {a.dtype}")
    if a.ndim == 2:
        if min(a.shape) > MAX_CHANNELS:
            raise AudioError(f"{name}: expected mono [samples] or [samples, channels] with <= {MAX_CHANNELS} channels, "
                             f"got shape {a.shape}")
        return a.T if _channels_first(a.shape) else a
    if a.ndim != 1:
        raise AudioError(f"{name}: expected 1-D mono or 2-D [samples, channels] audio, got shape {a.shape}")
    return a


def pcm_to_float32(a: np.ndarray) -> np.ndarray:
    """int16/int32 PCM scaled to float32 in [-1, 1); float arrays cast to float32 (values beyond float32's range
    become inf). No validation: for arrays already checked, e.g. in the microphone's callback."""
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype == np.int32:
        return a.astype(np.float32) / 2147483648.0
    with np.errstate(over="ignore"):
        return a.astype(np.float32, copy=False)


def downmix(a: np.ndarray) -> np.ndarray:
    """[samples, channels] -> [samples] (mean over channels, float32); 1-D input is returned as it is."""
    if a.ndim == 1:
        return a
    return a[:, 0] if a.shape[1] == 1 else a.mean(axis=1, dtype=np.float32)


def to_float32_mono(audio, name: str = "audio", allow_empty: bool = False) -> np.ndarray:
    """Validate and convert audio to float32 mono [samples] (rules in the module docstring). Empty audio is an
    error unless ``allow_empty`` (stream chunks)."""
    a = audio_array(audio, name)
    if a.size == 0:
        if allow_empty:
            return np.zeros(0, np.float32)
        raise AudioError(f"{name}: audio is empty (shape {np.shape(audio)})")
    if a.dtype == np.float64 and np.all(np.isfinite(a)):  # NaN/Inf: refused below
        big = float(np.abs(a).max())
        if big > float(np.finfo(np.float32).max):
            raise AudioError(f"{name}: float64 samples as large as {big:.3g} do not fit float32; expected [-1, 1]")
    x = downmix(pcm_to_float32(a))
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    return np.ascontiguousarray(x, dtype=np.float32)


def level_dbfs(rows: np.ndarray) -> np.ndarray:
    """RMS level of each row in dBFS (full-scale square = 0 dB, full-scale sine = -3.01 dB, silence = -inf);
    a 1-D array is one row."""
    w = np.atleast_2d(np.asarray(rows, dtype=np.float32))
    power = np.einsum("ij,ij->i", w, w, dtype=np.float64) / max(w.shape[1], 1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


def frame_levels(x: np.ndarray, frame: int) -> np.ndarray:
    """Levels in dBFS of the consecutive ``frame``-sample frames of a 1-D signal (a partial last frame is left out)."""
    n = len(x) // frame
    return level_dbfs(x[: n * frame].reshape(n, frame)) if n else np.zeros(0)


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
    # the file says which axis holds channels (any number of them): downmix here rather than apply the array rule
    audio = to_float32_mono(downmix(data), name=str(path))
    rate = check_rate(rate, str(path))
    if target_rate is not None:
        audio, rate = resample(audio, rate, target_rate), target_rate
    return audio, rate
