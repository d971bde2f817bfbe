"""The bundle: what ``edge-pace export`` writes and the runtime loads (a folder, or the same as one zip).

    embedder.onnx            waveform [batch, samples] at sample_rate -> features z [batch, feature_dim]
    embedder.int8.onnx       optional, dynamically quantised
    classifier.safetensors   the analytic classifier as exported (see runtime/state.py)
    manifest.json            format, version, audio settings, labels, backbone, PACE settings, parity,
                             quantisation figures, sha256 and size of every file above

What the device learns later goes to ``state.safetensors`` beside these files (self-checksummed, tied to
the embedder's sha256): the exported files and their manifest are never rewritten on the device.
Loading checks the format, the version and every checksum, and says which file is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

BUNDLE_FORMAT = "edge-pace-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDER = "embedder.onnx"
EMBEDDER_INT8 = "embedder.int8.onnx"
CLASSIFIER = "classifier.safetensors"
STATE = "state.safetensors"
REQUIRED_KEYS = ("format", "format_version", "sample_rate", "window_seconds", "hop_seconds", "feature_dim",
                 "labels", "files", "min_samples")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """An opened, verified bundle (folder or zip). ``read(name)`` returns a file's bytes."""

    path: Path
    manifest: dict
    _zip: dict[str, bytes] | None = field(default=None, repr=False)

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def has(self, name: str) -> bool:
        return name in self._zip if self._zip is not None else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            if name not in self._zip:
                raise BundleError(f"{self.path}: {name} is missing from the bundle archive")
            return self._zip[name]
        p = self.path / name
        if not p.is_file():
            raise BundleError(f"{self.path}: {name} is missing from the bundle folder")
        return p.read_bytes()

    def state_path(self) -> Path:
        """Where the device's learned state lives: inside a folder bundle, beside a zip bundle."""
        return self.path / STATE if self._zip is None else self.path.with_name(self.path.name + ".state.safetensors")


def _parse_manifest(raw: bytes, where: str) -> dict:
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: {MANIFEST} is not an edge-pace bundle manifest")
    if manifest.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{where}: bundle format version {manifest.get('format_version')!r} is not supported "
                          f"by this runtime (it reads version {BUNDLE_VERSION}); re-export the bundle or upgrade")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{where}: {MANIFEST} lacks required keys {missing}")
    return manifest


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder or zip; with ``verify`` every listed file's size and sha256 is checked."""
    path = Path(path)
    if path.is_dir():
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{path}: no {MANIFEST}: not a bundle folder (or a half-written one)")
        bundle = Bundle(path, _parse_manifest(mpath.read_bytes(), str(path)))
    elif path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                files = {n: zf.read(n) for n in zf.namelist()}
        except (zipfile.BadZipFile, OSError) as exc:
            raise BundleError(f"{path}: not a bundle folder nor a readable zip archive ({exc})") from exc
        if MANIFEST not in files:
            raise BundleError(f"{path}: archive has no {MANIFEST}")
        bundle = Bundle(path, _parse_manifest(files[MANIFEST], str(path)), files)
    else:
        raise BundleError(f"{path}: bundle not found")
    if verify:
        problems = verify_bundle(bundle)
        if problems:
            raise BundleError(f"{path}: " + "; ".join(problems))
    return bundle


def verify_bundle(bundle: Bundle) -> list[str]:
    """Problems found (empty when every file is present with the recorded size and sha256)."""
    problems = []
    for name, info in bundle.manifest["files"].items():
        if not bundle.has(name):
            problems.append(f"{name} is missing")
            continue
        data = bundle.read(name)
        if len(data) != info.get("bytes") or sha256_bytes(data) != info.get("sha256"):
            problems.append(f"{name} fails its checksum (sha256 {sha256_bytes(data)[:12]}…, "
                            f"{len(data)} bytes; manifest says {str(info.get('sha256'))[:12]}…, {info.get('bytes')} bytes)")
    return problems


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bundle(out: str | Path, files: dict[str, bytes], manifest: dict, single_file: bool = False) -> Path:
    """Write files + manifest (checksums filled in here) atomically: everything goes to a temporary
    sibling first and is renamed into place only when complete, so a failure midway leaves the previous
    bundle (or nothing) at ``out``, never a half-written one."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BundleError(f"{out}: exists and is not a bundle; refusing to replace it (choose another path)")
    if out.is_file() and not single_file:
        raise BundleError(f"{out}: is a file; choose a folder path (or --single-file for a zip)")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = dict(manifest, format=BUNDLE_FORMAT, format_version=BUNDLE_VERSION,
                    files={n: {"sha256": sha256_bytes(d), "bytes": len(d)} for n, d in files.items()})
    mbytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    if single_file:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                    for name, data in {**files, MANIFEST: mbytes}.items():
                        zf.writestr(name, data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(out.parent)
        return out
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, data in {**files, MANIFEST: mbytes}.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
