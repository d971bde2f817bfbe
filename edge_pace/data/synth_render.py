"""Rendering the offline benchmarks' clips (edge_pace/data/synth.py plans them): text-to-speech (espeak-ng,
flite, festival), sox sound recipes, fluidsynth with General MIDI soundfonts, and the shared finish (resample,
centre, noise at an SNR, level, fades, 16-bit WAV). External tools run deterministically (sox ``-R``)."""

from __future__ import annotations

import os

import io
import math
import struct
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SOUNDFONTS: dict[str, tuple[Path, str]] = {
    "FluidR3_GM": (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), "fluid-soundfont-gm"),
    "TimGM6mb": (Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont"),
}
TRAIN_SOUNDFONT, TEST_SOUNDFONT = "FluidR3_GM", "TimGM6mb"


@dataclass
class _Clip:
    benchmark: str
    label: str
    split: str
    source: str
    relpath: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Finish:
    """Per-benchmark post-processing ranges."""

    snr_db: tuple[float, float]
    level_db: tuple[float, float] = (-24.0, -1.0)
    speed: tuple[float, float] = (1.0, 1.0)


_FINISH: dict[str, _Finish] = {
    "keywords": _Finish(snr_db=(10.0, 40.0), speed=(0.9, 1.1)),
    "speakers": _Finish(snr_db=(15.0, 45.0), speed=(0.94, 1.06)),
    "environment": _Finish(snr_db=(0.0, 30.0)),
    "instruments": _Finish(snr_db=(25.0, 50.0)),
}


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{err}")
    return proc.stdout


