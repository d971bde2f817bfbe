"""Unknown sounds, measured as wake-word tools measure them (issue 13): candidate "is this a known class?"
scores of the device's closed-form classifier, on held-out classes.

For each benchmark and draw: 4 classes are held out at random; the device learns the others (all train clips,
the frozen default bundle's features, automatic gamma); the test clips of the learned classes are "known", those
of the held-out classes "unknown". Per score: AUROC known vs unknown, and the false-accept rate (unknown clips
accepted) at 5 % and 10 % misses (known clips rejected), the threshold set from the *test* known scores (an
oracle threshold, to compare scores) and from the device's own calibration (leave-one-clip-out, no test data).

    .venv/bin/python benchmarks/openset_bench.py --benchmarks real,environment,keywords --draws 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gamma_bench import SYNTH, embed_benchmark  # noqa: E402

from edge_pace.method.projection import RandomProjection, embedding_stats  # noqa: E402
from edge_pace.runtime.analytic import AnalyticClassifier  # noqa: E402
from edge_pace.runtime.openset import calibrate  # noqa: E402


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a known clip > score of an unknown clip), ties count half (Mann-Whitney)."""
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="stable"), kind="stable").astype(np.float64) + 1
    # average ranks of ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def far_at_miss(pos: np.ndarray, neg: np.ndarray, miss: float) -> float:
    tau = np.quantile(pos, miss)
    return float(np.mean(neg >= tau))


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def scores(clf: AnalyticClassifier, Z: np.ndarray, knn_rows: dict[str, np.ndarray], mu: np.ndarray,
           maha: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Candidate known-ness scores (higher = more known) for feature rows Z."""
    Z = Z.astype(np.float64)
    S = Z @ clf.W
    k = np.argmax(S, 1)
    top = S[np.arange(len(S)), k]
    srt = np.sort(S, 1)
    R = clf.R
    lev = np.einsum("ij,ij->i", Z @ R, Z)
    # cosine similarity to the nearest stored example of the predicted class
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    knn = np.empty(len(Z))
    for c, rows in knn_rows.items():
        sel = k == clf.classes.index(c)
        if sel.any():
            knn[sel] = (Zn[sel] @ rows["unit"].T).max(1)
    Zc = _unit(Z - mu)
    knn_ctr = np.empty(len(Z))
    knn_any = np.full(len(Z), -np.inf)
    for c, rows in knn_rows.items():
        rc = _unit(rows["raw"] - mu)
        sim = Zc @ rc.T
        knn_any = np.maximum(knn_any, sim.max(1))
        sel = k == clf.classes.index(c)
        if sel.any():
            knn_ctr[sel] = sim[sel].max(1)
    V, inv_ev, means = maha  # shared within-class covariance (shrunk): V diag(inv_ev) V^T
    ZV, MV = Z @ V, means @ V
    md = ((ZV**2) @ inv_ev)[:, None] - 2 * (ZV * inv_ev) @ MV.T + ((MV**2) @ inv_ev)[None, :]
    T = 0.1
    energy = T * np.log(np.exp((S - S.max(1, keepdims=True)) / T).sum(1)) + S.max(1)
    return {"top": top, "margin": top - srt[:, -2], "energy": energy, "leverage": -lev, "knn_cos": knn,
            "top_minus_lev": top - lev, "knn_ctr": knn_ctr, "knn_any": knn_any, "maha": -md.min(1)}


def held_out_draw(z: np.ndarray, labels: np.ndarray, split: np.ndarray, classes: list[str], held: int,
                  rng: np.random.Generator) -> tuple[AnalyticClassifier, list[str], np.ndarray]:
    """One draw: ``held`` classes held out at random, the device's classifier (gamma by its own rule) learned on the
    other classes' training rows. Returns (classifier, known classes, training-row mask)."""
    unknown = set(rng.choice(classes, held, replace=False).tolist())
    known_c = [c for c in classes if c not in unknown]
    tr = (split == "train") & np.isin(labels, known_c)
    clf = AnalyticClassifier(z.shape[1], 1.0).learn(z[tr], labels[tr].tolist())
    clf.choose_gamma()
    return clf, known_c, tr


def run(name: str, clips, e: np.ndarray, proj: RandomProjection, draws: int, held: int) -> dict:
    z = proj.numpy(e)
    classes = sorted({c.label for c in clips})
    labels = np.array([c.label for c in clips])
    split = np.array([c.split for c in clips])
    out: dict[str, list] = {}
    for d in range(draws):
        clf, known_c, tr = held_out_draw(z, labels, split, classes, held, np.random.default_rng(d))
        raw = {c: np.vstack(clf.features[c]).astype(np.float64) for c in clf.classes}
        knn_rows = {c: _unit(r) for c, r in raw.items()}
        mu = np.vstack(list(raw.values())).mean(0)
        means = np.stack([r.mean(0) for r in raw.values()])
        Xc = np.vstack([r - r.mean(0) for r in raw.values()])
        ev, V = np.linalg.eigh(Xc.T @ Xc / len(Xc))
        keep = ev > ev.max() * 1e-6
        shrink = 0.1 * ev[keep].mean()
        maha = (V[:, keep], 1.0 / (ev[keep] + shrink), means)
        te_k = (split == "test") & np.isin(labels, known_c)
        te_u = (split == "test") & ~np.isin(labels, known_c)
        refs = {c: {"raw": raw[c], "unit": knn_rows[c]} for c in raw}
        sk = scores(clf, z[te_k], refs, mu, maha)
        su = scores(clf, z[te_u], refs, mu, maha)
        # calibration sample: the stored training rows, leave-one-out where it is cheap (knn: the nearest *other*
        # row of the same class; top: the closed-form leave-one-clip-out own-class score)
        cal = scores(clf, z[tr], refs, mu, maha)
        loo_top = clf.loo_scores()
        order = np.concatenate([np.flatnonzero(labels[tr] == c) for c in clf.classes])  # class order -> rows
        cal["top"] = np.empty(int(tr.sum()))
        cal["top"][order] = np.concatenate([loo_top[c] for c in clf.classes])
        ztr = _unit(z[tr].astype(np.float64))
        sim = ztr @ ztr.T
        np.fill_diagonal(sim, -np.inf)
        same = labels[tr][:, None] == labels[tr][None, :]
        cal["knn_cos"] = np.where(same, sim, -np.inf).max(1)
        h = -cal["leverage"]  # in-sample leverage of each stored row; held out: h / (1 - h) (Sherman-Morrison)
        lev_loo = h / np.maximum(1 - h, 1e-9)
        cal["leverage"] = -lev_loo
        cal["top_minus_lev"] = cal["top"] - lev_loo
        for a, b in (("knn_cos", "top_minus_lev"), ("knn_cos", "maha"), ("knn_cos", "top")):
            ma, sa = cal[a].mean(), cal[a].std() + 1e-12
            mb, sb = cal[b].mean(), cal[b].std() + 1e-12
            sk[f"{a}+{b}"] = (sk[a] - ma) / sa + (sk[b] - mb) / sb
            su[f"{a}+{b}"] = (su[a] - ma) / sa + (su[b] - mb) / sb
            cal[f"{a}+{b}"] = (cal[a] - ma) / sa + (cal[b] - mb) / sb
        for s_ in ("top", "knn_cos", "top_minus_lev", "knn_cos+top_minus_lev", "knn_cos+maha", "knn_cos+top"):
            tau = np.quantile(cal[s_], 0.05)  # the device's own threshold for a 5 % miss target
            out.setdefault(f"{s_}/dev_miss", []).append(float(np.mean(sk[s_] < tau)))
            out.setdefault(f"{s_}/dev_far", []).append(float(np.mean(su[s_] >= tau)))
        # the runtime's own model (runtime/openset.py): per-class thresholds at a target miss rate
        model = calibrate(clf.R, clf.W, clf.classes, clf.features, clf.groups)
        for which, sel in (("k", te_k), ("u", te_u)):
            Zs = z[sel]
            S = Zs.astype(np.float64) @ clf.W
            vals, kk = [], []
            for i in range(len(Zs)):
                k = int(np.argmax(S[i]))
                vals.append(model.score(Zs[i:i + 1], S[i], k, clf.R)[0])
                kk.append(clf.classes[k])
            if which == "k":
                dk, ck = np.array(vals), kk
            else:
                du, cu = np.array(vals), kk
        out.setdefault("device/auroc", []).append(auroc(dk, du))
        import edge_pace.runtime.openset as OS

        default_prior = OS.PRIOR_CLIPS
        for prior in (5, 50, 10**9):
            OS.PRIOR_CLIPS = prior
            for q in (0.01, 0.02, 0.025, 0.03, 0.05, 0.1):
                th = model.thresholds(q)
                out.setdefault(f"device{prior}@{q}/miss", []).append(float(np.mean(dk < np.array([th[c] for c in ck]))))
                out.setdefault(f"device{prior}@{q}/far", []).append(float(np.mean(du >= np.array([th[c] for c in cu]))))
        OS.PRIOR_CLIPS = default_prior
        acc = float(np.mean(np.array(clf.predict(z[te_k])) == labels[te_k]))
        out.setdefault("accuracy", []).append(acc)
        for s in sk:
            out.setdefault(f"{s}/auroc", []).append(auroc(sk[s], su[s]))
            out.setdefault(f"{s}/far@5", []).append(far_at_miss(sk[s], su[s], 0.05))
            out.setdefault(f"{s}/far@10", []).append(far_at_miss(sk[s], su[s], 0.10))
    return {k: [float(np.mean(v)), float(np.std(v))] for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--benchmarks", default="real," + ",".join(SYNTH))
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--held", type=int, default=4)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--cache", type=Path, default=Path("out/cache/embeddings"))
    ap.add_argument("--json", type=Path, default=Path("out/openset_bench.json"))
    args = ap.parse_args(argv)
    from edge_pace.evaluation.baselines import FrozenEmbedder

    emb = FrozenEmbedder("aisfx", cache_dir=args.cache)
    results = {}
    for name in [b for b in args.benchmarks.split(",") if b]:
        kind, root = ("real", args.data / "real") if name == "real" else (f"synth:{name}", args.data)
        t = time.perf_counter()
        clips, e = embed_benchmark(emb, kind, root)
        proj = RandomProjection(emb.embed_dim, args.dim, 0, *embedding_stats(e[:200], "scalar"))
        res = run(name, clips, e, proj, args.draws, args.held)
        results[name] = res
        print(f"{name} ({time.perf_counter() - t:.0f} s) accuracy {res['accuracy'][0] * 100:.1f}")
        for s in ("top", "margin", "energy", "leverage", "knn_cos", "top_minus_lev", "knn_ctr", "knn_any", "maha",
                  "knn_cos+top_minus_lev", "knn_cos+maha", "knn_cos+top"):
            dev = (f"  device tau: miss {res[f'{s}/dev_miss'][0] * 100:4.1f} FAR {res[f'{s}/dev_far'][0] * 100:5.1f}"
                   if f"{s}/dev_miss" in res else "")
            print(f"  {s:22s} AUROC {res[f'{s}/auroc'][0]:.3f}±{res[f'{s}/auroc'][1]:.3f}  FAR@5%miss "
                  f"{res[f'{s}/far@5'][0] * 100:5.1f}  FAR@10%miss {res[f'{s}/far@10'][0] * 100:5.1f}{dev}", flush=True)
        for prior in (5, 50, 10**9):
            print(f"  device (prior {prior}) AUROC {res['device/auroc'][0]:.3f}±{res['device/auroc'][1]:.3f}  " + "  ".join(
                f"target {q * 100:g}%: miss {res[f'device{prior}@{q}/miss'][0] * 100:.1f} "
                f"FAR {res[f'device{prior}@{q}/far'][0] * 100:.1f}" for q in (0.01, 0.02, 0.025, 0.03, 0.05, 0.1)),
                flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
