"""Projection precision, measured: float32 vs float16 (and int8 per column) storage of the random projection,
same draw, on the real-recordings benchmark (frozen aisfx, D = 2048, the device's gamma rule, 3 projection seeds).

    .venv/bin/python benchmarks/projection_precision.py --real out/data/real

Prints last accuracy (all 20 classes learned) per precision, mean ± std over seeds, the top-1 agreement with
float32 and the largest ridge-score difference; the bundle stores what this shows to be free (README, "Speed and
size").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from edge_pace import backbones
    from edge_pace.method.projection import RandomProjection, embedding_stats
    from edge_pace.runtime.analytic import AnalyticClassifier
    from edge_pace.runtime.audio import load_audio
    from edge_pace.runtime.gamma import select_gamma

    torch.set_num_threads(1)
    model, spec = backbones.load("aisfx")
    sr = spec.sample_rate

    def split(name: str):
        xs, ys = [], []
        for d in sorted((Path(a.real) / name).iterdir()):
            for p in sorted(d.glob("*.wav")):
                x = load_audio(str(p), sr)[0]
                xs.append(np.resize(x, sr) if len(x) < sr else x[:sr])  # 1 s clips (tiled when shorter)
                ys.append(d.name)
        X = np.stack(xs).astype(np.float32)
        with torch.no_grad():
            E = np.vstack([model(torch.from_numpy(X[i : i + 32])).numpy() for i in range(0, len(X), 32)])
        return E, np.array(ys)

    Etr, ytr = split("train")
    Ete, yte = split("test")
    mean, scale = embedding_stats(Etr, "scalar")
    rows: dict[str, list] = {"float32": [], "float16": [], "int8": []}
    for seed in range(a.seeds):
        base = RandomProjection(Etr.shape[1], 2048, seed, mean, scale, precision="float32")
        W32 = base.weight.numpy()
        col = np.abs(W32).max(0) / 127
        variants = {"float32": W32, "float16": W32.astype(np.float16).astype(np.float32),
                    "int8": np.round(W32 / col).clip(-127, 127) * col}
        ref = None
        for name, W in variants.items():
            f = lambda E: np.maximum(((E - mean) / scale) @ W, 0).astype(np.float64)  # noqa: E731
            Ztr, Zte = f(Etr), f(Ete)
            g = select_gamma(Ztr, list(ytr), list(range(len(ytr)))).gamma
            c = AnalyticClassifier(Ztr.shape[1], g)
            c.learn(Ztr, list(ytr))
            s = Zte @ c.W
            pred = np.array(c.classes)[s.argmax(1)]
            if ref is None:
                ref = (pred, s)
            rows[name].append((float(np.mean(pred == yte)), float(np.mean(pred == ref[0])),
                               float(np.abs(s - ref[1]).max())))
    print(f"\nprojection precision on the real recordings ({len(set(ytr))} classes, {len(ytr)} train / {len(yte)} "
          f"test clips), {a.seeds} projection seeds, mean ± std\n")
    print("| precision | bytes (512 x 2048) | accuracy % | top-1 agreement with float32 | max ridge-score change |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        acc, agree, diff = (np.array(v) for v in zip(*r))
        nbytes = {"float32": 4, "float16": 2, "int8": 1}[name] * 512 * 2048
        print(f"| {name} | {nbytes / 1e6:.1f} MB | {100 * acc.mean():.2f} ± {100 * acc.std():.2f} | "
              f"{100 * agree.mean():.2f} % | {diff.max():.1e} |")


if __name__ == "__main__":
    main()
