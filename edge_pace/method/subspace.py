"""Input subspaces and gradient projection for multi-session adaptation (PACE section 3).

Before a session trains its new LoRA, the inputs of every adapted layer are collected on that session's
data under the *unlearned* model (W0 - sum of older adapters, ``lora.unlearned``). A layer's input rows
are im2col patches (length in*kh*kw, the same ordering as the flattened kernel) for a convolution and
token vectors (length in) for a linear layer. Their uncentered covariance C = sum x x^T gives the
principal subspace P = top eigenvectors of C whose eigenvalues reach a fraction rho_svd of the energy
(trace). The new adapter's input-side factor A [r, d] is then kept in that subspace (``"principal"``:
A's gradient g <- g P P^T and its initial value projected the same way, so every row of the update
dW = B A lies in span(P)) or in its orthogonal complement (``"orthogonal"``: g <- g (I - P P^T)).
No audio and no features are stored: only the running covariance (or, while fewer rows than the
dimension have been seen, the rows themselves, whose n x n Gram matrix is cheaper to decompose).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn import functional as F

from edge_pace.method.lora import LoRAAdapter, LoRALayer

_EPS = 1e-10  # eigenvalues below _EPS * largest are treated as zero
_CPU_FLOAT32_DIM = 1024


def energy_rank(eigvals: torch.Tensor, rho: float) -> int:
    """Smallest k whose k largest eigenvalues hold at least a fraction rho of the total (rho in (0, 1])."""
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"energy fraction rho must lie in (0, 1], got {rho}")
    lam = torch.sort(eigvals.double().clamp(min=0.0), descending=True).values
    if lam.numel() == 0 or lam[0] <= 0:
        return 0
    lam = lam[lam > _EPS * lam[0]]
    cum = torch.cumsum(lam, 0) / lam.sum()
    return int(torch.searchsorted(cum, torch.tensor([rho - 1e-12], dtype=cum.dtype)).item()) + 1


def basis_from_covariance(cov: torch.Tensor, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis [d, k] of the principal subspace of a PSD matrix, and its eigenvalues (descending).
    On CPU, matrices above _CPU_FLOAT32_DIM are decomposed in float32 (about 1.6x faster; the subspace is
    what matters and float32 resolves eigenvalues down to ~1e-6 of the largest)."""
    big_cpu = cov.device.type == "cpu" and cov.shape[0] > _CPU_FLOAT32_DIM
    lam, vec = torch.linalg.eigh(cov.float() if big_cpu else cov.double())
    lam, vec = lam.double(), vec.double()
    lam, vec = lam.flip(0), vec.flip(1)
    k = energy_rank(lam, rho)
    return vec[:, :k], lam.clamp(min=0.0)


def basis_from_rows(rows: torch.Tensor, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as ``basis_from_covariance(rows^T rows)`` through the n x n Gram matrix (cheaper when n < d)."""
    X = rows.double()
    G = X @ X.T
    big_cpu = G.device.type == "cpu" and G.shape[0] > _CPU_FLOAT32_DIM
    lam, U = torch.linalg.eigh(G.float() if big_cpu else G)
    lam, U = lam.double(), U.double()
    lam, U = lam.flip(0).clamp(min=0.0), U.flip(1)
    k = energy_rank(lam, rho)
    V = (X.T @ U[:, :k]) / torch.sqrt(lam[:k])[None, :]
    return torch.linalg.qr(V).Q, lam  # re-orthonormalised (same span)


class InputStats:
    """Running uncentered second moment of one layer's input rows (hybrid rows / covariance store)."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.n = 0
        self._rows: list[torch.Tensor] = []
        self.cov: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        if rows.dim() != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected input rows [m, {self.dim}], got {tuple(rows.shape)}")
        rows = rows.detach().float()  # products in float32 (fast), sums across batches in float64
        self.n += rows.shape[0]
        if self.cov is None:
            self._rows.append(rows)
            if self.n > self.dim:  # more rows than dimensions: switch to the d x d covariance
                X = torch.cat(self._rows)
                self.cov, self._rows = (X.T @ X).double(), []
        else:
            self.cov += (rows.T @ rows).double()

    def covariance(self) -> torch.Tensor:
        if self.cov is not None:
            return self.cov
        if not self._rows:
            raise RuntimeError("no input rows were collected for this layer")
        X = torch.cat(self._rows).double()
        return X.T @ X

    def basis(self, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(P [d, k] float64 orthonormal, eigenvalues) of the principal subspace at energy rho."""
        if self.n == 0:
            raise RuntimeError("no input rows were collected for this layer")
        if self.cov is None:
            return basis_from_rows(torch.cat(self._rows), rho)
        return basis_from_covariance(self.cov, rho)


def input_rows(layer: LoRALayer, x: torch.Tensor) -> torch.Tensor:
    """The rows A multiplies: im2col patches [N*L, in*kh*kw] for a conv, tokens [*, in] for a linear layer."""
    base = layer.base
    if layer.is_conv:
        cols = F.unfold(x, base.kernel_size, dilation=base.dilation, padding=base.padding, stride=base.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


@contextmanager
def collect_inputs(layers: dict[str, LoRALayer]) -> Iterator[dict[str, InputStats]]:
    """While active, every forward through the given layers adds its input rows to their ``InputStats``."""
    stats = {name: InputStats(int(layer.base.weight[0].numel())) for name, layer in layers.items()}
    handles = []
    for name, layer in layers.items():
        def hook(module: LoRALayer, args: tuple, _name: str = name) -> None:
            stats[_name].add(input_rows(module, args[0].float()))
        handles.append(layer.register_forward_pre_hook(hook))
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def project_rows(M: torch.Tensor, P: torch.Tensor, mode: str = "principal") -> torch.Tensor:
    """Rows of M [r, d] projected onto span(P) (``"principal"``: M P P^T) or its complement
    (``"orthogonal"``: M - M P P^T). P [d, k] orthonormal."""
    if mode not in ("principal", "orthogonal"):
        raise ValueError(f"projection mode must be 'principal' or 'orthogonal', got {mode!r}")
    P = P.to(M.device, M.dtype)
    inside = (M @ P) @ P.T
    return inside if mode == "principal" else M - inside


class GradientProjector:
    """Keeps each new adapter's A in (or orthogonal to) its layer's input subspace: projects A once,
    then every gradient of A through a tensor hook. ``remove()`` detaches the hooks."""

    def __init__(self, adapters: dict[str, LoRAAdapter], bases: dict[str, torch.Tensor],
                 mode: str = "principal") -> None:
        missing = sorted(set(adapters) - set(bases))
        if missing:
            raise ValueError(f"no subspace basis for layers {missing}")
        self.mode = mode
        self.bases = {n: bases[n].to(adapters[n].A.device, torch.float32) for n in adapters}
        self._handles = []
        with torch.no_grad():
            for name, a in adapters.items():
                P = self.bases[name]
                if P.shape[0] != a.in_dim:
                    raise ValueError(f"{name}: basis has dimension {P.shape[0]}, the adapter's A rows have {a.in_dim}")
                a.A.copy_(project_rows(a.A.reshape(a.rank, -1), P, mode).reshape_as(a.A))
                self._handles.append(a.A.register_hook(self._hook(P, a.rank, mode)))

    @staticmethod
    def _hook(P: torch.Tensor, rank: int, mode: str):
        def fn(g: torch.Tensor) -> torch.Tensor:
            return project_rows(g.reshape(rank, -1), P, mode).reshape(g.shape).to(g.dtype)
        return fn

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
