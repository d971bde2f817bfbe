"""Per-branch embeddings of the offline benchmarks through the multi-branch bundle's own path (shared by
branch_weights.py and wake_peer.py).

Every clip is decoded once at 44.1 kHz (1 s, as the device's window) and run through each branch of the
``aisfx+speech+voice`` backbone (edge_pace/backbones/branches.py): aisfx as it is, speech and voice after the
in-graph windowed-sinc resampling to 16 kHz, exactly what the exported embedder computes (torch, one thread).
Embeddings are cached per branch under ``--cache`` (edge_pace.evaluation.frozen.EmbeddingCache, keyed by file, size,
mtime and length), so a second run costs only the decoding.

    .venv/bin/python benchmarks/branch_features.py --data out/data      # fill the cache for all benchmarks
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from edge_pace.data.loaders import load_dataset, read_clips
from edge_pace.evaluation.frozen import EmbeddingCache

BENCHMARKS = ("keywords", "speakers", "real", "environment", "instruments")
BACKBONE = "aisfx+speech+voice"
CACHE = Path("out/cache/branches")


def kind_root(name: str, data: Path) -> tuple[str, Path]:
    return ("real", data / "real") if name == "real" else (f"synth:{name}", data)


class BranchEmbedder:
    """The multi-branch backbone, each branch cached on its own."""

    def __init__(self, cache: Path | None = CACHE, batch: int = 32) -> None:
        import torch

        from edge_pace import backbones
        from edge_pace.backbones.wheels import WHEEL_WEIGHTS

        self.torch = torch
        self.model, self.spec = backbones.load(BACKBONE)
        self.sample_rate = int(self.model.sample_rate)
        self.batch = batch
        tags = {"aisfx": backbones.get_spec("aisfx").default_weights(), "speech": WHEEL_WEIGHTS["speech-embedding"].path(),
                "voice": WHEEL_WEIGHTS["voice"].path()}
        self.caches = {}
        for name in self.model.names:
            digest = hashlib.sha256(Path(tags[name]).read_bytes()).hexdigest()
            self.caches[name] = EmbeddingCache(cache, f"branch-{name}", digest, self.sample_rate) if cache else None

    def _run(self, branch, waves: np.ndarray) -> np.ndarray:
        out = []
        with self.torch.no_grad():
            for i in range(0, len(waves), self.batch):
                out.append(branch(self.torch.from_numpy(np.ascontiguousarray(waves[i:i + self.batch]))).numpy())
        return np.concatenate(out).astype(np.float32)

    def embed(self, waves: np.ndarray, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        out = {}
        for name, branch in zip(self.model.names, self.model.branches):
            cache = self.caches[name]
            if cache is None or keys is None:
                out[name] = self._run(branch, waves)
            else:
                out[name] = cache.embed(waves, keys, lambda w, b=branch: self._run(b, w), branch.embed_dim)
        return out


def benchmark_features(name: str, data: Path, emb: BranchEmbedder) -> tuple[list, np.ndarray, dict[str, np.ndarray]]:
    """(clips, waves at 44.1 kHz [n, 44100], {branch: embeddings}) of one benchmark."""
    kind, root = kind_root(name, data)
    clips = load_dataset(kind, root)
    waves, kept = read_clips(clips, emb.sample_rate, duration=1.0)
    return kept, waves, emb.embed(waves, [c.path for c in kept])


def calibration_features(emb: BranchEmbedder) -> tuple[list[str], list[int], dict[str, np.ndarray]]:
    """The default calibration audio (export/calibration.py), embedded per branch (cached in memory only)."""
    from edge_pace.export.calibration import default_calibration

    waves, labels, groups = default_calibration(emb.sample_rate)
    path = CACHE / "calibration.npz"
    if path.is_file():
        with np.load(path) as z:
            if len(z["aisfx"]) == len(labels):
                return labels, groups, {k: z[k] for k in emb.model.names}
    feats = emb.embed(waves)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **feats)
    return labels, groups, feats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("out/data"))
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    emb = BranchEmbedder()
    t0 = time.perf_counter()
    calibration_features(emb)
    print(f"calibration embedded ({time.perf_counter() - t0:.0f} s)", flush=True)
    for name in [b for b in args.benchmarks.split(",") if b]:
        t = time.perf_counter()
        clips, _, feats = benchmark_features(name, args.data, emb)
        print(f"{name}: {len(clips)} clips, dims {({k: v.shape[1] for k, v in feats.items()})} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
