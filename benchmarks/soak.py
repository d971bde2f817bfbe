"""Long-run soak: stream hours of generated audio through ``Learner.stream`` faster than real time, learning a
new class now and then; report resident memory over time and whether the events match what was played.

    .venv/bin/python benchmarks/soak.py --hours 1                 # 1 h of audio (a few minutes of CPU)
    .venv/bin/python benchmarks/soak.py --hours 24 --json out/soak.json
    .venv/bin/python benchmarks/soak.py --minutes 3 --every 6     # the pytest version's size

Audio: real sounds made once with sox and espeak-ng (3 variants per class: beep, knock, whistle, "hello",
buzz, chirp, warble; two unknown kinds never learned: a white-noise burst and the spoken word "seven"), at the
input rate (default 16 kHz, so the stream's resampler runs too), over a -70 dBFS noise floor (below the
-50 dBFS level gate: quiet windows skip the embedder). A schedule places one sound every ``--every``
seconds on average (at least 3.5 s apart, random onsets off the hop grid); 90 % are of learned classes,
10 % unknown. It is generated chunk by chunk (100 ms chunks), so 24 h never sit in memory.
Learning: beep, knock, whistle first; one more class every ``--learn-every`` minutes (then one more shot
of an existing class: a new recording, pitch or speaking rate moved a little, played from then on too),
each from its 3 variants placed at 0.1/0.4/0.7 of a window (one group per variant), as the microphone
listener enrols; sounds of a class are played only after it is learned.
Checks: each known sound gives exactly one event with its label (from a window overlapping it), unknown
sounds and silence none; resident memory (VmRSS) is sampled every ``--sample-every`` seconds of audio
(default 5 minutes) with the event tallies and the unknown threshold; growth after the warm-up
(``--warmup``; default the first 10 % of the run, at least 5 min, at most half) is reported with a linear
fit and its extrapolation to 24 h, beside the classifier's own growth (stored features learned meanwhile).
Figures measured here: out/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WINDOW_OFFSETS = (0.1, 0.4, 0.7)
CLASSES = {  # label -> list of (generator, args) per variant
    "beep": [("sox", "square {f}", 0.3, f) for f in (800, 850, 900)],
    "knock": [("sox", "pluck {f}", 0.3, f) for f in (110, 125, 140)],
    "whistle": [("sox", "sine {f}:{g}", 0.5, f) for f in (1200, 1300, 1400)],
    "hello": [("espeak", "hello", 0, v) for v in ("en-us", "en-gb", "en-us+f2")],
    "buzz": [("sox", "sawtooth {f}", 0.6, f) for f in (150, 160, 170)],
    "chirp": [("sox", "sine {f}:{h}", 0.25, f) for f in (3000, 3200, 3400)],
    "warble": [("sox", "sine {f} tremolo 8 90", 0.8, f) for f in (500, 550, 600)],
}
UNKNOWN_SOUNDS = [("sox", "whitenoise", 0.3, 0), ("espeak", "seven", 0, "en-us")]
FIRST = ("beep", "knock", "whistle")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_sound(spec, rate: int, folder: Path, name: str, speed: int = 175) -> np.ndarray:
    import soundfile as sf
    import soxr

    kind, synth, seconds, arg = spec
    path = folder / f"{name}.wav"
    if kind == "sox":
        args = synth.format(f=arg, g=arg * 1.5, h=arg / 2).split()
        cmd = ["sox", "-R", "-n", "-r", str(rate), "-b", "16", "-c", "1", str(path), "synth", str(seconds)]
        cmd += [a for a in args if a not in ("tremolo", "8", "90")]
        if "tremolo" in args:
            cmd += ["tremolo", "8", "90"]
        cmd += ["fade", "0.01", str(seconds), "0.05", "gain", "-n", "-6"]
        subprocess.run(cmd, check=True, capture_output=True)
        return sf.read(str(path), dtype="float32")[0]
    subprocess.run(["espeak-ng", "-w", str(path), "-v", str(arg), "-s", str(speed), synth], check=True,
                   capture_output=True)
    x, sr = sf.read(str(path), dtype="float32")
    x = soxr.resample(x, sr, rate).astype(np.float32)
    nz = np.flatnonzero(np.abs(x) > 1e-3)
    x = x[nz[0] : nz[-1] + 1]
    return (x / np.abs(x).max() * 10 ** (-6 / 20)).astype(np.float32)


@dataclass
class Played:
    onset: float
    end: float
    label: str | None  # None: an unknown sound (no event expected)
    events: list = field(default_factory=list)


class Soak:
    def __init__(self, learner, rate: int = 16000, every_s: float = 20.0, learn_every_s: float = 1200.0,
                 seed: int = 0, folder: Path | None = None, noise_dbfs: float = -70.0) -> None:
        self.learner, self.rate, self.every_s, self.learn_every_s = learner, rate, every_s, learn_every_s
        self.rng = np.random.default_rng(seed)
        folder = Path(folder or tempfile.mkdtemp(prefix="soak-sounds-"))
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.sounds = {c: [make_sound(s, rate, folder, f"{c}{i}") for i, s in enumerate(specs)]
                       for c, specs in CLASSES.items()}
        self.unknown = [make_sound(s, rate, folder, f"unknown{i}") for i, s in enumerate(UNKNOWN_SOUNDS)]
        self.noise = (np.random.default_rng(seed + 1).standard_normal(7 * rate + 13) * 10 ** (noise_dbfs / 20)
                      ).astype(np.float32)
        self.window = int(round(learner.window * rate / learner.sample_rate))
        self.to_learn = [c for c in CLASSES if c not in FIRST]
        self.played: list[Played] = []
        self.active: list[tuple[int, np.ndarray]] = []  # (start sample, sound) being mixed
        self.stray = 0
        self.learns: list[tuple[float, str]] = []

    def _enrol_windows(self, label: str, variants: list[int]) -> tuple[list[np.ndarray], list[int]]:
        clips, groups = [], []
        for v in variants:
            snd = self.sounds[label][v]
            for o in WINDOW_OFFSETS:
                w = self.noise[: self.window].copy()
                i = int(o * self.window)
                n = min(len(snd), self.window - i)
                w[i : i + n] += snd[:n]
                clips.append(w)
                groups.append(v)
        return clips, groups

    def new_variant(self, label: str, m: int) -> int:
        """A new recording of a class (pitch or speaking rate moved a little), added to its pool; its index."""
        kind, synth, seconds, arg = CLASSES[label][m % 3]
        if kind == "sox":
            spec, speed = (kind, synth, seconds, round(arg * (1 + 0.013 * (m // 3 + 1)), 1)), 175
        else:
            spec, speed = CLASSES[label][m % 3], 150 + 7 * (m % 8)
        self.sounds[label].append(make_sound(spec, self.rate, self.folder, f"{label}_extra{m}", speed))
        return len(self.sounds[label]) - 1

    def learn(self, label: str, variants=(0, 1, 2), t: float = 0.0) -> None:
        clips, groups = self._enrol_windows(label, list(variants))
        self.learner.learn_many(clips, label, sample_rate=self.rate, groups=groups)
        self.learns.append((t, label))

    def _next_sound(self, t: float) -> tuple[float, np.ndarray, str | None]:
        gap = 3.5 + self.rng.exponential(max(self.every_s - 3.5, 0.1))
        onset = t + gap
        if self.rng.random() < 0.1:
            return onset, self.unknown[self.rng.integers(len(self.unknown))], None
        label = self.learner.classes[self.rng.integers(len(self.learner.classes))]
        return onset, self.sounds[label][self.rng.integers(len(self.sounds[label]))], label

    def _match(self, ev) -> None:
        for p in reversed(self.played[-4:]):
            if ev.time_s < p.end and ev.time_s + self.learner.window / self.learner.sample_rate > p.onset:
                p.events.append(ev.label)
                return
        self.stray += 1

    def run(self, seconds: float, chunk_s: float = 0.1, sample_every_s: float = 300.0, warmup_s: float | None = None,
            log=print) -> dict:
        lrn, rate = self.learner, self.rate
        for c in FIRST:
            self.learn(c)
        stream = lrn.stream(rate)
        chunk = int(chunk_s * rate)
        n_total = int(seconds * rate)
        next_onset, next_snd, next_label = self._next_sound(1.0)
        next_learn = self.learn_every_s
        samples, t0, cpu0 = [], time.perf_counter(), time.process_time()
        pos, next_sample = 0, 0.0
        while pos < n_total:
            t = pos / rate
            if t >= next_learn:
                if self.to_learn:
                    self.learn(self.to_learn.pop(0), t=t)
                else:  # one more shot (a new recording) of an existing class
                    c = lrn.classes[len(self.learns) % len(lrn.classes)]
                    self.learn(c, variants=(self.new_variant(c, len(self.learns)),), t=t)
                next_learn += self.learn_every_s
            x = self.noise[np.arange(pos, pos + chunk) % len(self.noise)]
            while int(next_onset * rate) < pos + chunk:
                start = int(next_onset * rate)
                self.active.append((start, next_snd))
                self.played.append(Played(start / rate, start / rate + len(next_snd) / rate, next_label))
                next_onset, next_snd, next_label = self._next_sound(next_onset + len(next_snd) / rate)
            keep = []
            for start, snd in self.active:
                a, b = max(start, pos), min(start + len(snd), pos + chunk)
                if a < b:
                    x[a - pos : b - pos] += snd[a - start : b - start]
                if start + len(snd) > pos + chunk:
                    keep.append((start, snd))
            self.active = keep
            for ev in stream.feed(x):
                self._match(ev)
            pos += chunk
            if t >= next_sample:
                done = [p for p in self.played if p.end < t - 2.0]
                known = [p for p in done if p.label is not None]
                samples.append({"audio_h": round(t / 3600, 4), "rss_mb": round(rss_mb(), 2),
                                "classifier_mb": round(lrn.classifier.nbytes() / 2**20, 3),
                                "wall_s": round(time.perf_counter() - t0, 1),
                                "tau": None if not lrn.classes else round(lrn.threshold(), 4),
                                "known": len(known), "exact": sum(p.events == [p.label] for p in known),
                                "unknown": len(done) - len(known),
                                "unknown_events": sum(len(p.events) for p in done if p.label is None)})
                x_ = samples[-1]
                log(f"audio {t / 3600:6.3f} h  RSS {x_['rss_mb']:7.1f} MB  classifier {x_['classifier_mb']:.2f} MB  "
                    f"classes {len(lrn.classes)}  tau {x_['tau']}  known sounds exact {x_['exact']}/{x_['known']}  "
                    f"unknown accepted {x_['unknown_events']}/{x_['unknown']}  wall {x_['wall_s']} s")
                next_sample += sample_every_s
        for ev in stream.flush():
            self._match(ev)
        samples.append({"audio_h": round(pos / rate / 3600, 4), "rss_mb": round(rss_mb(), 2),
                        "classifier_mb": round(lrn.classifier.nbytes() / 2**20, 3),
                        "wall_s": round(time.perf_counter() - t0, 1)})
        warm = min(max(0.1 * seconds, 300.0), 0.5 * seconds) if warmup_s is None else warmup_s
        return self._report(seconds, samples, time.perf_counter() - t0, time.process_time() - cpu0, stream, warm)

    def _report(self, seconds, samples, wall, cpu, stream, warmup_s) -> dict:
        ended = [p for p in self.played if p.end <= seconds - 1.0]
        known = [p for p in ended if p.label is not None]
        unknown = [p for p in ended if p.label is None]
        exact = sum(1 for p in known if p.events == [p.label])
        missed = sum(1 for p in known if p.label not in p.events)
        repeated = sum(1 for p in known if p.events.count(p.label) > 1)
        wrong = sum(1 for p in known if any(e != p.label for e in p.events))
        unknown_events = sum(len(p.events) for p in unknown)
        warm = warmup_s / 3600
        after = [s for s in samples if s["audio_h"] >= warm]
        growth = slope = None
        if len(after) >= 2:
            h = np.array([s["audio_h"] for s in after])
            r = np.array([s["rss_mb"] for s in after])
            growth = float(r.max() - r[0])
            slope = float(np.polyfit(h, r, 1)[0]) if h[-1] > h[0] else 0.0
        clf_growth = samples[-1]["classifier_mb"] - (after[0]["classifier_mb"] if after else samples[0]["classifier_mb"])
        return {"audio_hours": seconds / 3600, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                "rtf": round(wall / seconds, 5), "rate": self.rate, "sounds_known": len(known),
                "sounds_unknown": len(unknown), "exact": exact, "missed": missed, "repeated": repeated,
                "wrong": wrong, "unknown_events": unknown_events, "stray_events": self.stray,
                "known_exact": exact == len(known) and self.stray == 0,
                "events_match": exact == len(known) and unknown_events == 0 and self.stray == 0,
                "learned": [label for _, label in self.learns], "windows_seen": stream.windows_seen,
                "windows_quiet": stream.windows_quiet, "warmup_h": warm, "rss_growth_after_warmup_mb": growth,
                "rss_slope_mb_per_h": slope,
                "rss_24h_extrapolated_mb": None if slope is None else round(slope * max(0.0, 24 - warm), 2),
                "classifier_growth_mb": round(clf_growth, 3), "max_rss_mb": round(resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=None, help="hours of audio (default 1)")
    ap.add_argument("--minutes", type=float, default=None, help="minutes of audio (instead of --hours)")
    ap.add_argument("--bundle", type=Path, default=None, help="default: the newest cached test bundle")
    ap.add_argument("--rate", type=int, default=16000, help="input sample rate (resampled to the bundle's)")
    ap.add_argument("--every", type=float, default=20.0, help="mean seconds between sounds")
    ap.add_argument("--learn-every", type=float, default=20.0, help="minutes between two learns")
    ap.add_argument("--sample-every", type=float, default=300.0, help="seconds of audio between RSS samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of audio before memory growth is counted (default: 10 %% of the run, at least 300 s, "
                         "at most half the run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    a = ap.parse_args()
    seconds = 60 * a.minutes if a.minutes is not None else 3600 * (a.hours if a.hours is not None else 1.0)
    from edge_pace.runtime.learner import Learner

    bundle = a.bundle
    if bundle is None:
        from kill_trials import default_bundle

        bundle = default_bundle()
    lrn = Learner.load(bundle, state=False, threads=1)
    soak = Soak(lrn, a.rate, a.every, 60 * a.learn_every, a.seed)
    res = soak.run(seconds, sample_every_s=a.sample_every, warmup_s=a.warmup)
    res["bundle"] = str(bundle)
    summary = {k: v for k, v in res.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
