"""How well does the device learn with its own gamma? Figures for README (issue 11).

For each benchmark (the real-recordings one and the four synthetic ones, all clips) and each seed (class
order), the device is simulated exactly as ``Learner`` runs it: a frozen default bundle's features (the aisfx
embedding, then the random projection + ReLU, D = --dim), the recursive analytic classifier, one
``learn_many`` per session and the device's automatic gamma rule (``AutoGamma`` + ``choose_gamma``).
Embeddings come from the PyTorch backbone (the ONNX embedder equals it to ~1e-6) and are cached.

Variants:
  old       plain projection, fixed gamma = 1.0 (the bundles before issue 11)
  auto      the device's automatic gamma (leave-one-clip-out, criterion --criterion), prior from calibration
  best      one fixed gamma chosen on the TEST set in hindsight (an upper reference, per metric)
for the plain projection ("raw") and the two conditionings of edge_pace/projection.py ("scalar", the default,
and "dims"). Also K-shot: every class enrolled from K
train clips (K = 1, 3, 5, 10; --draws draws), accuracy on all test clips.

    .venv/bin/python benchmarks/gamma_bench.py --data out/data --json out/gamma_bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_pace.data.loaders import load_dataset, read_clips
from edge_pace.evaluation.protocol import make_sessions, protocol_for
from edge_pace.method.projection import RandomProjection, embedding_stats
from edge_pace.runtime.analytic import AnalyticClassifier
from edge_pace.runtime.gamma import CRITERIA, GAMMA_GRID, AutoGamma, select_gamma

SYNTH = ("environment", "keywords", "speakers", "instruments")
HINDSIGHT = tuple(10.0 ** (k / 4) for k in range(-32, 17))  # x mean ||z||^2: 1e-8 .. 1e4, quarter decades


def embed_benchmark(emb, kind: str, root: Path) -> tuple[list, np.ndarray]:
    clips = load_dataset(kind, root)
    waves, kept = read_clips(clips, emb.sample_rate, duration=1.0)
    return kept, emb.embed(waves, [c.path for c in kept])


def run_device(proj, E: dict[str, np.ndarray], sessions, idx: dict[str, int], policy: AutoGamma | None,
               gamma: float) -> tuple[list[float], list[float]]:
    """Per-session accuracy on all seen classes, and gamma after each session."""
    clf = AnalyticClassifier(proj.out_dim, gamma)
    accs, gammas = [], []
    for s in sessions:
        rows = np.array([idx[c.path] for c in s.train])
        clf.learn(E["z"][rows], [c.label for c in s.train], groups=np.arange(len(rows)))
        if policy is not None:
            policy.update(clf)  # the device's rule, as Learner runs it
        test = np.array([idx[c.path] for c in s.test])
        pred = clf.predict(E["z"][test])
        accs.append(float(np.mean([p == c.label for p, c in zip(pred, s.test)])))
        gammas.append(clf.gamma)
    return accs, gammas


def ridge_grid_accuracy(Ztr, ytr, Zte, yte, n_classes, grid) -> np.ndarray:
    """Test accuracy of the joint ridge fit at every gamma of the grid (one eigendecomposition)."""
    Ztr, Zte = Ztr.astype(np.float64), Zte.astype(np.float64)
    Y = np.zeros((len(Ztr), n_classes))
    Y[np.arange(len(Ztr)), ytr] = 1.0
    if len(Ztr) <= Ztr.shape[1]:
        lam, U = np.linalg.eigh(Ztr @ Ztr.T)
        A, B = (Zte @ Ztr.T) @ U, U.T @ Y  # scores = A diag(1/(lam+g)) B
    else:
        lam, V = np.linalg.eigh(Ztr.T @ Ztr)
        A, B = Zte @ V, V.T @ (Ztr.T @ Y)
    lam = np.maximum(lam, 0)
    return np.array([np.mean(np.argmax(A @ (B / (lam + g)[:, None]), 1) == yte) for g in grid])


def absolute(grid, Z) -> tuple[float, ...]:
    s = float(np.mean(np.sum(Z.astype(np.float64) ** 2, axis=1)))
    return tuple(c * s for c in grid)


def best_in_hindsight(proj, E, sessions, idx, grid) -> np.ndarray:
    """[sessions, grid] accuracy with one fixed gamma (recursive = joint ridge, so joint fits suffice)."""
    out, seen_train = [], []
    for s in sessions:
        seen_train += s.train
        classes = s.seen
        ytr = np.array([classes.index(c.label) for c in seen_train])
        yte = np.array([classes.index(c.label) for c in s.test])
        Ztr = E["z"][[idx[c.path] for c in seen_train]]
        Zte = E["z"][[idx[c.path] for c in s.test]]
        out.append(ridge_grid_accuracy(Ztr, ytr, Zte, yte, len(classes), grid))
    return np.array(out)


def kshot(proj, E, clips, idx, K: int, draws: int, prior: float, criterion: str, grid) -> dict:
    train = [c for c in clips if c.split == "train"]
    test = [c for c in clips if c.split == "test"]
    classes = sorted({c.label for c in clips})
    yte = np.array([classes.index(c.label) for c in test])
    Zte = E["z"][[idx[c.path] for c in test]]
    auto, best, fixed = [], [], []
    for d in range(draws):
        rng = np.random.default_rng(1000 * K + d)
        pick = [c for lb in classes for c in
                list(np.array([x for x in train if x.label == lb], dtype=object)[
                    rng.permutation(sum(x.label == lb for x in train))[:K]])]
        Ztr = E["z"][[idx[c.path] for c in pick]]
        labels = [c.label for c in pick]
        clf = AnalyticClassifier(proj.out_dim, prior).learn(Ztr, labels)
        clf.choose_gamma(prior, grid, criterion)
        auto.append(float(np.mean(np.array(clf.predict(Zte)) == np.array([c.label for c in test]))))
        ytr = np.array([classes.index(lb) for lb in labels])
        accs = ridge_grid_accuracy(Ztr, ytr, Zte, yte, len(classes), absolute(HINDSIGHT, Ztr) + (prior,))
        best.append(float(accs[:-1].max()))
        fixed.append(float(accs[-1]))
    return {"K": K, "auto_mean": float(np.mean(auto)), "auto_min": float(np.min(auto)),
            "best_mean": float(np.mean(best)), "best_min": float(np.min(best)), "prior_mean": float(np.mean(fixed))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--benchmarks", default="real," + ",".join(SYNTH))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--criterion", default="mse,accuracy", help=f"comma-separated, from {CRITERIA}")
    ap.add_argument("--kshot", default="1,3,5,10")
    ap.add_argument("--variants", default="raw,scalar,dims", help="feature conditionings to measure")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path("out/cache/embeddings"))
    ap.add_argument("--json", type=Path, default=Path("out/gamma_bench.json"))
    args = ap.parse_args(argv)
    from edge_pace.evaluation.baselines import FrozenEmbedder
    from edge_pace.export.calibration import default_calibration

    t0 = time.perf_counter()
    emb = FrozenEmbedder("aisfx", cache_dir=args.cache)
    cal_w, cal_labels, cal_groups = default_calibration(emb.sample_rate)
    e_cal = emb.embed(cal_w)
    projs = {"raw": RandomProjection(emb.embed_dim, args.dim, 0),
             "scalar": RandomProjection(emb.embed_dim, args.dim, 0, *embedding_stats(e_cal, "scalar")),
             "dims": RandomProjection(emb.embed_dim, args.dim, 0, *embedding_stats(e_cal, "dims"))}
    criteria = tuple(c for c in args.criterion.split(",") if c)
    projs = {k: v for k, v in projs.items() if k in args.variants.split(",")}
    priors = {(v, cr): select_gamma(p.numpy(e_cal), cal_labels, cal_groups, GAMMA_GRID, cr).gamma
              for v, p in projs.items() for cr in criteria}
    print(f"calibration: {len(cal_labels)} clips, priors {priors} ({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {"priors": {f"{v}/{c}": g for (v, c), g in priors.items()}, "benchmarks": {}, "dim": args.dim,
               "seeds": args.seeds}
    for name in [b for b in args.benchmarks.split(",") if b]:
        kind = "real" if name == "real" else f"synth:{name}"
        root = args.data / name if name == "real" else args.data
        if not root.exists():
            print(f"{name}: {root} missing, skipped", file=sys.stderr)
            continue
        t = time.perf_counter()
        clips, e = embed_benchmark(emb, kind, root)
        idx = {c.path: i for i, c in enumerate(clips)}
        res = {"clips": len(clips), "classes": len({c.label for c in clips}),
               "test_clips": sum(c.split == "test" for c in clips)}
        for v, proj in projs.items():
            E = {"z": proj.numpy(e)}
            rows = {"old": []}
            for cr in criteria:
                rows[f"auto-{cr}"] = []
            grid_curves = []
            for seed in range(args.seeds):
                sessions = make_sessions(clips, **protocol_for(kind), seed=seed)
                rows["old"].append(run_device(proj, E, sessions, idx, None, 1.0)[0])
                for cr in criteria:
                    pol = AutoGamma(prior=priors[(v, cr)], criterion=cr)
                    acc, gam = run_device(proj, E, sessions, idx, pol, priors[(v, cr)])
                    rows[f"auto-{cr}"].append(acc)
                    res.setdefault(f"{v}/gammas-{cr}", []).append(gam)
                hs = absolute(HINDSIGHT, E["z"][[idx[c.path] for c in clips if c.split == "train"]])
                grid_curves.append(best_in_hindsight(proj, E, sessions, idx, hs))
            G = np.array(grid_curves)  # [seeds, sessions, grid]
            gl, ga = int(np.argmax(G[:, -1, :].mean(0))), int(np.argmax(G.mean(1).mean(0)))
            summary = {}
            for k, r in rows.items():
                r = np.array(r)
                summary[k] = {"last": [float(r[:, -1].mean()), float(r[:, -1].std())],
                              "avg": [float(r.mean(1).mean()), float(r.mean(1).std())]}
            summary["best"] = {"last": [float(G[:, -1, gl].mean()), float(G[:, -1, gl].std())],
                               "avg": [float(G[:, :, ga].mean(1).mean()), float(G[:, :, ga].mean(1).std())],
                               "gamma_last": hs[gl], "gamma_avg": hs[ga]}
            summary["kshot"] = [kshot(proj, E, clips, idx, int(K), args.draws, priors[(v, criteria[0])],
                                      criteria[0], GAMMA_GRID) for K in args.kshot.split(",") if K]
            summary["gamma_last"] = {cr: res[f"{v}/gammas-{cr}"] for cr in criteria}
            res[v] = summary
            print(f"{name} [{v}] " + "  ".join(
                f"{k}: last {s['last'][0] * 100:.1f}±{s['last'][1] * 100:.1f} avg {s['avg'][0] * 100:.1f}"
                f"±{s['avg'][1] * 100:.1f}" for k, s in summary.items() if k not in ("kshot", "gamma_last")), flush=True)
            print(f"   kshot: " + "  ".join(f"K={r['K']}: auto {r['auto_mean'] * 100:.1f} (min {r['auto_min'] * 100:.1f})"
                                          f" best {r['best_mean'] * 100:.1f} prior {r['prior_mean'] * 100:.1f}" for r in summary["kshot"]), flush=True)
        res["seconds"] = round(time.perf_counter() - t, 1)
        results["benchmarks"][name] = res
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    print(f"done in {time.perf_counter() - t0:.0f} s -> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
