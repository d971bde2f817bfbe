"""Resident memory of long-running device processes: glibc's mmap threshold.

glibc serves allocations above its mmap threshold with their own mappings, returned to the system when freed.
By default the threshold is dynamic: freeing such a block raises it to that block's size (up to 32 MB), so later
arrays of a few MB (the gamma re-choice's Gram matrices and eigendecompositions, runtime/gamma.py) come from the
heap instead, where freed space is kept and fragments. Over a long session the resident size then creeps up in
steps. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD, 1 MB)``, which also switches the dynamic rule off)
keeps every large temporary in its own mapping. Measured with benchmarks/soak.py (12 h of audio, seed 0):
growth after warm-up 5.7 MB with the default rule, 2.7 MB with the threshold fixed (0.64 vs 0.25 MB/h; the
stored features grew 0.3 MB of it).

The setting is process-wide, so the library never changes it on import: the long-running entry points
(``LiveSession``: ``edge-pace listen`` and demos/iot_app.py) call ``pin_mmap_threshold`` once. Elsewhere than
glibc it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 1 << 20  # 1 MB: stream windows (~0.2 MB) stay on the heap, Gram matrices get mappings


def pin_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (see the module docstring); True when glibc accepted it."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 < nbytes <= 1 << 25:
        raise ValueError(f"nbytes must be an integer in (0, 32 MB], got {nbytes!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes))


__all__ = ["pin_mmap_threshold", "DEFAULT_THRESHOLD"]
