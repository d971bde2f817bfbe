"""PACE hyper-parameters: one documented dataclass, serialisable to and from a JSON dict.

Every threshold and rate of the method is a named field. Where the paper (arXiv 2602.03355) gives a
value, it is the default; where it leaves a choice open, the comment says what we chose and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from edge_pace.runtime.gamma import CRITERIA as GAMMA_CRITERIA
from edge_pace.runtime.gamma import DEFAULT_CRITERION as GAMMA_CRITERION
from edge_pace.runtime.gamma import GAMMA_GRID  # 1e-8 .. 1e8 in half decades

RETIRED_FIELDS = ("gamma_val_fraction", "gamma_tie_break")  # the 80/20 gamma search (before issue 11): ignored
MSA_PROJECTIONS = ("principal", "orthogonal")
# the paper's FSA epochs per dataset kind (edge_pace/evaluation/protocol.py kinds); our offline benchmarks take the
# paper's dataset they stand in for: environment ~ ESC-50, keywords ~ SC2, speakers ~ TIMIT, instruments ~ VocalSet,
# real recordings (drums, telephone voices, tabla: sound events) ~ ESC-50
PAPER_E0: dict[str, int] = {"esc50": 10, "us8k": 15, "sc2": 1, "timit2": 30, "timit3": 30, "vocalset": 6,
                            "vocalset_technique": 6, "synth:environment": 10, "synth:keywords": 1,
                            "synth:speakers": 30, "synth:instruments": 6, "real": 10}


def paper_e0(kind: str) -> int:
    """The paper's E0 for a dataset kind (``PAPER_E0``); ValueError for a kind it does not cover."""
    if kind not in PAPER_E0:
        raise ValueError(f"the paper gives no E0 for dataset kind {kind!r}; known: {', '.join(PAPER_E0)}")
    return PAPER_E0[kind]


