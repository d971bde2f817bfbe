"""Readers and clip cutting for ``edge-pace data real`` (recordings shipped in Debian packages).

* :func:`sf2_strikes`: which distinct recorded samples a SoundFont 2 preset plays for each note, by
  velocity range (kits reuse samples across velocity layers and across kits: a strike is identified
  by the hash of the samples it plays).
* :func:`render_drum_hits`: single hits of an SF2 drum kit, rendered by fluidsynth (one process per
  batch, hits back to back with all-sound-off between them, no reverb/chorus: deterministic).
* :func:`decode_with_sox`: any file sox reads (asterisk's raw GSM 06.10 ``.gsm``, WAV), optionally passed
  through the GSM 06.10 codec so every telephone voice shares one codec.
* :func:`read_gus_patch` / :func:`play_gus_note`: Gravis UltraSound ``.pat`` files (freepats), which
  neither fluidsynth nor sox reads; a note is the recorded sample played back at the note's pitch
  (resampled), its sustain loop repeated while the note is held, as a GUS-style sampler does.
* :func:`zip_members` / :func:`read_zip_member`: audio (OGG Vorbis, WAV, ...) straight out of a zip archive (0 A.D.'s
  ``public.zip``) with libsndfile.
* :func:`cut` / :func:`finish`: cut ``duration``-long clips around the active (above -30 dB) part of a
  recording (one centred clip, or several non-overlapping onset-aligned windows of a long recording),
  then set the peak level, fade 10 ms in and out, and quantise to 16 bits.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.data.synth_render import _parse_wav, _run, midi_file

ACTIVE_DB = -30.0  #: a 10 ms frame is active if its RMS is within 30 dB of the loudest frame
PRE_ROLL_S = 0.05  #: onset-aligned windows start this long before the first active frame
MIN_ACTIVE_FRACTION = 0.25  #: a further window of a long recording is kept if this much of it is active
RELEASE_S = 0.1  #: release fade when a held freepats note ends before its sample does


def resample(x: np.ndarray, sr: float, rate: int) -> np.ndarray:
    """Mono float64 ``x`` at ``sr`` Hz resampled to ``rate`` (soxr HQ; ``sr`` may be fractional)."""
    x = np.asarray(x, np.float64)
    if sr == rate:
        return x
    import soxr

    return soxr.resample(x, sr, rate, quality="HQ")


def cut(x: np.ndarray, rate: int, duration: float, max_clips: int = 1) -> list[np.ndarray]:
    """Clips of ``round(duration * rate)`` samples from a recording at ``rate``.

    If the active part (10 ms frames within 30 dB of the loudest) fits, one clip centred on it
    (zero-padded). Otherwise up to ``max_clips`` non-overlapping windows from 50 ms before the first
    active frame on; windows after the first are kept only if at least a quarter of them is active.
    Returns [] for a silent recording.
    """
    n = int(round(duration * rate))
    x = np.asarray(x, np.float64)
    x = x - x.mean() if len(x) else x
    hop = max(1, rate // 100)
    frames = len(x) // hop
    if frames == 0 or not np.any(x[: frames * hop]):
        return []
    e = np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    active = e >= e.max() * 10 ** (ACTIVE_DB / 20)
    idx = np.flatnonzero(active)
    first, last = int(idx[0]) * hop, (int(idx[-1]) + 1) * hop
    if last - first <= n:
        out = np.zeros(n)
        start = n // 2 - (first + last) // 2  # where x[0] lands in out
        lo, hi = max(0, start), min(n, start + len(x))
        out[lo:hi] = x[lo - start:hi - start]
        return [out]
    clips: list[np.ndarray] = []
    start = max(0, first - int(PRE_ROLL_S * rate))
    while len(clips) < max_clips and start < last:
        window = np.zeros(n)
        part = x[start:start + n]
        window[: len(part)] = part
        if not clips or active[start // hop:(start + n) // hop].mean() >= MIN_ACTIVE_FRACTION:
            clips.append(window)
        start += n
    return clips


def finish(x: np.ndarray, rate: int, level_db: float) -> np.ndarray:
    """Peak at ``level_db`` dBFS, 10 ms raised-cosine fades, 16-bit little-endian samples."""
    out = np.asarray(x, np.float64) - float(np.mean(x))
    peak = float(np.abs(out).max())
    if peak <= 0:
        raise RuntimeError("clip is silent")
    out = out * (10 ** (level_db / 20) / peak)
    fade = min(int(0.01 * rate), len(out) // 4)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        out[:fade] *= ramp
        out[len(out) - fade:] *= ramp[::-1]
    return np.clip(np.round(out * 32767.0), -32768, 32767).astype("<i2")


# ----------------------------------------------------------------------------------------------
# fluidsynth (drum kits)
# ----------------------------------------------------------------------------------------------


def _riff_chunks(b: bytes, pos: int, end: int) -> dict[str, bytes]:
    chunks = {}
    while pos + 8 <= end:
        cid, size = b[pos:pos + 4].decode("latin-1"), struct.unpack_from("<I", b, pos + 4)[0]
        if cid == "LIST":
            chunks.update(_riff_chunks(b, pos + 12, pos + 8 + size))
        else:
            chunks[cid] = b[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    return chunks


def _zones(bags: list[tuple[int, ...]], gens: list[tuple[int, int]], first: int, last: int,
           target: int) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    """(key range, velocity range, target generator value) per zone with a ``target`` generator
    (41 instrument, 53 sampleID); a leading zone without one is global and gives default ranges."""
    zones, default = [], {43: (0, 127), 44: (0, 127)}
    for z in range(first, last):
        g = {op: amount for op, amount in gens[bags[z][0]:bags[z + 1][0]]}
        ranges = {op: (g[op] & 0xFF, g[op] >> 8) if op in g else default[op] for op in (43, 44)}
        if target in g:
            zones.append((ranges[43], ranges[44], g[target]))
        elif z == first:
            default = ranges
    return zones


@dataclass(frozen=True)
class Strike:
    """A velocity range over which an SF2 preset plays one set of samples for a note."""

    low: int
    high: int
    digest: str  #: hash of the samples' PCM data
    wave: np.ndarray  #: start of one of them (float32), to spot rescaled copies (:func:`same_recording`)


def sf2_strikes(path: Path, bank: int, program: int) -> dict[int, list[Strike]]:
    """note -> its strikes (by rising velocity) for a SoundFont 2 preset: one per velocity range
    playing a distinct set of samples (adjacent ranges playing the same samples are merged)."""
    b = Path(path).read_bytes()
    if b[:4] != b"RIFF" or b[8:12] != b"sfbk":
        raise ValueError(f"{path}: not a SoundFont 2 file")
    c = _riff_chunks(b, 12, len(b))

    def table(name: str, fmt: str) -> list[tuple[Any, ...]]:
        size = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, c[name], k) for k in range(0, len(c[name]) - size + 1, size)]

    phdr, pbag, pgen = table("phdr", "<20sHHHIII"), table("pbag", "<HH"), table("pgen", "<HH")
    inst, ibag, igen = table("inst", "<20sH"), table("ibag", "<HH"), table("igen", "<HH")
    shdr = table("shdr", "<20sIIIIIBbHH")
    smpl = c.get("smpl", b"")
    p = next((k for k, h in enumerate(phdr[:-1]) if (h[2], h[1]) == (bank, program)), None)
    if p is None:
        raise ValueError(f"{path}: no preset bank {bank} program {program}")
    digest: dict[int, str] = {}
    layers: list[tuple[int, int, int, int, int]] = []  # key lo, key hi, vel lo, vel hi, sample id
    for pk, pv, i in _zones(pbag, pgen, phdr[p][3], phdr[p + 1][3], 41):
        for ik, iv, s in _zones(ibag, igen, inst[i][1], inst[i + 1][1], 53):
            if s not in digest:
                digest[s] = hashlib.sha256(smpl[shdr[s][1] * 2:shdr[s][2] * 2]).hexdigest()
            k, v = (max(pk[0], ik[0]), min(pk[1], ik[1])), (max(pv[0], iv[0], 1), min(pv[1], iv[1]))
            if k[0] <= k[1] and v[0] <= v[1]:
                layers.append((*k, *v, s))
    strikes: dict[int, list[Strike]] = {}
    for note in range(128):
        here = [zone for zone in layers if zone[0] <= note <= zone[1]]
        cuts = sorted({1, 128} | {zone[2] for zone in here} | {zone[3] + 1 for zone in here})
        runs: list[list[Any]] = []
        for lo, nxt in zip(cuts, cuts[1:]):
            played = sorted({zone[4] for zone in here if zone[2] <= lo <= zone[3]}, key=lambda s: digest[s])
            key = hashlib.sha256("".join(digest[s] for s in played).encode()).hexdigest() if played else ""
            if runs and runs[-1][2] == key:
                runs[-1][1] = nxt - 1
            else:
                runs.append([lo, nxt - 1, key, played[0] if played else -1])
        found = [Strike(lo, hi, key, np.frombuffer(smpl[shdr[s][1] * 2:min(shdr[s][2], shdr[s][1] + 16384) * 2],
                                                   "<i2").astype(np.float32)) for lo, hi, key, s in runs if key]
        if found:
            strikes[note] = found
    return strikes


def same_recording(a: np.ndarray, b: np.ndarray, threshold: float = 0.99) -> bool:
    """Whether two waveforms are copies of one recording (rescaled or shifted): peak normalised
    cross-correlation >= ``threshold``. Distinct strikes of one drum stay below ~0.95."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return na == nb
    size = 1 << int(math.ceil(math.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    return float(np.abs(xc).max()) / (na * nb) >= threshold


def distinct_strikes(strikes: list[Strike], heard: list[Strike]) -> list[Strike]:
    """``strikes`` that copy neither one in ``heard`` nor an earlier one (same samples, or rescaled)."""
    kept: list[Strike] = []
    for s in strikes:
        if not any(s.digest == h.digest or same_recording(s.wave, h.wave) for h in heard + kept):
            kept.append(s)
    return kept


def render_drum_hits(sf2: Path, bank: int, program: int, hits: list[tuple[int, int]], fluidsynth: str,
                     tmp: Path, rate: int, segment_s: float, tag: str) -> list[np.ndarray]:
    """One ``segment_s``-long rendering at ``rate`` per (note, velocity) hit of preset (bank, program),
    from one fluidsynth run (bank 128: the drum channel 10; else channel 1 with a bank select).

    Each note is held for its whole segment, then all sound is cut (CC 120) before the next hit.
    """
    seg_ms = int(round(segment_s * 1000))
    ch = 9 if bank == 128 else 0
    events: list[tuple[int, bytes]] = []
    for k, (note, velocity) in enumerate(hits):
        t0 = k * seg_ms + 10
        select = [] if ch == 9 else [(t0, bytes([0xB0 | ch, 0, bank]))]
        events += [(t0, bytes([0xB0 | ch, 121, 0])), *select, (t0, bytes([0xC0 | ch, program])),
                   (t0 + 1, bytes([0x90 | ch, note, velocity])),
                   (t0 + seg_ms - 30, bytes([0x80 | ch, note, 0])),
                   (t0 + seg_ms - 20, bytes([0xB0 | ch, 120, 0]))]
    mid, wav = tmp / f"{tag}.mid", tmp / f"{tag}.wav"
    mid.write_bytes(midi_file(events))
    try:
        _run([fluidsynth, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "1.0", "-r", str(rate), "-T", "wav",
              "-O", "s16", "-F", str(wav), str(sf2), str(mid)])
        x, sr = _parse_wav(wav.read_bytes(), f"fluidsynth {sf2.name}")
    finally:
        mid.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)
    seg = seg_ms * sr / 1000
    return [resample(x[int(round(k * seg)):int(round((k + 1) * seg))], sr, rate) for k in range(len(hits))]


# ----------------------------------------------------------------------------------------------
# sox (telephone prompts)
# ----------------------------------------------------------------------------------------------


def decode_with_sox(path: Path, sox: str, gsm_roundtrip: bool = False) -> tuple[np.ndarray, int]:
    """Mono float64 samples and rate of any file sox reads; ``gsm_roundtrip`` encodes it as 8 kHz
    GSM 06.10 and decodes that (sox ``-R -D``: repeatable, no dither)."""
    src = ["-t", "gsm"] if path.suffix.lower() == ".gsm" else []
    if gsm_roundtrip:
        gsm = _run([sox, "-R", "-D", *src, str(path), "-t", "gsm", "-r", "8000", "-c", "1", "-"])
        data = _run([sox, "-R", "-D", "-t", "gsm", "-r", "8000", "-c", "1", "-", "-t", "wav", "-b", "16", "-"],
                    stdin=gsm)
    else:
        data = _run([sox, "-R", "-D", *src, str(path), "-t", "wav", "-b", "16", "-c", "1", "-"])
    return _parse_wav(data, f"sox {path}")


# ----------------------------------------------------------------------------------------------
# GUS patches (freepats)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GusSample:
    """One recorded sample of a GUS patch (frequencies in Hz, loop in samples)."""

    data: np.ndarray
    rate: int
    low_hz: float
    high_hz: float
    root_hz: float
    loop: tuple[int, int] | None
    pingpong: bool


def read_gus_patch(path: Path) -> list[GusSample]:
    """The samples of the first layer of a Gravis UltraSound patch (``GF1PATCH110``/``100``)."""
    b = Path(path).read_bytes()
    if not b.startswith(b"GF1PATCH") or len(b) < 239:
        raise ValueError(f"{path}: not a GUS patch (no GF1PATCH header)")
    count, pos, samples = b[198], 239, []  # 129-byte header, 63-byte instrument, 47-byte layer
    for _ in range(count):
        if pos + 96 > len(b):
            raise ValueError(f"{path}: truncated GUS patch")
        length, loop_start, loop_end = struct.unpack_from("<III", b, pos + 8)
        rate = struct.unpack_from("<H", b, pos + 20)[0]
        low, high, root = (v / 1000.0 for v in struct.unpack_from("<III", b, pos + 22))
        modes = b[pos + 55]
        raw = b[pos + 96:pos + 96 + length]
        pos += 96 + length
        width = 2 if modes & 1 else 1
        kind = ("<u" if modes & 2 else "<i") + str(width)
        x = np.frombuffer(raw[: len(raw) // width * width], kind).astype(np.float64)
        if modes & 2:
            x -= 2 ** (8 * width - 1)
        x /= 2 ** (8 * width - 1)
        ls, le = loop_start // width, min(loop_end // width, len(x))
        loop = (ls, le) if modes & 4 and le - ls > 1 else None
        samples.append(GusSample(x, rate, low, high, root, loop, bool(modes & 8)))
    return samples


def play_gus_note(sample: GusSample, note_hz: float, hold_s: float) -> tuple[np.ndarray, float]:
    """The sample played at ``note_hz`` (mono float64, and its rate in Hz: ``rate * note_hz / root``).

    Held for ``hold_s`` seconds: a looped sample repeats its loop (forward or ping-pong) until then;
    a note released before its sample ends fades out over 100 ms.
    """
    sr = sample.rate * note_hz / sample.root_hz
    need = int(math.ceil(hold_s * sr))
    x = sample.data
    if sample.loop is not None and len(x) < need:
        ls, le = sample.loop
        seg = x[ls:le]
        if sample.pingpong:
            seg = np.concatenate([seg, seg[::-1]])
        reps = int(math.ceil((need - le) / len(seg)))
        x = np.concatenate([x[:le], np.tile(seg, max(reps, 0))])
    if len(x) > need:
        release = min(int(RELEASE_S * sr), len(x) - need)
        x = x[:need + release].copy()
        x[need:] *= np.linspace(1.0, 0.0, release, endpoint=False)
    return x, sr


# ----------------------------------------------------------------------------------------------
# zip archives (0 A.D.)
# ----------------------------------------------------------------------------------------------

_ZIPS = threading.local()


def _open_zip(path: Path) -> zipfile.ZipFile:
    cache = getattr(_ZIPS, "files", None)
    if cache is None:
        cache = _ZIPS.files = {}
    if path not in cache:  # one handle per thread: ZipFile reads are not thread-safe
        cache[path] = zipfile.ZipFile(path)
    return cache[path]


def zip_bytes(path: Path, member: str) -> bytes:
    return _open_zip(Path(path)).read(member)


def read_zip_member(path: Path, member: str) -> tuple[np.ndarray, int]:
    """Mono float64 samples and rate of an audio file inside a zip archive (libsndfile)."""
    import soundfile as sf

    x, sr = sf.read(io.BytesIO(zip_bytes(path, member)), dtype="float64", always_2d=True)
    return x.mean(axis=1), int(sr)


def zip_members(path: Path, patterns: dict[str, str]) -> dict[str, list[str]]:
    """label -> audio members (sorted) whose path matches the label's regular expression (first match
    wins); a file byte-identical to one listed before is left out."""
    out: dict[str, list[str]] = {label: [] for label in patterns}
    seen: set[str] = set()
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if n.lower().endswith((".ogg", ".wav", ".flac"))):
            label = next((c for c, rx in patterns.items() if re.match(rx, name)), None)
            if label is not None:
                digest = hashlib.sha256(z.read(name)).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    out[label].append(name)
    return out
