"""The fixed random projection + ReLU of the analytic classifier, with a fixed conditioning of its input:

    z = ReLU(((f(x) - mean) / scale) W_proj / sqrt(in_dim))      (conditioned, the default since issue 11)
    z = ReLU(f(x) W_proj)                                         (plain: older checkpoints and bundles)

Two conditionings (``embedding_stats(mode=...)``), measured on the benchmarks (README, "Regularisation"):
"scalar" (default): mean 0 and one scale for every dimension, the RMS of the embedding, so z is O(1) and the
ridge gamma means the same for every backbone and bundle; the geometry of the embedding is untouched, so
accuracy is exactly that of the plain projection at the correspondingly scaled gamma. "dims": per-dimension
mean and standard deviation (z-scoring); measured 0.3-3.8 points *worse* than plain on four of five
benchmarks, so it is an option, not the default.

W_proj is drawn from a seeded numpy generator (standard normal, as RanPAC), so the same (seed, in_dim,
out_dim) gives the same matrix on any machine. It is held at ``precision`` "float16" (the default since issue
14: the draw rounded to half precision, stored as float16 in the ONNX graph and cast once at load; still a
random Gaussian matrix, half the bytes, and measured equal in accuracy, README "Speed and size") or "float32"
(descriptions without the key: older checkpoints and bundles). ``mean``/``scale`` are per-dimension statistics of the
backbone embedding, estimated once (server: on session-0 clips; frozen export: on the calibration audio) and
then fixed; with them every projected coordinate is about N(0, 1) before the ReLU, so z is O(1) whatever the
backbone, the ridge gamma transfers between bundles and the Gram matrix is better conditioned (figures in
the README). Export puts this module inside the ONNX graph and records the statistics in the manifest.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# a dimension that barely varies on the calibration clips (a dead unit, or too few clips) is divided by this
# fraction of the median scale, not by its own tiny spread: that would amplify any later activity (and export
# rounding) without bound. On the default calibration set no aisfx dimension is near the floor (min/median 0.41).
SCALE_FLOOR = 0.1


def projection_matrix(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((in_dim, out_dim)).astype(np.float32)


CONDITIONING = ("scalar", "dims")
PRECISIONS = ("float16", "float32")


def embedding_stats(emb: np.ndarray, mode: str = "scalar") -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale vectors for embeddings [n, in_dim]. "scalar": zeros and the embedding's RMS (uncentred)
    for every dimension; "dims": per-dimension mean and standard deviation, the latter floored at SCALE_FLOOR
    x its median over dimensions (and at 1e-6)."""
    emb = np.asarray(emb, dtype=np.float64)
    if mode not in CONDITIONING:
        raise ValueError(f"conditioning must be one of {CONDITIONING}, got {mode!r}")
    if emb.ndim != 2 or len(emb) < 2 or not np.isfinite(emb).all():
        raise ValueError(f"standardisation needs at least two finite embeddings [n, dim], got shape {emb.shape}")
    if mode == "scalar":
        rms = max(float(np.sqrt(np.mean(emb**2))), 1e-6)
        return np.zeros(emb.shape[1], np.float32), np.full(emb.shape[1], rms, np.float32)
    sd = emb.std(0)
    floor = max(SCALE_FLOOR * float(np.median(sd)), 1e-6)
    return emb.mean(0).astype(np.float32), np.maximum(sd, floor).astype(np.float32)


class RandomProjection(nn.Module):
    """z = ReLU(standardise(f) W_proj * gain); gain = 1/sqrt(in_dim) when standardised, else 1."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, mean: np.ndarray | None = None,
                 scale: np.ndarray | None = None, precision: str = "float16") -> None:
        super().__init__()
        if (mean is None) != (scale is None):
            raise ValueError("give both mean and scale for a standardised projection, or neither")
        if precision not in PRECISIONS:
            raise ValueError(f"projection precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.in_dim, self.out_dim, self.seed = int(in_dim), int(out_dim), int(seed)
        self.standardized = mean is not None
        gain = 1.0 / math.sqrt(in_dim) if self.standardized else 1.0
        w = projection_matrix(in_dim, out_dim, seed) * np.float32(gain)
        self.register_buffer("weight", torch.from_numpy(w.astype(np.dtype(precision))))
        mean = np.zeros(in_dim, np.float32) if mean is None else np.asarray(mean, np.float32).reshape(-1)
        scale = np.ones(in_dim, np.float32) if scale is None else np.asarray(scale, np.float32).reshape(-1)
        if mean.shape != (in_dim,) or scale.shape != (in_dim,) or not (np.isfinite(mean).all() and (scale > 0).all()):
            raise ValueError(f"mean and scale must be {in_dim} finite numbers (scale > 0)")
        self.register_buffer("mean", torch.from_numpy(mean.copy()))
        self.register_buffer("scale", torch.from_numpy(scale.copy()))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.standardized:
            f = (f - self.mean) / self.scale
        return torch.relu(f @ self.weight.to(f.dtype))

    def numpy(self, f: np.ndarray) -> np.ndarray:
        """The same map in numpy (float32), for cached embeddings."""
        f = np.asarray(f, np.float32)
        if self.standardized:
            f = (f - self.mean.numpy()) / self.scale.numpy()
        return np.maximum(f @ self.weight.numpy().astype(np.float32), 0.0)

    def describe(self) -> dict:
        """JSON-ready settings: what a checkpoint or manifest records (statistics in full)."""
        d = {"in_dim": self.in_dim, "dim": self.out_dim, "seed": self.seed, "standardized": self.standardized,
             "precision": self.precision}
        if self.standardized:
            d["mean"] = [float(v) for v in self.mean.numpy()]
            d["scale"] = [float(v) for v in self.scale.numpy()]
        return d

    @classmethod
    def from_description(cls, d: dict) -> "RandomProjection":
        """Inverse of ``describe`` (descriptions without ``standardized`` are plain projections, without
        ``precision`` float32)."""
        precision = d.get("precision", "float32")
        if d.get("standardized"):
            return cls(int(d["in_dim"]), int(d["dim"]), int(d["seed"]), np.asarray(d["mean"], np.float32),
                       np.asarray(d["scale"], np.float32), precision)
        return cls(int(d["in_dim"]), int(d["dim"]), int(d["seed"]), precision=precision)
