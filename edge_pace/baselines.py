"""Class-incremental baselines and PACE ablations on the same backbone and splits (DESIGN.md section 4).

Every method has the interface of :class:`edge_pace.pace.PaceLearner`::

    fit_session(index, waves, labels, keys=None) -> dict   # sessions in order 0, 1, 2, ...
    predict(waves, keys=None) -> list[str]

``waves`` is [n, samples] float32 at the backbone's sample rate. ``keys`` (optional, one string per
clip, e.g. the file path) lets a method reuse features of clips it has already embedded with an
unchanged backbone: the frozen-backbone baselines through an on-disk :class:`EmbeddingCache`, the
PACE family in memory until the backbone adapts again. Results never depend on ``keys``.

Methods (:data:`METHODS`):

* ``finetune`` (lower bound): LoRA on every block plus a linear head that grows with the classes,
  trained together with cross-entropy on each session's data in turn (e0 epochs in session 0,
  ``msa_epochs`` later; lr_backbone for LoRA, lr_head for the head, SGD with momentum). No classifier
  tricks, no replay: old classes are forgotten.
* ``simplecil``: nearest class mean by cosine similarity on the frozen pretrained backbone's
  embeddings (Zhou et al., 2023).
* ``acil``: frozen backbone + the random projection + ReLU + the recursive analytic classifier
  (Zhuang et al., 2022); gamma re-chosen every session by the device's rule (runtime/gamma.py).
* ``ranpac``: the paper's "RanPAC (with FSA)": naive FSA (LoRA on all blocks, head + LoRA trained
  together, CE only) in session 0, then frozen; random projection + ridge.
* ``joint`` (upper bound, an oracle): before session 0 the backbone is adapted once by PACE's FSA
  (CKA probe, staged LoRA, L_reg) on the union of every session's training data. After session t
  the ridge classifier has learned all training data of the classes seen so far (the recursive
  update equals the joint ridge solution), so A_t is that of a model trained jointly on the backbone
  side with all data and on the classifier side with the data seen so far; A_T is fully joint.
* ``pace``: :class:`PaceLearner` with the default :class:`PaceConfig`; ablations ``pace-no-msa``
  (use_msa=False), ``pace-no-lreg`` (use_boundary_loss=False), ``pace-naive-fsa`` (naive_fsa=True).

All methods take their hyper-parameters (epochs, learning rates, LoRA rank, D_proj, seed) from one
:class:`PaceConfig`, so a comparison changes one thing at a time.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_pace.config import PaceConfig
from edge_pace.runtime.analytic import AnalyticClassifier

CACHE_VERSION = 1

#: method name -> one-line description (table legends, --help)
METHODS: dict[str, str] = {
    "finetune": "LoRA + linear head fine-tuned with CE on each session in turn (lower bound)",
    "simplecil": "nearest class mean (cosine) on frozen pretrained embeddings",
    "acil": "frozen backbone + random projection + recursive analytic classifier",
    "ranpac": "RanPAC with FSA: naive FSA (CE only) in session 0, then RP + ridge",
    "joint": "oracle: PACE FSA on all sessions' training data at once, then ridge (upper bound)",
    "pace": "PACE (improved FSA, MSA, L_reg, analytic classifier)",
    "pace-no-msa": "PACE without multi-session adaptation",
    "pace-no-lreg": "PACE without the boundary-aware loss L_reg",
    "pace-naive-fsa": "PACE with naive FSA (LoRA on all blocks, head + LoRA together)",
}

#: config changes that turn PaceConfig into each PACE-family method's configuration
PACE_VARIANTS: dict[str, dict[str, Any]] = {
    "pace": {},
    "pace-no-msa": {"use_msa": False},
    "pace-no-lreg": {"use_boundary_loss": False},
    "pace-naive-fsa": {"naive_fsa": True},
    "ranpac": {"naive_fsa": True, "use_msa": False, "use_boundary_loss": False},
}


class Method(Protocol):
    """What the bench runs."""

    name: str
    device: str

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]: ...

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]: ...


# ---------------------------------------------------------------------------------------------- helpers

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _check_session(expected: int, index: int, waves: np.ndarray, labels: Sequence[str],
                   keys: Sequence[str] | None) -> None:
    if index != expected:
        raise ValueError(f"expected session {expected} next (sessions are learned in order), got session {index}")
    if len(labels) != len(waves):
        raise ValueError(f"got {len(waves)} waveforms but {len(labels)} labels")
    if len(waves) == 0:
        raise ValueError("a session needs at least one clip")
    if keys is not None and len(keys) != len(waves):
        raise ValueError(f"got {len(waves)} waveforms but {len(keys)} keys")


def _as_waves(waves: np.ndarray) -> np.ndarray:
    w = np.asarray(waves, dtype=np.float32)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"waves must have shape [n, samples], got {w.shape}")
    return w


def _device_name(device) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"


# ---------------------------------------------------------------------------------------- embedding cache

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
                        import logging

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

    def put(self, keys: Sequence[str], emb: np.ndarray) -> None:
        if len(keys) == 0:
            return
        emb = np.asarray(emb, dtype=np.float32)
        table = self._load()
        table.update(zip(keys, emb))
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".shard-", suffix=".npz", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.asarray(list(keys), dtype=str), emb=emb)
            os.replace(tmp, self.folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class FrozenEmbedder:
    """The pretrained backbone, frozen: waveforms -> embeddings f(x) [n, D] (float32, numpy).

    ``n_embedded`` counts clips that went through the network (cache misses), ``calls`` the batches.
    """

    def __init__(self, backbone: str = "aisfx", *, weights: str | None = None, pretrained: bool = True,
                 device: str = "auto", batch: int = 64, cache_dir: str | Path | None = None) -> None:
        from edge_pace.backbones import get_backbone
        from edge_pace.lora import freeze_backbone
        from edge_pace.pace import resolve_device

        self.name = backbone
        self.model = get_backbone(backbone, pretrained=pretrained, weights=weights)
        freeze_backbone(self.model)
        if weights is None and pretrained and backbone == "aisfx":
            from edge_pace.backbones.weights import aisfx_path

            weights = str(aisfx_path())
        self.weights_sha256 = file_sha256(weights) if weights else None
        self.torch_device = resolve_device(device)
        self.model.to(self.torch_device)
        self.device = _device_name(self.torch_device)
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
        waves = _as_waves(waves)
        if keys is None or self.cache is None:
            return self._run(waves)
        if len(keys) != len(waves):
            raise ValueError(f"got {len(waves)} waveforms but {len(keys)} keys")
        ckeys = [EmbeddingCache.clip_key(k, waves.shape[1]) for k in keys]
        found = self.cache.get(ckeys)
        missing = [i for i, v in enumerate(found) if v is None]
        out = np.zeros((len(waves), self.embed_dim), np.float32)
        if missing:
            emb = self._run(waves[missing])
            self.cache.put([ckeys[i] for i in missing], emb)
            out[missing] = emb
        for i, v in enumerate(found):
            if v is not None:
                out[i] = v
        return out


# ------------------------------------------------------------------------------------ frozen baselines

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
        _check_session(self.sessions_done, index, waves, labels, keys)
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
        from edge_pace.projection import RandomProjection

        self.name, self.embedder, self.device = name, embedder, embedder.device
        self.config = config if config is not None else PaceConfig()
        self.projection = RandomProjection(embedder.embed_dim, self.config.d_proj, self.config.proj_seed)
        self.classifier: AnalyticClassifier | None = None
        self.sessions_done = 0

    def features(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
        return self.projection.numpy(self.embedder.embed(waves, keys))

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        from edge_pace.projection import RandomProjection, embedding_stats

        _check_session(self.sessions_done, index, waves, labels, keys)
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


# ------------------------------------------------------------------------------------ PACE family

class _FeatureMemo:
    """Classifier features z per clip key, valid while the backbone does not change."""

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}
        self.hits = 0

    def features(self, learner, waves: np.ndarray, keys: Sequence[str] | None) -> np.ndarray:
        waves = _as_waves(waves)
        if keys is None:
            return learner.features(waves)
        if len(keys) != len(waves):
            raise ValueError(f"got {len(waves)} waveforms but {len(keys)} keys")
        ck = [f"{k}|{waves.shape[1]}" for k in keys]
        missing = [i for i, k in enumerate(ck) if k not in self.table]
        if missing:
            Z = learner.features(waves[missing])
            self.table.update(zip([ck[i] for i in missing], Z))
        self.hits += len(ck) - len(missing)
        return np.stack([self.table[k] for k in ck])


class PaceMethod:
    """A thin adapter over :class:`PaceLearner` (PACE, its ablations and RanPAC with FSA)."""

    def __init__(self, config: PaceConfig | None = None, backbone: str = "aisfx", *, weights: str | None = None,
                 device: str | None = None, name: str = "pace", learner=None) -> None:
        from edge_pace.pace import PaceLearner

        self.name = name
        self.learner = learner if learner is not None else PaceLearner(backbone, config, weights=weights,
                                                                       device=device)
        self.config = self.learner.config
        self.device = _device_name(self.learner.device)
        self._memo = _FeatureMemo()
        self.inherited_seconds = 0.0  # time of sessions taken over from another run (see ``branch``)

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        if keys is not None and len(keys) != len(waves):
            raise ValueError(f"got {len(waves)} waveforms but {len(keys)} keys")
        metrics = self.learner.fit_session(index, waves, labels)
        if metrics.get("adapted", True):
            self._memo = _FeatureMemo()  # the backbone changed: features of earlier clips are stale
        return metrics

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        if self.learner.classifier is None:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        return self.learner.classifier.predict(self._memo.features(self.learner, waves, keys))

    def branch(self, name: str, **changes: Any) -> "PaceMethod":
        """A copy of this learner after session 0 continued as another configuration.

        Only ``use_msa=False`` is allowed: PACE's session 0 does not depend on it (the test suite holds
        a branch equal to a fresh run), so ``pace-no-msa`` can reuse ``pace``'s session 0."""
        if set(changes) != {"use_msa"} or changes["use_msa"] is not False:
            raise ValueError(f"branch supports only use_msa=False, got {changes}")
        if self.learner.sessions_done != 1:
            raise RuntimeError(f"branch needs a learner right after session 0 (it has {self.learner.sessions_done} "
                               "sessions)")
        learner = copy.deepcopy(self.learner)
        learner.config = learner.config.replace(use_msa=False)
        learner.frozen = True  # what fit_session(0) sets when use_msa is False
        if learner.history:
            learner.history[-1]["frozen"] = True
        out = PaceMethod(name=name, learner=learner)
        out._memo = copy.deepcopy(self._memo)
        return out


