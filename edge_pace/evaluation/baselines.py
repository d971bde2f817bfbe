"""The methods the bench compares (class-incremental baselines and PACE ablations, same backbone and splits):
a registry, name -> ``MethodSpec`` (description, how to build it, whether it reads the shared frozen-backbone
embeddings). Adding a method is one ``register_method`` call; an unknown name is an error everywhere.

Every method has the interface of ``edge_pace.evaluation.base.Method``::

    fit_session(index, waves, labels, keys=None) -> dict   # sessions in order 0, 1, 2, ...
    predict(waves, keys=None) -> list[str]

``waves`` is [n, samples] float32 at the backbone's sample rate. ``keys`` (optional, one string per
clip, e.g. the file path) lets a method reuse features of clips it has already embedded with an
unchanged backbone: the frozen-backbone baselines through an on-disk ``EmbeddingCache``, the
PACE family in memory until the backbone adapts again. Results never depend on ``keys``.

Methods (``METHODS``):

* ``finetune`` (lower bound, evaluation/finetune.py): LoRA on every block plus a linear head that grows with
  the classes, trained together with cross-entropy on each session's data in turn (e0 epochs in session 0,
  ``msa_epochs`` later; lr_backbone for LoRA, lr_head for the head, SGD with momentum). No classifier
  tricks, no replay: old classes are forgotten.
* ``simplecil`` (evaluation/frozen.py): nearest class mean by cosine similarity on the frozen pretrained
  backbone's embeddings (Zhou et al., 2023).
* ``acil`` (evaluation/frozen.py): frozen backbone + the random projection + ReLU + the recursive analytic
  classifier (Zhuang et al., 2022); gamma re-chosen every session by the device's rule (runtime/gamma.py).
* ``ranpac``: the paper's "RanPAC (with FSA)": naive FSA (LoRA on all blocks, head + LoRA trained
  together, CE only) in session 0, then frozen; random projection + ridge.
* ``joint`` (upper bound, an oracle, evaluation/pace_methods.py): before session 0 the backbone is adapted
  once by PACE's FSA (CKA probe, staged LoRA, L_reg) on the union of every session's training data. After
  session t the ridge classifier has learned all training data of the classes seen so far (the recursive
  update equals the joint ridge solution), so A_t is that of a model trained jointly on the backbone
  side with all data and on the classifier side with the data seen so far; A_T is fully joint.
* ``pace``: ``PaceLearner`` with the default ``PaceConfig``; ablations ``pace-no-msa`` (use_msa=False),
  ``pace-no-lreg`` (use_boundary_loss=False), ``pace-naive-fsa`` (naive_fsa=True).

All methods take their hyper-parameters (epochs, learning rates, LoRA rank, D_proj, seed) from one
``PaceConfig``, so a comparison changes one thing at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_pace.backbones import DEFAULT as DEFAULT_BACKBONE
from edge_pace.evaluation.base import Method
from edge_pace.evaluation.finetune import FineTune
from edge_pace.evaluation.frozen import ACIL, EmbeddingCache, FrozenEmbedder, SimpleCIL
from edge_pace.evaluation.pace_methods import JointMethod, PaceMethod
from edge_pace.method.config import PaceConfig
from edge_pace.registry import Registry


@dataclass
class BuildContext:
    """What a method is built from: the settings of ``make_method``."""

    config: PaceConfig
    backbone: str
    weights: str | None
    device: str
    embedder: FrozenEmbedder | None = None
    cache_dir: str | Path | None = None

    def frozen_embedder(self) -> FrozenEmbedder:
        """The shared frozen-backbone embedder (one is made, caching under ``cache_dir``, when none was given)."""
        if self.embedder is None:
            self.embedder = FrozenEmbedder(self.backbone, weights=self.weights, device=self.device,
                                           batch=self.config.embed_batch, cache_dir=self.cache_dir)
        return self.embedder


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: one-line ``description`` (tables, --help), ``build(context)``, and ``frozen``: it
    reads the shared frozen-backbone embeddings (the bench fills their cache once for all such methods)."""

    name: str
    description: str
    build: Callable[[BuildContext], Method]
    frozen: bool = False


#: method name -> MethodSpec, in the bench's default order
METHODS: Registry[MethodSpec] = Registry("method")
register_method = METHODS.register  # add a method (a name can be registered once)


def check_methods(names) -> list[str]:
    """The names, or ValueError naming the unknown ones and the choices."""
    names = list(names)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return names


def frozen_methods() -> list[str]:
    """The registered methods that read the shared frozen-backbone embeddings."""
    return [m for m, s in METHODS.items() if s.frozen]


def make_method(name: str, config: PaceConfig | None = None, backbone: str = DEFAULT_BACKBONE, *,
                weights: str | None = None, device: str | None = None,
                embedder: FrozenEmbedder | None = None, cache_dir: str | Path | None = None) -> Method:
    """Build the registered method ``name`` on ``backbone`` with hyper-parameters from ``config``.

    The frozen-backbone methods use ``embedder`` when given (share one across methods so its cache is
    shared), else a new ``FrozenEmbedder`` caching under ``cache_dir``."""
    spec = METHODS.lookup(name)
    cfg = config if config is not None else PaceConfig()
    return spec.build(BuildContext(cfg, backbone, weights, device or cfg.device, embedder, cache_dir))


# ---- the shipped methods --------------------------------------------------------------------------------

def _pace_variant(name: str, description: str, **changes) -> MethodSpec:
    """PACE with these config changes (an ablation, or RanPAC with FSA)."""
    return MethodSpec(name, description, lambda c: PaceMethod(c.config.replace(**changes), c.backbone, weights=c.weights,
                                                              device=c.device, name=name))


register_method(MethodSpec("finetune", "LoRA + linear head fine-tuned with CE on each session in turn (lower bound)",
                           lambda c: FineTune(c.config, c.backbone, weights=c.weights, device=c.device)))
register_method(MethodSpec("simplecil", "nearest class mean (cosine) on frozen pretrained embeddings",
                           lambda c: SimpleCIL(c.frozen_embedder()), frozen=True))
register_method(MethodSpec("acil", "frozen backbone + random projection + recursive analytic classifier",
                           lambda c: ACIL(c.frozen_embedder(), c.config), frozen=True))
register_method(_pace_variant("ranpac", "RanPAC with FSA: naive FSA (CE only) in session 0, then RP + ridge",
                              naive_fsa=True, use_msa=False, use_boundary_loss=False))
register_method(MethodSpec("joint", "oracle: PACE FSA on all sessions' training data at once, then ridge (upper bound)",
                           lambda c: JointMethod(c.config, c.backbone, weights=c.weights, device=c.device)))
register_method(_pace_variant("pace", "PACE (improved FSA, MSA, L_reg, analytic classifier)"))
register_method(_pace_variant("pace-no-msa", "PACE without multi-session adaptation", use_msa=False))
register_method(_pace_variant("pace-no-lreg", "PACE without the boundary-aware loss L_reg", use_boundary_loss=False))
register_method(_pace_variant("pace-naive-fsa", "PACE with naive FSA (LoRA on all blocks, head + LoRA together)",
                              naive_fsa=True))

__all__ = ["METHODS", "MethodSpec", "BuildContext", "Method", "register_method", "make_method", "check_methods",
           "frozen_methods", "EmbeddingCache", "FrozenEmbedder", "SimpleCIL", "ACIL", "PaceMethod", "JointMethod",
           "FineTune"]
