"""Onset-to-event latency of the stream on real sounds, at the bundle's hop (0.5 s) and a shorter one, side by side.

    .venv/bin/python benchmarks/latency_bench.py --real out/data/real [--bundle DIR] [--sounds 60] [--seeds 3]
                                                 [--hops 0.5,0.25] [--int8]

A learner (numpy + onnxruntime, one thread) learns every training clip of the real-recordings benchmark
(``edge-pace data real``). For each seed a long stream is built at the bundle's rate: ``--sounds`` test clips
drawn at random, each after a gap of 1.5-3 s of quiet noise (-70 dBFS, under the level gate). The stream is fed
in 10 ms chunks to ``Learner.stream(hop_s=h)`` for every hop in ``--hops``, the same signal for all.

Onset: the first 10 ms frame of the clip whose level reaches the gate (-50 dBFS), i.e. when the sound starts,
not when the file does. An event answers a sound when its window overlaps the sound and its label is the sound's
class; latency = (window start + window length - onset) + the compute time of that window (median measured per
window in the same run): the time from the sound's start until its event could be acted on in a real-time
stream. Also: detected sounds, wrong events (a known label that is not the sound's), embedder windows per second
of audio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_split(root: Path, split: str, rate: int) -> dict[str, list[np.ndarray]]:
    from edge_pace.runtime.audio import load_audio

    return {d.name: [load_audio(str(p), rate)[0] for p in sorted(d.glob("*.wav"))]
            for d in sorted((root / split).iterdir()) if d.is_dir()}


def learn_all(lrn, train: dict[str, list[np.ndarray]]) -> int:
    """Learn every clip (device path); clips the level gate refuses entirely are skipped. Returns how many."""
    from edge_pace.runtime.audio import AudioError

    skipped = 0
    for label, xs in train.items():
        try:
            lrn.learn_many(xs, label, sample_rate=lrn.sample_rate)
        except AudioError:  # one clip below the gate refuses the batch (nothing learned): learn one by one
            for x in xs:
                try:
                    lrn.learn(x, label, sample_rate=lrn.sample_rate)
                except AudioError:
                    skipped += 1
    return skipped


def onset_of(x: np.ndarray, rate: int, gate_dbfs: float = -50.0) -> int:
    """Index of the first 10 ms frame whose RMS reaches the gate (full-scale square = 0 dB)."""
    f = max(1, rate // 100)
    n = len(x) // f
    rms = np.sqrt(np.mean(x[: n * f].reshape(n, f).astype(np.float64) ** 2, axis=1))
    loud = np.nonzero(20 * np.log10(np.maximum(rms, 1e-12)) >= gate_dbfs)[0]
    return int(loud[0] * f) if len(loud) else 0


def build_stream(test: dict[str, list[np.ndarray]], n: int, rate: int, seed: int):
    """(signal, [(label, onset, end)]) with n random test clips separated by 1.5-3 s of -70 dBFS noise."""
    rng = np.random.default_rng(seed)
    pool = [(label, x) for label, xs in test.items() for x in xs]
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    parts, sounds, pos = [], [], 0
    for i in picks:
        label, x = pool[i]
        gap = (10 ** (-70 / 20) * rng.standard_normal(int(rng.uniform(1.5, 3.0) * rate))).astype(np.float32)
        parts += [gap, x]
        pos += len(gap)
        sounds.append((label, pos + onset_of(x, rate), pos + len(x)))
        pos += len(x)
    parts.append(np.zeros(2 * rate, np.float32))
    return np.concatenate(parts), sounds


def run_hop(lrn, signal: np.ndarray, sounds: list, hop_s: float) -> dict:
    rate = lrn.sample_rate
    st = lrn.stream(rate, hop_s=hop_s)
    chunk = rate // 100
    events, compute = [], []
    t_all = time.perf_counter()
    for i in range(0, len(signal), chunk):
        seen = st.windows_seen - st.windows_quiet
        t = time.perf_counter()
        evs = st.feed(signal[i : i + chunk])
        dt = time.perf_counter() - t
        if st.windows_seen - st.windows_quiet > seen:
            compute.append(dt / (st.windows_seen - st.windows_quiet - seen))
        events += evs
    events += st.flush()
    wall = time.perf_counter() - t_all
    win = lrn.window / rate
    per_window = statistics.median(compute) if compute else 0.0
    lat, wrong, answered = [], 0, set()
    for e in events:
        hit = None
        for k, (label, on, end) in enumerate(sounds):
            if e.time_s < end / rate and e.time_s + win > on / rate:  # the window overlaps the sound
                if e.label == label:
                    hit = k
                    break
        if hit is None:
            wrong += 1
        elif hit not in answered:
            answered.add(hit)
            lat.append(e.time_s + win - sounds[hit][1] / rate + per_window)
    lat_ms = np.array(lat) * 1e3
    return {"hop_s": hop_s, "sounds": len(sounds), "detected": len(answered), "wrong_events": wrong,
            "latency_median_ms": float(np.median(lat_ms)) if len(lat_ms) else float("nan"),
            "latency_p95_ms": float(np.percentile(lat_ms, 95)) if len(lat_ms) else float("nan"),
            "latencies_ms": lat_ms.tolist(), "window_compute_ms": 1e3 * per_window,
            "windows_per_audio_s": st.windows_seen / (len(signal) / rate),
            "embedded_windows": st.windows_seen - st.windows_quiet, "rtf": wall / (len(signal) / rate)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", required=True, help="real-recordings benchmark folder (edge-pace data real)")
    ap.add_argument("--bundle", help="bundle folder (default: the runtime benchmark's cached frozen aisfx bundle)")
    ap.add_argument("--sounds", type=int, default=60, help="test sounds per stream")
    ap.add_argument("--seeds", type=int, default=3, help="streams (different sounds and gaps)")
    ap.add_argument("--hops", default="0.5,0.25", help="comma-separated hops in seconds")
    ap.add_argument("--int8", action="store_true", help="use the bundle's int8 embedder")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.bundle is None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from runtime_bench import ensure_bundle

        a.bundle = ensure_bundle(2048)
    from edge_pace.runtime.learner import Learner

    lrn = Learner.load(a.bundle, int8=a.int8, threads=1, state=False)
    root = Path(a.real)
    train, test = load_split(root, "train", lrn.sample_rate), load_split(root, "test", lrn.sample_rate)
    t = time.perf_counter()
    skipped = learn_all(lrn, train)
    print(f"learned {len(train)} classes from {sum(map(len, train.values())) - skipped} clips ({skipped} below the "
          f"level gate) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    hops = [float(h) for h in a.hops.split(",")]
    rows: dict[float, list[dict]] = {h: [] for h in hops}
    for seed in range(a.seeds):
        signal, sounds = build_stream(test, a.sounds, lrn.sample_rate, seed)
        for h in hops:
            rows[h].append(run_hop(lrn, signal, sounds, h))
    print(f"\nonset-to-event latency, {a.seeds} streams x {a.sounds} real test sounds ({len(test)} classes), "
          f"{'int8' if a.int8 else 'fp32'}, one thread; per stream median / p95, mean ± std over streams\n")
    print("| hop s | median ms | p95 ms | detected | wrong events | windows / s | compute / window ms | RTF |")
    print("|---|---|---|---|---|---|---|---|")
    for h in hops:
        r = rows[h]

        def ms(key: str) -> str:
            v = [x[key] for x in r]
            return f"{np.mean(v):.0f} ± {np.std(v):.0f}"

        det = sum(x["detected"] for x in r) / sum(x["sounds"] for x in r)
        print(f"| {h:g} | {ms('latency_median_ms')} | {ms('latency_p95_ms')} | {det:.1%} | "
              f"{sum(x['wrong_events'] for x in r)} | {np.mean([x['windows_per_audio_s'] for x in r]):.2f} | "
              f"{np.mean([x['window_compute_ms'] for x in r]):.1f} | {np.mean([x['rtf'] for x in r]):.3f} |")


if __name__ == "__main__":
    main()