def _parse_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Mono float64 samples and rate from WAV bytes (tolerates streamed headers with bogus sizes)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError(f"{what}: expected WAV output, got {len(data)} bytes")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[body:body + 16])
        elif cid == b"data":
            if fmt is None:
                break
            end = min(body + size, len(data))
            tag, channels, rate, _, _, bits = fmt
            raw = data[body:end]
            if tag == 1 and bits == 16:
                x = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float64) / 32768.0
            elif tag == 3 and bits == 32:
                x = np.frombuffer(raw[: len(raw) // 4 * 4], "<f4").astype(np.float64)
            else:
                raise RuntimeError(f"{what}: unsupported WAV format tag={tag} bits={bits}")
            x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
            return x, rate
        pos = body + size + (size & 1)
    raise RuntimeError(f"{what}: WAV output has no fmt/data chunk")


# ---- renderers: clip(s) -> raw audio (mono float64, rate) ----------------------------------------


def _render_espeak(clip: _Clip, tools: dict[str, str]) -> tuple[np.ndarray, int]:
    p = clip.params
    cmd = [tools["espeak-ng"], "-v", p["voice"], "-s", str(p["speed"]), "-p", str(p["pitch"]), "--stdout", p["text"]]
    return _parse_wav(_run(cmd), f"espeak-ng {p['voice']}")


def _render_flite(clip: _Clip, tools: dict[str, str]) -> tuple[np.ndarray, int]:
    p = clip.params
    cmd = [tools["flite"], "-voice", p["voice"], "--setf", f"duration_stretch={p['stretch']}",
           "-t", p["text"], "-o", "/dev/stdout"]
    return _parse_wav(_run(cmd), f"flite {p['voice']}")


def _render_festival(clips: list[_Clip], tools: dict[str, str], tmp: Path) -> list[tuple[np.ndarray, int]]:
    voice = clips[0].params["voice"]
    lines = [f"(voice_{voice})"]
    paths = []
    for k, clip in enumerate(clips):
        path = tmp / f"fest_{clip.seed}_{k}.wav"
        paths.append(path)
        text = clip.params["text"].replace('"', "").replace("\\", "")
        lines.append(f"(Parameter.set 'Duration_Stretch {clip.params['stretch']})")
        lines.append(f'(utt.save.wave (SynthText "{text}") "{path}" \'riff)')
    script = tmp / f"fest_{clips[0].seed}.scm"
    script.write_text("\n".join(lines) + "\n")
    _run([tools["festival"], "-b", str(script)])
    out = []
    for path in paths:
        if not path.is_file():
            raise RuntimeError(f"festival {voice} wrote no audio for {path.name}")
        out.append(_parse_wav(path.read_bytes(), f"festival {voice}"))
        path.unlink()
    script.unlink()
    return out


def _sox(tools: dict[str, str], rate: int, effects: list[Any], stdin: np.ndarray | None = None,
         channels: int = 1) -> np.ndarray:
    """Run sox (repeatable mode) on stdin float samples or on nothing (-n); float64 mono out."""
    out_fmt = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-"]
    fx = [f"{e:.6g}" if isinstance(e, float) else str(e) for e in effects]
    if stdin is None:
        cmd = [tools["sox"], "-R", "-V1", "-r", str(rate), "-c", str(channels), "-n", *out_fmt, *fx]
        data = None
    else:
        cmd = [tools["sox"], "-R", "-V1", "-t", "raw", "-r", str(rate), "-e", "floating-point", "-b", "32",
               "-c", "1", "-", *out_fmt, *fx]
        data = stdin.astype("<f4").tobytes()
    raw = _run(cmd, data)
    return np.frombuffer(raw[: len(raw) // 4 * 4], "<f4").astype(np.float64)


def _env_recipe(label: str, rng: np.random.Generator, rate: int,
                duration: float) -> tuple[list[Any], np.ndarray | None, int]:
    """sox effects (and optional stdin noise, channel count) for one environment clip."""
    u = rng.uniform
    nyq = 0.45 * rate
    n = int(round(duration * rate))
    if label == "siren":
        length = duration * u(0.8, 1.0)
        f0 = u(450, 900)
        cents = int(u(600, 1300))
        half = u(0.08, 0.5)
        bends = []
        t, up = 0.0, True
        while t + half <= length:
            bends.append(f"0,{cents if up else -cents},{half:.4f}")
            t, up = t + half, not up
        wave_ = str(rng.choice(["sine", "triangle", "square"]))
        return ["synth", length, wave_, f0, "bend", *bends, "lowpass", min(3500.0, nyq), "gain", -3], None, 1
    if label == "alarm":
        beep, gap = u(0.05, 0.2), u(0.04, 0.15)
        reps = max(0, int(duration * 0.9 // (beep + gap)) - 1)
        f = min(u(800, 3500), nyq)
        return ["synth", beep, str(rng.choice(["square", "sine", "triangle"])), f, "gain", -6,
                "fade", "q", 0.004, beep, 0.004, "pad", 0, gap, "repeat", reps], None, 1
    if label == "engine":
        f0 = u(25, 75)
        noise = _noise(rng, n, u(1.5, 2.0))
        return ["synth", "sawtooth", "mix", f0, "synth", "square", "mix", f0 * u(1.98, 2.02),
                "lowpass", u(200, 700), "tremolo", u(3, 15), u(10, 50), "gain", -3], noise * u(0.2, 0.8), 1
    if label == "bark":
        b = u(0.07, 0.18)
        f1 = u(350, 750)
        reps = int(rng.integers(0, 3))
        gap = u(0.08, 0.2)
        return ["synth", b, "sawtooth", f"{f1:.1f}-{f1 * u(0.5, 0.85):.1f}", "overdrive", u(5, 25),
                "bandpass", min(u(600, 1400), nyq), "1.2q", "fade", "q", 0.006, b, b * 0.6,
                "pad", 0, gap, "repeat", reps, "gain", -3], None, 1
    if label == "rain":
        x = _noise(rng, n, u(0.0, 1.0))
        drops = rng.random(n) < u(2e-4, 2e-3)
        x = x * 0.3 + drops * rng.uniform(-1, 1, n) * u(2, 6)
        return ["highpass", u(500, 2000), "lowpass", min(u(5000, 12000), nyq), "reverb", u(10, 50),
                "gain", -6], x, 1
    if label == "knock":
        x = np.zeros(n)
        t = int(u(0.0, 0.2) * rate)
        for _ in range(int(rng.integers(2, 6))):
            if t + 200 >= n:
                break
            x[t:t + 132] += rng.standard_normal(132) * np.hanning(132) * u(0.5, 1.0)
            t += int(u(0.08, 0.25) * rate)
        return ["lowpass", u(600, 2000), "bandpass", u(150, 500), f"{u(3, 8):.2f}q", "norm", -3], x, 1
    if label == "bell":
        f = u(300, 1200)
        length = duration * u(0.7, 1.0)
        ratios = [1.0, 2.76, 5.4, 8.93]
        parts = [r for r in ratios if f * r < nyq]
        tones = [a for r in parts for a in ("sine", f * r * u(0.99, 1.01))]
        return ["synth", length, *tones, "remix", "-", "fade", "l", 0.002, length, length * u(0.5, 0.98),
                "gain", -3], None, len(parts)
    if label == "whistle":
        length = u(0.3, 0.9) * duration
        f = min(u(1000, 4000), nyq)
        if rng.random() < 0.5:  # pea whistle trill
            return ["synth", length, "sine", f, "tremolo", u(18, 35), u(50, 90),
                    "fade", "q", 0.02, length, 0.05, "gain", -3], None, 1
        f2 = min(f * u(0.6, 1.5), nyq)  # slide whistle
        return ["synth", length, "sine", f"{f:.1f}:{f2:.1f}", "fade", "q", 0.03, length, 0.05, "gain", -3], None, 1
    if label == "wind":
        x = _noise(rng, n, u(1.0, 2.0))
        fc = u(200, 900)
        return ["sinc", f"{fc * 0.5:.1f}-{fc * 1.5:.1f}", "tremolo", u(0.5, 2.0), u(40, 90), "norm", -3], x, 1
    if label == "phone_ring":
        ring = u(0.25, 0.45)
        gap = u(0.1, 0.25)
        base = u(300, 1000)
        pair = (base, base * u(1.08, 1.3))
        reps = max(0, int(duration * 0.95 // (ring + gap)) - 1)
        return ["synth", ring, "sine", pair[0], "sine", pair[1], "remix", "-", "tremolo", u(15, 25), 100,
                "fade", "q", 0.01, ring, 0.01, "pad", 0, gap, "repeat", reps, "gain", -3], None, 2
    raise ValueError(f"unknown environment class {label!r}")


def _render_environment(clip: _Clip, tools: dict[str, str], rate: int, duration: float) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([clip.seed, 1])
    effects, stdin, channels = _env_recipe(clip.label, rng, rate, duration)
    return _sox(tools, rate, effects + _env_channel(rng, rate), stdin, channels), rate


def _env_channel(rng: np.random.Generator, rate: int) -> list[Any]:
    """Random recording conditions added to every environment clip: room, band limits."""
    fx: list[Any] = []
    if rng.random() < 0.5:
        fx += ["reverb", rng.uniform(10, 80), rng.uniform(20, 80), rng.uniform(30, 100)]
    if rng.random() < 0.3:
        fx += ["lowpass", min(rng.uniform(1500, 8000), 0.45 * rate)]
    if rng.random() < 0.3:
        fx += ["highpass", rng.uniform(80, 600)]
    return fx


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(events: Sequence[tuple[int, bytes]]) -> bytes:
    """A format-0 MIDI file at 1 tick = 1 ms from (absolute ms, event bytes) pairs."""
    track = _vlq(0) + b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big")  # 1 s per quarter note
    now = 0
    for t, ev in sorted(events, key=lambda e: e[0]):
        track += _vlq(t - now) + ev
        now = t
    track += _vlq(0) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1000) + b"MTrk" + struct.pack(">I", len(track)) + track


def _render_fluidsynth(clips: list[_Clip], tools: dict[str, str], tmp: Path, rate: int,
                       duration: float) -> list[tuple[np.ndarray, int]]:
    """Render clips back to back in one MIDI file (all-sound-off between them) and slice."""
    sf_name = clips[0].params["soundfont"]
    seg_ms = int(round(duration * 1000)) + 400
    events: list[tuple[int, bytes]] = []
    for k, clip in enumerate(clips):
        p = clip.params
        t0 = k * seg_ms + 10
        events += [(t0, bytes([0xB0, 121, 0])), (t0, bytes([0xC0, p["program"]])),
                   (t0 + 1, bytes([0x90, p["note"], p["velocity"]])),
                   (t0 + 1 + int(p["length"] * duration * 1000), bytes([0x80, p["note"], 0])),
                   (t0 + seg_ms - 20, bytes([0xB0, 120, 0]))]
    mid = tmp / f"fs_{clips[0].seed}.mid"
    wav = tmp / f"fs_{clips[0].seed}.wav"
    mid.write_bytes(midi_file(events))
    _run([tools["fluidsynth"], "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "1.0", "-r", str(rate),
          "-T", "wav", "-O", "s16", "-F", str(wav), str(SOUNDFONTS[sf_name][0]), str(mid)])
    x, sr = _parse_wav(wav.read_bytes(), f"fluidsynth {sf_name}")
    mid.unlink()
    wav.unlink()
    seg = seg_ms * sr / 1000
    return [(x[int(round(k * seg)):int(round((k + 1) * seg))], sr) for k in range(len(clips))]


# ----------------------------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Unit-RMS noise with a 1/f^beta power spectrum (0 white, 1 pink, 2 brown)."""
    m = n // 2 + 1
    spec = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    spec *= np.arange(1, m + 1, dtype=np.float64) ** (-beta / 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _finish(x: np.ndarray, sr: int, clip: _Clip, rate: int, duration: float) -> np.ndarray:
    """Resample, centre, pad/trim, add noise, set level, fade; int16 samples."""
    cfg = _FINISH[clip.benchmark]
    rng = np.random.default_rng([clip.seed, 2])
    speed = float(rng.uniform(*cfg.speed))
    x = np.asarray(x, np.float64)
    if not np.any(x):
        raise RuntimeError(f"{clip.benchmark}/{clip.label}: the tool produced silence ({clip.source}, {clip.params})")
    if sr * speed != rate:
        import soxr

        x = soxr.resample(x, sr * speed, rate, quality="HQ")
    x = x - x.mean()
    n = int(round(duration * rate))
    hop = max(1, rate // 100)
    frames = len(x) // hop
    if frames > 0:
        e = np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1))
        active = np.flatnonzero(e >= e.max() * 10 ** (-30 / 20))
        first, last = int(active[0]) * hop, (int(active[-1]) + 1) * hop
    else:
        first, last = 0, len(x)
    centre = (first + last) // 2
    out = np.zeros(n)
    start = n // 2 - centre  # where x[0] lands in out
    lo, hi = max(0, start), min(n, start + len(x))
    out[lo:hi] = x[lo - start:hi - start]
    a, b = max(0, first + start), min(n, last + start)
    sig = out[a:b] if b > a else out
    power = float(np.mean(sig * sig))
    if power <= 0:
        raise RuntimeError(f"{clip.benchmark}/{clip.label}: no signal left after centring ({clip.source})")
    snr = rng.uniform(*cfg.snr_db)
    out = out + _noise(rng, n, rng.uniform(0.0, 2.0)) * math.sqrt(power / 10 ** (snr / 10))
    out *= 10 ** (rng.uniform(*cfg.level_db) / 20) / np.abs(out).max()
    fade = min(int(0.01 * rate), n // 4)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        out[:fade] *= ramp
        out[n - fade:] *= ramp[::-1]
    return np.clip(np.round(out * 32767.0), -32768, 32767).astype("<i2")


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    path.write_bytes(buf.getvalue())


# ---- units of work -------------------------------------------------------------------------------

#: clips per festival / fluidsynth process: fixed (never derived from jobs) so output is identical
#: for any number of jobs
FESTIVAL_BATCH = 24
FLUIDSYNTH_BATCH = 32


@dataclass(frozen=True)
class _Context:
    tools: dict[str, str]
    tmp: Path
    staging: dict[str, Path]
    rate: int
    duration: float


def _tasks(clips: list[_Clip]) -> list[tuple[str, list[_Clip]]]:
    """Group clips into units of work (kind, clips): one clip per process, or festival/fluidsynth batches."""
    tasks: list[tuple[str, list[_Clip]]] = []
    batches: dict[tuple[str, str], list[_Clip]] = {}
    for clip in clips:
        engine = clip.params.get("engine")
        if clip.benchmark == "environment":
            tasks.append(("sox", [clip]))
        elif engine in ("espeak-ng", "flite"):
            tasks.append((engine, [clip]))
        elif engine == "festival":
            batches.setdefault(("festival", clip.params["voice"]), []).append(clip)
        else:
            batches.setdefault(("fluidsynth", clip.params["soundfont"]), []).append(clip)
    for (kind, _), group in batches.items():
        size = FESTIVAL_BATCH if kind == "festival" else FLUIDSYNTH_BATCH
        tasks += [(kind, group[k:k + size]) for k in range(0, len(group), size)]
    # batches first: they are the longest units, start them early
    return sorted(tasks, key=lambda t: -len(t[1]))


def _run_task(kind: str, clips: list[_Clip], ctx: _Context) -> int:
    """Render, finish and write the clips of one unit of work; returns the number written."""
    if kind == "sox":
        audio = [_render_environment(clips[0], ctx.tools, ctx.rate, ctx.duration)]
    elif kind == "espeak-ng":
        audio = [_render_espeak(clips[0], ctx.tools)]
    elif kind == "flite":
        audio = [_render_flite(clips[0], ctx.tools)]
    elif kind == "festival":
        audio = _render_festival(clips, ctx.tools, ctx.tmp)
    else:
        audio = _render_fluidsynth(clips, ctx.tools, ctx.tmp, ctx.rate, ctx.duration)
    for clip, (x, sr) in zip(clips, audio, strict=True):
        _write_wav(ctx.staging[clip.benchmark] / clip.relpath, _finish(x, sr, clip, ctx.rate, ctx.duration), ctx.rate)
    return len(clips)


def check_render_settings(rate: int, duration: float, jobs: int | None) -> int:
    """Validate the settings every benchmark builder shares (sample rate, clip duration, workers); returns the
    number of workers (default: the CPU count)."""
    if not (isinstance(rate, int) and 8000 <= rate <= 192000):
        raise ValueError(f"rate must be an integer sample rate in [8000, 192000], got {rate}")
    if not (0.1 <= duration <= 30.0):
        raise ValueError(f"duration must be in [0.1, 30] seconds, got {duration}")
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    return jobs
