"""Shared pytest fixtures (real computations, no mocks). Other test files may use them freely.

Session-scoped, built once per test run:

``runtime_bundle`` -> Path
    A real frozen-backbone bundle: pretrained aisfx CNN + random projection to D = ``TEST_DIM`` (512, small
    to keep tests fast), exported with ``edge_pace.export.exporter.export_bundle`` (dynamo ONNX, parity
    check) including ``embedder.int8.onnx``; no classes. Treat it as read-only: tests that save state use
    ``bundle_copy``. Exporting takes ~30 s on 2 busy cores, so the result is cached in
    ``$EDGE_PACE_CACHE/test-bundles/<key>`` (default ~/.cache/edge-pace) where <key> hashes the source of
    every module that shapes the bundle (export/, runtime/{bundle,state,analytic}.py, the aisfx backbone,
    frontends, projection), the weights file and the torch/onnx/onnxscript/onnxruntime versions; the cached copy is
    checksum-verified before use and only the newest 3 keys are kept.
    EDGE_PACE_TEST_BUNDLE_CACHE=0 exports afresh into the session's tmp folder. Tests needing it are
    skipped when the aisfx weights are absent (``edge-pace backbones fetch``).
``bundle_copy`` (function scope) -> Path
    A private copy of ``runtime_bundle`` in the test's tmp_path (real copies, safe to tamper with).
``real_sounds`` -> dict[str, list[np.ndarray]]
    Real generated 1 s clips at 44.1 kHz, float32: sox ``sine``, ``square``, ``pluck`` tones at spread
    pitches and espeak-ng ``speech`` ("hello" by several voices, decoded at 22.05 kHz and resampled), 6 per
    class (the last ones are held-out variants: pitches/voices unused in the first ones), plus
    ``noise`` (white and brown noise, a class never learned: the "unrelated sound"). sox runs with ``-R`` (repeatable
    noise and pluck excitation), so the clips are identical on every run; espeak-ng is deterministic.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DIM = 512
RATE = 44100
# the source files that shape the test bundle (the cache key hashes them)
BUNDLE_RUNTIME_FILES = ("bundle.py", "state.py", "analytic.py")
BUNDLE_MODEL_FILES = ("backbones/__init__.py", "backbones/aisfx_cnn.py", "backbones/weights.py",
                      "backbones/frontends.py", "method/projection.py", "export/calibration.py")
KEEP_CACHED = 3  # newest cached test bundles kept; older keys (older code) are removed


def _bundle_key() -> str:
    from importlib.metadata import version

    from edge_pace.backbones.weights import aisfx_path

    versions = ";".join(f"{p}={version(p)}" for p in ("torch", "onnx", "onnxscript", "onnxruntime"))
    h = hashlib.sha256(f"dim={TEST_DIM};{versions};".encode())
    files = sorted([*ROOT.glob("export/*.py"), *(ROOT / "runtime" / f for f in BUNDLE_RUNTIME_FILES),
                    *(ROOT / "edge_pace" / f for f in BUNDLE_MODEL_FILES)])
    for f in files:
        if f.is_file():
            h.update(f.relative_to(ROOT).as_posix().encode() + f.read_bytes())
    w = aisfx_path()
    h.update(f"{w.stat().st_size}:{w.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _export(out: Path) -> Path:
    import torch

    from edge_pace.export.exporter import export_bundle, source_from_backbone

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return export_bundle(source_from_backbone("aisfx", TEST_DIM), out, int8=True, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def runtime_bundle(tmp_path_factory) -> Path:
    from edge_pace.backbones.weights import aisfx_path
    from edge_pace.runtime.bundle import BundleError, open_bundle

    if not aisfx_path().is_file():
        pytest.skip("aisfx weights absent: run `edge-pace backbones fetch`")
    if os.environ.get("EDGE_PACE_TEST_BUNDLE_CACHE", "1") == "0":
        return _export(tmp_path_factory.mktemp("bundle") / f"aisfx-d{TEST_DIM}")
    cached = aisfx_path().parent / "test-bundles" / _bundle_key()
    try:
        open_bundle(cached, verify=True)
        return cached
    except BundleError:
        cached.parent.mkdir(parents=True, exist_ok=True)
        _export(cached)  # written atomically by write_bundle
    entries = sorted((d for d in cached.parent.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: d.stat().st_mtime, reverse=True)
    for old in entries[KEEP_CACHED:]:
        shutil.rmtree(old, ignore_errors=True)
    return cached


def link_bundle(src: Path, out: Path) -> Path:
    """The exported files of ``src`` seen through symlinks in ``out``: learned state is written to ``out``,
    never into the shared cached bundle."""
    out.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("state"):
            (out / f.name).symlink_to(f)
    return out


@pytest.fixture
def bundle(runtime_bundle, tmp_path) -> Path:
    """A private view of the shared test bundle (symlinks), for tests that learn and save."""
    return link_bundle(runtime_bundle, tmp_path / "bundle")


@pytest.fixture
def one_torch_thread():
    """The test machines are small and shared: one intra-op thread is faster than oversubscribed two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bundle_copy(runtime_bundle, tmp_path) -> Path:
    out = tmp_path / "bundle"
    out.mkdir()
    for f in runtime_bundle.iterdir():
        if f.is_file() and not f.name.startswith("state"):
            shutil.copy2(f, out / f.name)
    return out


def sox_tone(path: Path, kind: str, freq: float, seconds: float = 1.0, rate: int = RATE) -> Path:
    """A repeatable sox clip (``-R``): kind is sine/square/pluck/whitenoise/brownnoise; 20 ms fades, peak -3 dBFS."""
    synth = [kind] if kind.endswith("noise") else [kind, str(freq)]
    subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-b", "16", "-c", "1", str(path), "synth", str(seconds),
                    *synth, "fade", "0.02", str(seconds), "0.02", "gain", "-n", "-3"], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def real_sounds(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    if shutil.which("sox") is None or shutil.which("espeak-ng") is None:
        pytest.skip("sox and espeak-ng are needed for real sounds")
    from sounds import espeak_clip, fit_length

    from edge_pace.runtime.audio import load_audio

    folder = tmp_path_factory.mktemp("sounds")
    pitches = [220, 330, 440, 587, 277, 392]  # last two: held-out pitches between the training ones
    voices = ["en-us", "en-gb", "en-sc", "en-us+m3", "en-gb+f3", "en-us+f2"]
    out: dict[str, list[np.ndarray]] = {}
    for kind in ("sine", "square", "pluck"):
        out[kind] = [fit_length(load_audio(sox_tone(folder / f"{kind}{f}.wav", kind, f), RATE)[0], RATE)
                     for f in pitches]
    out["speech"] = [fit_length(load_audio(espeak_clip(folder / f"hello_{i}.wav", "hello", v), RATE)[0], RATE)
                     for i, v in enumerate(voices)]
    out["noise"] = [fit_length(load_audio(sox_tone(folder / f"{k}.wav", k, 0), RATE)[0], RATE)
                    for k in ("whitenoise", "brownnoise")]
    return out
