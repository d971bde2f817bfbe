"""Frozen-backbone methods: the pretrained backbone's embeddings (cached on disk, ``EmbeddingCache``) feed a
nearest-class-mean classifier (``SimpleCIL``, Zhou et al. 2023) or the random projection + recursive analytic
classifier (``ACIL``, Zhuang et al. 2022; gamma re-chosen every session by the device's rule, runtime/gamma.py)."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_pace.backbones import DEFAULT as DEFAULT_BACKBONE
from edge_pace.evaluation.base import as_waves, check_keys, check_session
from edge_pace.method.config import PaceConfig
from edge_pace.runtime.analytic import AnalyticClassifier
from edge_pace.runtime.atomic import atomic_write, file_sha256

CACHE_VERSION = 1


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256(str(p), st.st_size, st.st_mtime_ns)


class EmbeddingCache:
    """Frozen-backbone embeddings on disk, keyed by backbone name + weights sha256 + clip key + length.

    One folder per (backbone, weights hash); inside, npz shards holding ``keys`` (str) and ``emb``
    (float32 [n, D]). A clip key is ``<path>|<size>|<mtime_ns>|<samples>`` for an existing file (so
    a re-rendered file is embedded again) and ``<key>|<samples>`` otherwise. Shards are written
    atomically (temp file + rename); every shard in the folder is read on first use.
    """

    def __init__(self, folder: str | Path, backbone: str, weights_sha256: str | None, sample_rate: int) -> None:
        tag = (weights_sha256 or "random")[:16]
        self.folder = Path(folder) / f"v{CACHE_VERSION}-{backbone}-{tag}-sr{int(sample_rate)}"
        self._table: dict[str, np.ndarray] | None = None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def clip_key(key: str, n_samples: int) -> str:
        p = Path(key)
        try:
            st = p.stat() if p.is_file() else None
        except OSError:
            st = None
        if st is not None:
            return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{int(n_samples)}"
        return f"{key}|{int(n_samples)}"

    def _load(self) -> dict[str, np.ndarray]:
        if self._table is None:
            self._table = {}
            if self.folder.is_dir():
                for shard in sorted(self.folder.glob("*.npz")):
                    try:
                        with np.load(shard, allow_pickle=False) as z:
                            self._table.update(zip(z["keys"].tolist(), z["emb"]))
                    except (OSError, ValueError, KeyError) as exc:  # a damaged shard is ignored, not fatal
                        logging.getLogger(__name__).warning("embedding cache: unreadable shard %s skipped (%s)",
                                                            shard, exc)
        return self._table

    def get(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        table = self._load()
        out = [table.get(k) for k in keys]
        found = sum(v is not None for v in out)
        self.hits += found
        self.misses += len(out) - found
        return out

    def embed(self, waves: np.ndarray, keys: Sequence[str], compute, dim: int) -> np.ndarray:
        """Embeddings [n, dim] of ``waves`` [n, samples] (clip keys ``keys``): cached rows where there are any,
        ``compute(waves[missing])`` for the others, which are then cached."""
        ckeys = [self.clip_key(k, waves.shape[1]) for k in keys]
        found = self.get(ckeys)
        missing = [i for i, v in enumerate(found) if v is None]
        out = np.zeros((len(waves), dim), np.float32)
        if missing:
            emb = compute(waves[missing])
            self.put([ckeys[i] for i in missing], emb)
            out[missing] = emb
        for i, v in enumerate(found):
            if v is not None:
                out[i] = v
        return out

    def put(self, keys: Sequence[str], emb: np.ndarray) -> None:
        if len(keys) == 0:
            return
        emb = np.asarray(emb, dtype=np.float32)
        table = self._load()
        table.update(zip(keys, emb))
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz",
                     lambda f: np.savez(f, keys=np.asarray(list(keys), dtype=str), emb=emb))


class FrozenEmbedder:
    """The pretrained backbone, frozen: waveforms -> embeddings f(x) [n, D] (float32, numpy).

    ``n_embedded`` counts clips that went through the network (cache misses), ``calls`` the batches.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, *, weights: str | None = None, pretrained: bool = True,
                 device: str = "auto", batch: int = 64, cache_dir: str | Path | None = None) -> None:
        from edge_pace import backbones
        from edge_pace.method.lora import freeze_backbone
        from edge_pace.method.training import device_name, resolve_device

        self.name = backbone
        self.model, spec = backbones.load(backbone, weights, pretrained=pretrained)
        freeze_backbone(self.model)
        self.weights_sha256 = weights_sha256(spec.weights_file) if spec.weights_file else None
        self.torch_device = resolve_device(device)
        self.model.to(self.torch_device)
        self.device = device_name(self.torch_device)
        self.batch = int(batch)
        self.sample_rate = int(self.model.sample_rate)
        self.embed_dim = int(self.model.embed_dim)
        self.cache = None
        if cache_dir is not None and self.weights_sha256 is not None:  # random weights are never cached
            self.cache = EmbeddingCache(cache_dir, backbone, self.weights_sha256, self.sample_rate)
        self.n_embedded = 0
        self.calls = 0

    def _run(self, waves: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(waves), self.batch):
                w = torch.from_numpy(np.ascontiguousarray(waves[i:i + self.batch])).to(self.torch_device)
                if hasattr(self.model, "check_input"):
                    w = self.model.check_input(w)
                out.append(self.model(w).float().cpu().numpy())
                self.calls += 1
        self.n_embedded += len(waves)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.embed_dim), np.float32)

    def embed(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
        waves = as_waves(waves)
        if keys is None or self.cache is None:
            return self._run(waves)
        check_keys(waves, keys)
        return self.cache.embed(waves, keys, self._run, self.embed_dim)


class SimpleCIL:
    """Nearest class mean by cosine similarity on frozen embeddings (prototype classifier)."""

    def __init__(self, embedder: FrozenEmbedder, name: str = "simplecil") -> None:
        self.name, self.embedder, self.device = name, embedder, embedder.device
        self.classes: list[str] = []
        self._sums: list[np.ndarray] = []
        self._counts: list[int] = []
        self.sessions_done = 0

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        check_session(self.sessions_done, index, waves, labels, keys)
        t0 = time.perf_counter()
        emb = self.embedder.embed(waves, keys).astype(np.float64)
        labels = [str(x) for x in labels]
        for c in dict.fromkeys(labels):
            rows = emb[[i for i, x in enumerate(labels) if x == c]]
            if c not in self.classes:
                self.classes.append(c)
                self._sums.append(np.zeros(emb.shape[1]))
                self._counts.append(0)
            k = self.classes.index(c)
            self._sums[k] = self._sums[k] + rows.sum(0)
            self._counts[k] += len(rows)
        self.sessions_done += 1
        return {"session": index, "n_train": len(labels), "seconds": time.perf_counter() - t0}

    def prototypes(self) -> np.ndarray:
        """[n_classes, D] unit-norm class means."""
        P = np.stack(self._sums) / np.asarray(self._counts, dtype=np.float64)[:, None]
        return P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        if not self.classes:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        emb = self.embedder.embed(waves, keys).astype(np.float64)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return [self.classes[i] for i in np.argmax(emb @ self.prototypes().T, axis=1)]


class ACIL:
    """Frozen backbone + fixed random projection + ReLU + recursive analytic classifier."""

    def __init__(self, embedder: FrozenEmbedder, config: PaceConfig | None = None, name: str = "acil") -> None:
        from edge_pace.method.projection import RandomProjection

        self.name, self.embedder, self.device = name, embedder, embedder.device
        self.config = config if config is not None else PaceConfig()
        self.projection = RandomProjection(embedder.embed_dim, self.config.d_proj, self.config.proj_seed)
        self.classifier: AnalyticClassifier | None = None
        self.sessions_done = 0

    def features(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
        return self.projection.numpy(self.embedder.embed(waves, keys))

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        from edge_pace.method.projection import RandomProjection, embedding_stats

        check_session(self.sessions_done, index, waves, labels, keys)
        t0 = time.perf_counter()
        labels = [str(x) for x in labels]
        cfg = self.config
        if self.classifier is None:
            if cfg.standardize != "none" and len(labels) >= 2:  # session-0 statistics, as PACE and the export
                mean, scale = embedding_stats(self.embedder.embed(waves, keys), cfg.standardize)
                self.projection = RandomProjection(self.embedder.embed_dim, cfg.d_proj, cfg.proj_seed, mean, scale)
            self.classifier = AnalyticClassifier(cfg.d_proj, cfg.gamma_fallback, keep_features=True)
        self.classifier.learn(self.features(waves, keys), labels)
        found = self.classifier.choose_gamma(cfg.gamma_fallback, cfg.gamma_grid, cfg.gamma_criterion)
        self.sessions_done += 1
        return {"session": index, "n_train": len(labels), "gamma": self.classifier.gamma,
                "gamma_source": found.source, "seconds": time.perf_counter() - t0}

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        if self.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.classifier.predict(self.features(waves, keys))


__all__ = ["EmbeddingCache", "FrozenEmbedder", "SimpleCIL", "ACIL", "weights_sha256", "CACHE_VERSION"]