class JointMethod:
    """Upper bound (an oracle, see the module docstring): ``prepare`` adapts the backbone once on every
    session's training data (PACE FSA); ``fit_session`` adds the session's classes to the ridge."""

    def __init__(self, config: PaceConfig | None = None, backbone: str = "aisfx", *, weights: str | None = None,
                 device: str | None = None, name: str = "joint") -> None:
        from edge_pace.pace import PaceLearner

        cfg = (config if config is not None else PaceConfig()).replace(use_msa=False)
        self.name = name
        self.learner = PaceLearner(backbone, cfg, weights=weights, device=device)
        self.device = _device_name(self.learner.device)
        self.classifier: AnalyticClassifier | None = None
        self._memo = _FeatureMemo()
        self.sessions_done = 0

    def prepare(self, waves: np.ndarray, labels: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Adapt the backbone (FSA) on the union of all sessions' training data; choose gamma there."""
        if self.learner.sessions_done:
            raise RuntimeError("prepare() runs once, before session 0")
        metrics = self.learner.fit_session(0, waves, labels)
        self.classifier = AnalyticClassifier(self.learner.config.d_proj, self.learner.classifier.gamma,
                                             keep_features=True)
        return metrics

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        if self.classifier is None:
            raise RuntimeError("joint needs prepare(all training waves, labels) before session 0")
        _check_session(self.sessions_done, index, waves, labels, keys)
        t0 = time.perf_counter()
        self.classifier.learn(self._memo.features(self.learner, waves, keys), [str(x) for x in labels])
        cfg = self.learner.config
        self.classifier.choose_gamma(cfg.gamma_fallback, cfg.gamma_grid, cfg.gamma_criterion)  # the same rule
        self.sessions_done += 1
        return {"session": index, "n_train": len(labels), "gamma": self.classifier.gamma,
                "seconds": time.perf_counter() - t0}

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        if self.classifier is None or not self.classifier.classes:
            raise RuntimeError("no session learned yet")
        return self.classifier.predict(self._memo.features(self.learner, waves, keys))


# ------------------------------------------------------------------------------------ fine-tuning

class FineTune:
    """Lower bound: LoRA on every block (or the full backbone, ``full=True``) + a growing linear head,
    trained together with cross-entropy on each session's data in turn. Batch norm stays in eval mode
    (as in PACE), so the comparison isolates the classifier and the training objective."""

    def __init__(self, config: PaceConfig | None = None, backbone: str = "aisfx", *, weights: str | None = None,
                 device: str | None = None, full: bool = False, name: str = "finetune") -> None:
        import torch

        from edge_pace.backbones import get_backbone
        from edge_pace.lora import add_lora, freeze_backbone
        from edge_pace.pace import resolve_device

        self.name = name
        self.config = config if config is not None else PaceConfig()
        cfg = self.config
        self.torch_device = resolve_device(device or cfg.device)
        self.device = _device_name(self.torch_device)
        self.model = get_backbone(backbone, pretrained=True, weights=weights)
        freeze_backbone(self.model)
        g = torch.Generator().manual_seed(int(cfg.seed))
        if full:
            self.params = [p for b in self.model.blocks for p in b.parameters()]
        else:
            adapters = add_lora(self.model, range(len(self.model.blocks)), cfg.lora_rank, cfg.lora_alpha, 0,
                                cfg.lora_targets, g)
            self.params = [p for a in adapters.values() for p in (a.A, a.B)]
        self.model.to(self.torch_device).eval()
        self.embed_dim = int(self.model.embed_dim)
        self.head: torch.nn.Linear | None = None
        self.classes: list[str] = []
        self.sessions_done = 0

    def _frontend(self, waves: np.ndarray):
        import torch

        w = torch.from_numpy(np.ascontiguousarray(_as_waves(waves)))
        if hasattr(self.model, "check_input"):
            w = self.model.check_input(w)
        bs = self.config.embed_batch
        with torch.no_grad():
            return torch.cat([self.model.frontend(w[i:i + bs].to(self.torch_device)).float().cpu()
                              for i in range(0, len(w), bs)])

    def _grow_head(self, n_classes: int, g) -> None:
        import torch

        old = self.head
        head = torch.nn.Linear(self.embed_dim, n_classes)
        bound = 1.0 / np.sqrt(self.embed_dim)
        with torch.no_grad():
            head.weight.copy_(torch.rand(head.weight.shape, generator=g) * 2 * bound - bound)
            head.bias.zero_()
            if old is not None:  # old classes keep their rows
                head.weight[:old.out_features] = old.weight.cpu()
                head.bias[:old.out_features] = old.bias.cpu()
        self.head = head.to(self.torch_device)

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]:
        import torch
        from torch.nn import functional as F

        _check_session(self.sessions_done, index, waves, labels, keys)
        cfg = self.config
        t0 = time.perf_counter()
        seed = int(cfg.seed) * 1_000_003 + index
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        labels = [str(x) for x in labels]
        self.classes += [c for c in dict.fromkeys(labels) if c not in self.classes]
        self._grow_head(len(self.classes), g)
        y = torch.tensor([self.classes.index(c) for c in labels])
        feats = self._frontend(waves)
        epochs = cfg.e0 if index == 0 else cfg.msa_epochs
        for p in self.params:
            p.requires_grad_(True)
        self.head.requires_grad_(True)
        opt = torch.optim.SGD([{"params": self.params, "lr": cfg.lr_backbone},
                               {"params": list(self.head.parameters()), "lr": cfg.lr_head}],
                              momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        n, bs, losses = len(feats), cfg.batch_size, []
        for _ in range(epochs):
            perm, total = torch.randperm(n, generator=g), 0.0
            for s in range(0, n, bs):
                idx = perm[s:s + bs]
                logits = self.head(self.model.embed_features(feats[idx].to(self.torch_device)).float())
                loss = F.cross_entropy(logits, y[idx].to(self.torch_device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"finetune session {index}: the loss became {float(loss.detach())}; "
                                             "lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / n)
        for p in self.params:
            p.requires_grad_(False)
        self.head.requires_grad_(False)
        self.sessions_done += 1
        return {"session": index, "n_train": n, "loss": losses, "seconds": time.perf_counter() - t0}

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]:
        import torch

        if not self.classes:
            raise RuntimeError("no session learned yet: call fit_session(0, ...) first")
        feats = self._frontend(waves)
        bs = self.config.embed_batch
        out = []
        with torch.no_grad():
            for i in range(0, len(feats), bs):
                out.append(self.head(self.model.embed_features(feats[i:i + bs].to(self.torch_device)).float())
                           .argmax(1).cpu())
        return [self.classes[int(i)] for i in torch.cat(out)]


# ------------------------------------------------------------------------------------ factory

def make_method(name: str, config: PaceConfig | None = None, backbone: str = "aisfx", *,
                weights: str | None = None, device: str | None = None,
                embedder: FrozenEmbedder | None = None, cache_dir: str | Path | None = None) -> Method:
    """Build a method of :data:`METHODS` on ``backbone`` with hyper-parameters from ``config``.

    The frozen-backbone methods use ``embedder`` when given (share one across methods so its cache is
    shared), else a new :class:`FrozenEmbedder` caching under ``cache_dir``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    cfg = config if config is not None else PaceConfig()
    dev = device or cfg.device
    if name in ("simplecil", "acil"):
        if embedder is None:
            embedder = FrozenEmbedder(backbone, weights=weights, device=dev, batch=cfg.embed_batch,
                                      cache_dir=cache_dir)
        return SimpleCIL(embedder) if name == "simplecil" else ACIL(embedder, cfg)
    if name in PACE_VARIANTS:
        return PaceMethod(cfg.replace(**PACE_VARIANTS[name]), backbone, weights=weights, device=dev, name=name)
    if name == "joint":
        return JointMethod(cfg, backbone, weights=weights, device=dev)
    return FineTune(cfg, backbone, weights=weights, device=dev)


__all__ = ["METHODS", "PACE_VARIANTS", "Method", "EmbeddingCache", "FrozenEmbedder", "SimpleCIL", "ACIL",
           "PaceMethod", "JointMethod", "FineTune", "make_method", "file_sha256"]
