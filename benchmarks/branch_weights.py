"""Branch weights of the multi-branch bundle (aisfx + speech + voice), measured as the device learns (issue 16).

Features are what the exported embedder computes (benchmarks/branch_features.py: each branch on the 44.1 kHz
window, speech and voice after the in-graph sinc resampling). Each branch is divided by its RMS on the default
calibration audio and multiplied by its weight (edge_pace/backbones/branches.py ``branch_stats``), then the shared
random projection + ReLU (D = --dim), the recursive analytic classifier, one learn per session and the device's
automatic gamma with its prior from the calibration audio (as benchmarks/branches_bench.py ``run_device``).
Class-incremental protocol, --orders class orders x --seeds projection seeds (the final ridge fit does not depend
on the class order, so the spread comes from the projection seeds). Last accuracy: all classes after the last
session; per-class last accuracy for the "no non-speech class loses more than 1 point" check.

Variants (``--variants``, comma-separated):
  aisfx              aisfx alone (the single-branch bundle)
  w=S,V              fixed weights: speech S, voice V (aisfx 1); 0 drops the branch
  loo-cal            weights from the grid (branches.WEIGHT_GRID) chosen by the leave-one-clip-out rule (runtime/gamma.py, mse at
                     its best gamma) on the default calibration audio: what `edge-pace export` can do by itself
  loo-train          the same rule on the benchmark's own training clips (an export calibrated with --audio on
                     the user's clips); never on test clips

    .venv/bin/python benchmarks/branch_weights.py --benchmarks real --variants aisfx,w=1,1,loo-cal
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from branch_features import BranchEmbedder, benchmark_features, calibration_features, kind_root
from branches_bench import per_class_last, run_device
from edge_pace.evaluation.protocol import make_sessions, protocol_for
from edge_pace.method.projection import RandomProjection
from edge_pace.runtime.gamma import select_gamma

NAMES = ("aisfx", "speech", "voice")
SPEECH_CLASSES = ("voice_es", "voice_fr", "voice_it")  # the real benchmark's speech classes


def rms_of(feats: dict[str, np.ndarray]) -> dict[str, float]:
    return {b: max(float(np.sqrt(np.mean(feats[b].astype(np.float64) ** 2))), 1e-6) for b in feats}


_DIMS: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # speech/voice z-score statistics ("dims" conditioning)
_STATS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def set_conditioning(cal: dict[str, np.ndarray], mode: str) -> None:
    """The speech and voice branches' conditioning (edge_pace/backbones/branches.py ``branch_stats``): "dims" =
    z-scored per dimension on the calibration audio and divided by sqrt(dim); "scalar" = divided by their RMS."""
    global _DIMS, _STATS
    from edge_pace.method.projection import embedding_stats

    _STATS = {}
    for b in NAMES[1:]:
        m, sd = embedding_stats(cal[b], "dims")
        _STATS[b] = (m, sd * np.float32(np.sqrt(cal[b].shape[1])))
    _DIMS = _STATS if mode == "dims" else None


def features(feats: dict[str, np.ndarray], rms: dict[str, float], weights: dict[str, float],
             conditioning: str | None = None) -> np.ndarray:
    """Concatenated branches as the projection's mean and scale vectors condition them, times w_b
    (``conditioning`` of the speech and voice branches: the run's by default)."""
    out = []
    dims = _DIMS if conditioning is None else (_STATS if conditioning == "dims" else None)
    for b in NAMES:
        if weights.get(b, 0) <= 0:
            continue
        if dims is not None and b in dims:
            out.append((feats[b] - dims[b][0]) / dims[b][1] * weights[b])
        else:
            out.append(feats[b] * (weights[b] / rms[b]))
    return np.concatenate(out, 1)


def project(F: np.ndarray, dim: int, seed: int) -> np.ndarray:
    d = F.shape[1]
    return RandomProjection(d, dim, seed, np.zeros(d, np.float32), np.ones(d, np.float32)).numpy(F)


def block_project(feats: dict[str, np.ndarray], rms: dict[str, float], spec: dict, dim: int, seed: int) -> np.ndarray:
    """Per-branch projections side by side: [ReLU(P_a f_a / rms_a) (dim), w_s ReLU(P_s f_s / rms_s) (D_s), ...]."""
    blocks = [project(feats["aisfx"] / rms["aisfx"], dim, seed)]
    for k, b in enumerate(("speech", "voice")):
        if spec[b][0] > 0 and spec[b][1] > 0:
            blocks.append(spec[b][1] * project(feats[b] / rms[b], spec[b][0], seed + 1 + k))
    return np.concatenate(blocks, 1)


def loo_mse(Z: np.ndarray, labels, groups) -> tuple[float, float]:
    found = select_gamma(Z, labels, groups)
    i = int(np.argmin(found.mse))
    return float(found.mse[i]), float(found.gamma)


def choose(feats, rms, labels, groups, dim: int, grid=None) -> tuple[dict[str, float], list]:
    """The export's rule (edge_pace/backbones/branches.py choose_weights, grid WEIGHT_GRID) on these clips."""
    from edge_pace.backbones.branches import WEIGHT_GRID, choose_weights

    class _Names:  # what choose_weights reads of the model: names, dims, slices, conditioning
        names = list(NAMES)
        conditioning = "dims" if _DIMS is not None else "scalar"
        dims = [feats[b].shape[1] for b in NAMES]
        embed_dim = sum(dims)

        def slices(self):
            starts = np.cumsum([0, *self.dims])
            return {b: slice(int(starts[i]), int(starts[i + 1])) for i, b in enumerate(NAMES)}

    F = np.concatenate([feats[b] for b in NAMES], 1)
    w, table, _ = choose_weights(_Names(), F, labels, groups, dim, 0, grid or WEIGHT_GRID,
                                 (_Names.conditioning,))  # the run's conditioning (--conditioning)
    return w, table


def parse_variant(v: str) -> dict[str, float] | str:
    if v == "aisfx":
        return {"aisfx": 1.0}
    if v.startswith("w="):
        s, vo = (float(x) for x in v[2:].split(","))
        return {"aisfx": 1.0, "speech": s, "voice": vo}
    if v in ("loo-cal", "loo-train"):
        return v
    if v.startswith("b="):  # block projections: b=Ds,Dv,ws,wv
        ds, dv, ws, wv = v[2:].split(":")
        return {"block": True, "speech": (int(ds), float(ws)), "voice": (int(dv), float(wv))}
    raise ValueError(f"unknown variant {v!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--benchmarks", default="real,keywords,speakers,environment,instruments")
    ap.add_argument("--variants", default="aisfx,w=1,1,loo-cal,loo-train")
    ap.add_argument("--seeds", type=int, default=3, help="projection seeds")
    ap.add_argument("--orders", type=int, default=3, help="class orders")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--conditioning", choices=("dims", "scalar"), default="dims",
                    help="of the speech and voice branches (aisfx: scalar)")
    ap.add_argument("--json", type=Path, default=Path("out/branch_weights.json"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    emb = BranchEmbedder()
    cal_labels, cal_groups, cal = calibration_features(emb)
    rms = rms_of(cal)
    set_conditioning(cal, args.conditioning)
    variants = {}
    for v in _split(args.variants):
        variants[v] = parse_variant(v)
    if "loo-cal" in variants:
        w, table = choose(cal, rms, cal_labels, cal_groups, args.dim)
        variants["loo-cal"] = w
        print(f"loo-cal weights {w} ({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {"dim": args.dim, "seeds": args.seeds, "orders": args.orders, "rms": rms,
               "conditioning": args.conditioning, "benchmarks": {}}
    for name in _split(args.benchmarks):
        kind, _ = kind_root(name, args.data)
        clips, _, feats = benchmark_features(name, args.data, emb)
        idx = {c.path: i for i, c in enumerate(clips)}
        sessions = [make_sessions(clips, **protocol_for(kind), seed=o) for o in range(args.orders)]
        res = {}
        for vname, w in variants.items():
            if w == "loo-train":
                tr = [i for i, c in enumerate(clips) if c.split == "train"]
                sub = {b: f[tr] for b, f in feats.items()}
                w, _ = choose(sub, rms, [clips[i].label for i in tr], list(range(len(tr))), args.dim)
            blocky = isinstance(w, dict) and w.get("block")
            zmap = (lambda f, seed: block_project(f, rms, w, args.dim, seed)) if blocky else \
                (lambda f, seed: project(features(f, rms, w), args.dim, seed))
            prior = loo_mse(zmap(cal, 0), cal_labels, cal_groups)[1]
            lasts, per_class = [], []
            for seed in range(args.seeds):
                Z = zmap(feats, seed)
                for ss in sessions:
                    lasts.append(run_device(Z, ss, idx, prior)[-1])
                per_class.append(per_class_last(Z, sessions[0], idx, prior))
            pc = {k: float(np.mean([p[k] for p in per_class])) for k in per_class[0]}
            res[vname] = {"weights": w, "prior": prior, "last": [float(np.mean(lasts)), float(np.std(lasts))],
                          "runs": lasts, "per_class": pc}
            print(f"{name} {vname} {w}: last {np.mean(lasts) * 100:.2f} ± {np.std(lasts) * 100:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if "aisfx" in res:
            base = res["aisfx"]["per_class"]
            for vname, r in res.items():
                delta = {k: (r["per_class"][k] - base[k]) * 100 for k in base}
                r["delta_per_class"] = delta
                non = {k: d for k, d in delta.items() if not k.startswith(SPEECH_CLASSES)}
                r["worst_non_speech"] = min(non.items(), key=lambda kv: kv[1]) if non else None
                r["gain"] = (r["last"][0] - res["aisfx"]["last"][0]) * 100
                if vname != "aisfx":
                    print(f"  {name} {vname}: gain {r['gain']:+.2f}, worst non-speech class {r['worst_non_speech']}",
                          flush=True)
        results["benchmarks"][name] = res
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    print(f"done in {time.perf_counter() - t0:.0f} s -> {args.json}")
    return 0


def _split(s: str) -> list[str]:
    """Comma-separated items, where w=S,V keeps its comma."""
    out, parts = [], s.split(",")
    i = 0
    while i < len(parts):
        if parts[i].startswith("w="):
            out.append(parts[i] + "," + parts[i + 1])
            i += 2
        else:
            if parts[i]:
                out.append(parts[i])
            i += 1
    return out


if __name__ == "__main__":
    raise SystemExit(main())
