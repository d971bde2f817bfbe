"""What every class-incremental method of the bench shares: the ``Method`` interface and input checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Method(Protocol):
    """What the bench runs. ``waves`` is [n, samples] float32 at the backbone's sample rate; ``keys`` (optional,
    one string per clip, e.g. the file path) let a method reuse features of clips it has already embedded with
    an unchanged backbone. Results never depend on ``keys``."""

    name: str
    device: str

    def fit_session(self, index: int, waves: np.ndarray, labels: Sequence[str],
                    keys: Sequence[str] | None = None) -> dict[str, Any]: ...

    def predict(self, waves: np.ndarray, keys: Sequence[str] | None = None) -> list[str]: ...


def check_session(expected: int, index: int, waves: np.ndarray, labels: Sequence[str],
                  keys: Sequence[str] | None) -> None:
    """ValueError unless this is session ``expected`` with one label (and key) per clip and at least one clip."""
    if index != expected:
        raise ValueError(f"expected session {expected} next (sessions are learned in order), got session {index}")
    if len(labels) != len(waves):
        raise ValueError(f"got {len(waves)} waveforms but {len(labels)} labels")
    if len(waves) == 0:
        raise ValueError("a session needs at least one clip")
    check_keys(waves, keys)


def check_keys(waves: np.ndarray, keys: Sequence[str] | None) -> None:
    if keys is not None and len(keys) != len(waves):
        raise ValueError(f"got {len(waves)} waveforms but {len(keys)} keys")


def as_waves(waves: np.ndarray) -> np.ndarray:
    """[n, samples] float32 (a single clip [samples] becomes [1, samples])."""
    w = np.asarray(waves, dtype=np.float32)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"waves must have shape [n, samples], got {w.shape}")
    return w


__all__ = ["Method", "check_session", "check_keys", "as_waves"]
