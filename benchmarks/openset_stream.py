"""False accepts per hour on a long stream of never-learned sounds, with and without background enrolment, and a
DET curve (issue 13), on the real device runtime (a frozen bundle, ``Learner.stream``).

For each draw, 4 classes of the real-recordings benchmark are held out; the device learns the others from
their train clips. Streamed: the held-out classes' test clips (never learned) and, for the miss rate, the
learned classes' test clips, each followed by 1 s of silence. False accepts per hour = events during the
never-learned stream / its duration; misses = learned test clips that produced no correct event. Then 30 s of
background (the held-out classes' *train* clips: the user records what to ignore) is enrolled with
``learn(..., BACKGROUND)`` and the same streams run again. The DET curve (false-accept rate vs miss rate over
the sensitivity) is computed from clip-level predictions and written as a PNG.

    .venv/bin/python benchmarks/openset_stream.py out/bundle-d2048 --data out/data --draws 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge_pace.data.loaders import load_dataset, read_clips
from edge_pace.runtime.analytic import BACKGROUND
from edge_pace.runtime.learner import Learner

SENSITIVITIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3)


class MemoEmbedder:
    """The bundle's embedder with a per-window memo (keyed by the window's bytes), so that re-runs of the same
    streams with other unknown-rule settings skip the ONNX work; saved to ``path`` between runs."""

    def __init__(self, inner, path: Path | None = None) -> None:
        import pickle

        self.inner, self.path = inner, path
        self.memo = pickle.loads(path.read_bytes()) if path is not None and path.is_file() else {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import hashlib

        keys = [hashlib.sha1(np.ascontiguousarray(w).tobytes()).digest() for w in batch]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            out = self.inner(batch[todo])
            for i, z in zip(todo, out):
                self.memo[keys[i]] = z
        return np.stack([self.memo[k] for k in keys])

    def save(self) -> None:
        import pickle

        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(pickle.dumps(self.memo))


def stream_events(lrn: Learner, clips: np.ndarray, rate: int) -> tuple[list[list[str]], float]:
    """Events per clip (each clip followed by 1 s of silence) and the stream's duration in seconds."""
    st = lrn.stream(rate)
    gap = np.zeros(rate, np.float32)
    out = []
    for c in clips:
        out.append([e.label for e in st.feed(np.concatenate([c, gap]))])
    out[-1] += [e.label for e in st.flush()]
    return out, len(clips) * (len(clips[0]) + rate) / rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--held", type=int, default=4)
    ap.add_argument("--background-seconds", type=int, default=30)
    ap.add_argument("--json", type=Path, default=Path("out/openset_stream.json"))
    ap.add_argument("--png", type=Path, default=Path("out/openset_det.png"))
    ap.add_argument("--memo", type=Path, default=None, help="window-feature memo file (re-runs skip the embedder)")
    ap.add_argument("--miss", type=float, default=None, help="sensitivity of the streams (default: the device's)")
    ap.add_argument("--first", type=int, default=0, help="first seed")
    args = ap.parse_args(argv)
    memo = None
    clips = load_dataset("real", args.data / "real")
    classes = sorted({c.label for c in clips})
    rows, det = [], {"with": [], "without": []}
    for d in range(args.first, args.first + args.draws):
        t0 = time.perf_counter()
        rng = np.random.default_rng(d)
        unknown = set(rng.choice(classes, args.held, replace=False).tolist())
        lrn = Learner.load(args.bundle, state=False, threads=1, gate_dbfs=-70.0,  # some real clips are quiet
                           unknown_quantile=args.miss)
        memo = MemoEmbedder(lrn.feature_path.embedder if memo is None else memo.inner, args.memo) if memo is None else memo
        lrn.feature_path.embedder = memo
        rate = lrn.sample_rate
        known_train = [c for c in clips if c.split == "train" and c.label not in unknown]
        w, kept = read_clips(known_train, rate, duration=1.0)
        lrn.learn_many(list(w), [c.label for c in kept], sample_rate=rate)
        kt = [c for c in clips if c.split == "test" and c.label not in unknown]
        ut = [c for c in clips if c.split == "test" and c.label in unknown]
        kw, kkept = read_clips(kt, rate, duration=1.0)
        uw, _ = read_clips(ut, rate, duration=1.0)
        bg_pool = [c for c in clips if c.split == "train" and c.label in unknown]
        bg_pick = [bg_pool[i] for i in rng.permutation(len(bg_pool))[: args.background_seconds]]
        bw, _ = read_clips(bg_pick, rate, duration=1.0)
        row = {"draw": d, "unknown_classes": sorted(unknown), "never_learned_clips": len(uw), "known_clips": len(kw)}
        for mode in ("without", "with"):
            if mode == "with":
                lrn.learn_many(list(bw), BACKGROUND, sample_rate=rate)
            ev_u, secs = stream_events(lrn, uw, rate)
            ev_k, _ = stream_events(lrn, kw, rate)
            fa = sum(len(e) for e in ev_u)
            hit = sum(c.label in e for c, e in zip(kkept, ev_k))
            row[mode] = {"false_accepts": fa, "hours": secs / 3600, "fa_per_hour": fa / (secs / 3600),
                         "miss_rate": 1 - hit / len(kw)}
            # DET points from clip-level decisions over the sensitivity
            pk = [lrn.predict_proba(x, rate) for x in kw]
            pu = [lrn.predict_proba(x, rate) for x in uw]
            pts = []
            for q in SENSITIVITIES:
                lrn.unknown_quantile = q
                th = lrn.thresholds()
                miss = np.mean([s.background or s.known < th[s.top] or s.top != c.label for s, c in zip(pk, kkept)])
                far = np.mean([not s.background and s.known >= th[s.top] for s in pu])
                pts.append((float(miss), float(far)))
            lrn.unknown_quantile = args.miss  # back to the setting of the streams
            det[mode].append(pts)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        memo.save()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items()}), flush=True)
    summary = {m: {"fa_per_hour": [float(np.mean([r[m]["fa_per_hour"] for r in rows])),
                                   float(np.std([r[m]["fa_per_hour"] for r in rows]))],
                   "miss_rate": [float(np.mean([r[m]["miss_rate"] for r in rows])),
                                 float(np.std([r[m]["miss_rate"] for r in rows]))]} for m in ("without", "with")}
    print("summary", json.dumps(summary))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "summary": summary, "det": det,
                                     "sensitivities": SENSITIVITIES}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for mode, style in (("without", "o-"), ("with", "s--")):
        pts = np.mean(np.array(det[mode]), axis=0)
        ax.plot(pts[:, 0] * 100, pts[:, 1] * 100, style, label=f"{mode} {args.background_seconds} s background")
    ax.set_xlabel("miss rate (%) on learned classes' test clips")
    ax.set_ylabel("false-accept rate (%) on never-learned clips")
    ax.set_title("DET, real recordings, 4 held-out classes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"wrote {args.png} and {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