@dataclass
class PaceConfig:
    """All PACE settings. ``PaceConfig.from_dict(cfg.to_dict()) == cfg``.

    Paper values: lr_head, lr_backbone, head_epochs, batch_size, rho_layer, rho_svd, n_stop, gamma grid.
    """

    # ---- first-session adaptation (FSA), paper values ------------------------------------------
    lr_head: float = 0.01  # paper: linear head alone, backbone frozen
    lr_backbone: float = 0.05  # paper: LoRA on layers >= L_tune, head frozen
    head_epochs: int = 1  # paper: one epoch for the head stage
    # FSA epochs (the most; early stopping on the held-out classes picks the best). Paper, per dataset: 10 ESC-50,
    # 15 US8K, 1 SC2, 30 TIMIT, 6 VocalSet (``PAPER_E0``; benchmarks/pace_bench.py --e0 paper); 3 keeps CPU runs
    # short
    e0: int = 3
    batch_size: int = 24  # paper
    rho_layer: float = 0.94  # paper: L_tune = first layer whose probe-vs-pretrained CKA < rho_layer
    # SGD with momentum: the paper's learning rates (0.05 / 0.01) are SGD-scale rates.
    momentum: float = 0.9
    # open: the paper's "linear head". "cosine" = linear on L2-normalised features with unit-norm weights
    # (RanPAC's CosineLinear); a plain linear head on raw features (aisfx: norm ~24) diverged at these
    # SGD rates in our runs, because its step size grows with the squared feature norm.
    head: str = "cosine"
    head_scale: float = 16.0  # fixed logit scale of the cosine head (NormFace / CosFace range)
    weight_decay: float = 0.0  # open; LoRA is already low-capacity and B starts at zero

    # ---- LoRA (open in the paper) ---------------------------------------------------------------
    lora_rank: int = 8  # small rank: few-shot sessions, and merged weights make rank free at inference
    lora_alpha: float = 16.0  # scale alpha / rank = 2, the common LoRA default ratio
    # layer names inside each block that get LoRA; () = the backbone's own (its spec's ``lora_targets``,
    # edge_pace/backbones)
    lora_targets: tuple[str, ...] = ()

    # open: global gradient-norm clipping of every backbone (LoRA) training step (0 = off); with the BatchNorm
    # statistics frozen (eval mode throughout), this is what keeps a 0.05 SGD step from wrecking a CNN backbone
    grad_clip: float = 1.0

    # ---- do-no-harm FSA (issue 12; method/harm.py) -----------------------------------------------------
    # hold out ~this fraction of session 0's classes (at least 1) as "new" classes; FSA adapts on the rest and is
    # kept only if the device classifier does better on the held-out classes with it than with the frozen backbone
    do_no_harm: bool = True
    holdout_fraction: float = 1 / 3
    holdout_margin: float = 0.0  # adapted must beat frozen by more than this (accuracy, 0..1): strictly better
    # significance of the keep decision (harm.better): adapted is kept only if it beats frozen on the same held-out
    # clips by a paired test at this one-sided z, Bonferroni-corrected for the candidates tried (2 L_tune x e0
    # epochs: z 2 -> 2.53 for 4): on accuracy (McNemar-style), or, accuracy not lower, on the per-clip ridge margins
    # (what still ranks backbones when both get every held-out clip right)
    holdout_margin_z: float = 2.0
    # L_tune is chosen on the held-out classes too: the CKA probe's choice and up to this many earlier blocks
    # (more blocks adapted) are each trained and the best by held-out accuracy (then margin) is the candidate
    l_tune_search: int = 1
    fsa_lrs: tuple[float, ...] = ()  # learning rates tried in FSA, best by held-out accuracy; () = (lr_backbone,)

    # cache what FSA does not change: the frozen blocks' activations below L_tune for every session-0 clip and for
    # N_p masked copies of each adapted clip (masks drawn once per candidate, not every epoch), when the backbone
    # can run from a block (``stem`` / ``embed_from``); False = every step runs the whole backbone (fresh masks)
    cache_stem: bool = True

    # ---- CKA probe --------------------------------------------------------------------------------
    # the probe only measures where representations move: a 10x smaller rate than lr_backbone (and grad_clip)
    # keeps it from destroying the features it measures (lr 0.05 took aisfx block 1 to CKA 0.25)
    probe_lr: float = 0.005
    cka_max_samples: int = 512  # probe CKA uses at most this many session-0 clips (memory bound)
    # the probe trains with CE only: it measures where representations move, margins are irrelevant there
    probe_boundary_loss: bool = False

    # ---- multi-session adaptation (MSA) ------------------------------------------------------------
    use_msa: bool = True  # ablation switch ("no MSA": backbone frozen after session 0)
    rho_svd: float = 0.99  # paper: energy kept by the input subspace P
    # paper: MSA stops (backbone frozen for good) once the training samples seen FROM SESSION 0 ON exceed n_stop
    # (sum_{t=0}^{T3} N_t > N_stop); a session 0 larger than n_stop means no MSA ever runs
    n_stop: int = 220
    msa_epochs: int = 3  # open; same as the CPU default of e0
    # open; 5x below lr_backbone: later sessions refine, and small steps limit the drift of old classes'
    # classifier statistics (computed with the older backbone)
    msa_lr: float = 0.01
    # "principal" (the paper's, as in LoRA-DRS): the new LoRA's input-side gradient onto span(P), P the principal
    # subspace of this session's layer inputs under the unlearned model (g <- g P P^T). "orthogonal" (g <- g (I -
    # P P^T), GPM / null-space style) is NOT the paper's: it projects off the very inputs being trained on; kept
    # only as a documented experiment for ablations (edge-pace bench --set msa_projection=orthogonal)
    msa_projection: str = "principal"

    # ---- spectrogram boundary-aware perturbation -----------------------------------------------------
    use_boundary_loss: bool = True  # ablation switch ("no L_reg")
    n_perturb: int = 4  # N_p copies per sample: enough to estimate a misclassification fraction, 5x forward cost
    r_time: float = 0.2  # r_T: one time mask of width up to r_T * frames (SpecAugment-style)
    r_freq: float = 0.2  # r_F: one frequency mask of width up to r_F * bins
    rho_p: float = 0.5  # boundary sample: more than half of its copies misclassified
    delta: float = 0.5  # hinge margin, in squared distance of L2-normalised features (range 0..4)
    lambda_reg: float = 0.1  # weight of L_reg next to cross-entropy; small, CE drives the adaptation
    # L2-normalise features inside L_reg: makes delta scale-free across backbones
    reg_normalise: bool = True
    # push only from boundary samples of other classes: pushing from a same-class sample would split a class
    push_other_classes: bool = True

    # ---- analytic classifier ---------------------------------------------------------------------------
    d_proj: int = 2048  # device default (2048^2 float64 = 32 MB); the paper's 8192 is 268 MB of float32
    proj_seed: int = 0
    # gamma: the device's own rule (runtime/gamma.py), leave-one-clip-out over the grid, re-chosen every session
    gamma_grid: tuple[float, ...] = GAMMA_GRID
    gamma_criterion: str = GAMMA_CRITERION
    gamma_fallback: float = 1.0  # prior while there are too few clips (fewer than two classes of two clips)
    # condition the backbone embedding (session-0 statistics) before the random projection (method/projection.py):
    # "scalar" (RMS scale: z is O(1), gamma portable), "dims" (per-dimension z-scoring, measured worse), "none"
    standardize: str = "scalar"
    keep_features: bool = True  # the classifier keeps z per class, so the device can forget a class exactly

    # ---- ablations ----------------------------------------------------------------------------------
    naive_fsa: bool = False  # no probe, no staging: LoRA on all blocks, head + LoRA trained together

    # ---- run ------------------------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # bfloat16 autocast for training steps: on CUDA, and on CPUs with native bfloat16 (AVX512-BF16/AMX; training
    # ~2.5x faster on this project's CPU); features for the classifier and the held-out check are always float32
    amp: bool = True
    embed_batch: int = 64  # batch size for feature extraction (no gradients)
    quiet: bool = False  # no progress bars

    def __post_init__(self) -> None:
        self.lora_targets = tuple(str(t) for t in self.lora_targets)
        self.gamma_grid = tuple(float(g) for g in self.gamma_grid)
        self.fsa_lrs = tuple(float(v) for v in self.fsa_lrs)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and the expected range."""
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"PaceConfig.{name} = {getattr(self, name)!r}: expected {expected}")

        need(self.head in ("cosine", "linear"), "head", "'cosine' or 'linear'")
        need(self.gamma_criterion in GAMMA_CRITERIA, "gamma_criterion", f"one of {GAMMA_CRITERIA}")
        need(self.standardize in ("scalar", "dims", "none"), "standardize", "'scalar', 'dims' or 'none'")
        for name in ("lr_head", "lr_backbone", "msa_lr", "lora_alpha", "head_scale", "probe_lr"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v > 0, name, "a positive number")
        for name in ("head_epochs", "e0", "msa_epochs", "n_stop", "n_perturb"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, name, "an integer >= 0")
        for name in ("batch_size", "lora_rank", "d_proj", "cka_max_samples", "embed_batch"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("rho_layer", "rho_svd"):
            need(0.0 < getattr(self, name) <= 1.0, name, "a number in (0, 1]")
        for name in ("rho_p", "momentum"):
            need(0.0 <= getattr(self, name) < 1.0, name, "a number in [0, 1)")
        for name in ("r_time", "r_freq"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "a number in [0, 1]")
        need(0.0 < self.holdout_fraction < 1.0, "holdout_fraction", "a number in (0, 1)")
        need(isinstance(self.l_tune_search, int) and self.l_tune_search >= 0, "l_tune_search", "an integer >= 0")
        need(all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in self.fsa_lrs), "fsa_lrs",
             "a list of positive numbers (empty: lr_backbone)")
        for name in ("delta", "lambda_reg", "weight_decay", "grad_clip", "holdout_margin", "holdout_margin_z"):
            need(getattr(self, name) >= 0, name, "a number >= 0")
        need(len(self.gamma_grid) > 0 and all(g > 0 and math.isfinite(g) for g in self.gamma_grid), "gamma_grid",
             "a non-empty list of positive numbers")
        need(self.gamma_fallback > 0, "gamma_fallback", "a positive number")
        need(self.msa_projection in MSA_PROJECTIONS, "msa_projection", f"one of {MSA_PROJECTIONS}")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             "'auto', 'cpu', 'cuda' or 'cuda:N'")

    # ---- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["gamma_grid"] = list(self.gamma_grid)
        d["fsa_lrs"] = list(self.fsa_lrs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PaceConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"PaceConfig: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "PaceConfig":
        d = self.to_dict()
        d.update(changes)
        return PaceConfig.from_dict(d)


__all__ = ["PaceConfig", "GAMMA_GRID", "MSA_PROJECTIONS", "PAPER_E0", "paper_e0"]
