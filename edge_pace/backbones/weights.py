"""Pretrained weights, offline: the aisfx CNN's checkpoint ships inside the PyPI wheel aisfx==0.1.2.

We never install aisfx (its pinned requirements are unusable). ``fetch_aisfx`` downloads the wheel with
``pip download --no-deps``, checks the checkpoint's sha256, unpickles it once with torch's
``weights_only`` loader (no arbitrary code) and writes a safetensors file into the cache folder.
At run time only the safetensors file is read.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

AISFX_WHEEL = "aisfx==0.1.2"
AISFX_MEMBER = "aisfx/models/checkpoint.pth"
AISFX_SIZE = 24_900_277
AISFX_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"
AISFX_FILE = "aisfx-0.1.2-embedding.safetensors"
FETCH_COMMAND = "edge-pace backbones fetch"


def cache_dir() -> Path:
    """Folder for converted weights: $EDGE_PACE_CACHE, else ~/.cache/edge-pace."""
    return Path(os.environ.get("EDGE_PACE_CACHE", Path.home() / ".cache" / "edge-pace")).expanduser()


def aisfx_path() -> Path:
    return cache_dir() / AISFX_FILE


class WeightsMissing(FileNotFoundError):
    pass


def require_aisfx() -> Path:
    path = aisfx_path()
    if not path.is_file():
        raise WeightsMissing(f"pretrained aisfx weights not found at {path}. Fetch them once with: {FETCH_COMMAND}  "
                             "(downloads the aisfx==0.1.2 wheel from PyPI; set EDGE_PACE_CACHE to change the folder)")
    return path


def convert_aisfx_checkpoint(raw: bytes, out: Path) -> Path:
    """Verify and convert the raw checkpoint.pth bytes into a safetensors file of EmbeddingNet weights."""
    import torch
    from safetensors.torch import save

    from edge_pace.runtime.atomic import atomic_write_bytes

    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) != AISFX_SIZE or digest != AISFX_SHA256:
        raise ValueError(f"aisfx checkpoint has sha256 {digest} and {len(raw)} bytes; expected {AISFX_SHA256} "
                         f"and {AISFX_SIZE} bytes. Refusing to load it.")
    import numpy as np

    # weights_only refuses arbitrary globals; the checkpoint's ds_dict holds numpy scalars, which we allow
    scalar = getattr(np, "_core", np.core).multiarray.scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype, *[getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]]
    with torch.serialization.safe_globals(allowed):
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state = obj[0] if isinstance(obj, (tuple, list)) else obj
    prefix = "embedding_net."
    tensors = {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}
    if not tensors:
        raise ValueError("aisfx checkpoint holds no embedding_net.* tensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out, save(tensors, metadata={"source": AISFX_WHEEL + ":" + AISFX_MEMBER,
                                                          "sha256": AISFX_SHA256,
                                                          "license": "CC BY 4.0 (c) 2022 A.B. Ma and A. Lerch"}))


def fetch_aisfx(force: bool = False, wheel: str | Path | None = None) -> Path:
    """Download the aisfx wheel (or use a local one), verify and convert its checkpoint. Idempotent."""
    out = aisfx_path()
    if out.is_file() and not force:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   AISFX_WHEEL, "-d", tmp]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"could not download {AISFX_WHEEL} from PyPI:\n{res.stderr.strip()}")
            wheel = next(Path(tmp).glob("aisfx-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(AISFX_MEMBER)
    return convert_aisfx_checkpoint(raw, out)
