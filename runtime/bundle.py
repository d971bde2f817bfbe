"""The bundle: what ``edge-pace export`` writes and the runtime loads (a folder, or the same as one zip).

    embedder.onnx            waveform [batch, samples] at sample_rate -> features z [batch, feature_dim]
    embedder.int8.onnx       optional, static int8 (QDQ) quantised, with its measured agreement
    classifier.safetensors   the analytic classifier as exported (see runtime/state.py)
    manifest.json            format, version, audio settings, labels, backbone, PACE settings, parity,
                             quantisation figures, sha256 and size of every file above

What the device learns later goes to ``state.safetensors`` beside these files (self-checksummed, tied to
the embedder's sha256): the exported files and their manifest are never rewritten on the device.
Loading checks the format, the version, the manifest's fields (types, ranges, plain file names: a name
like ``../x`` is refused) and every file's size and checksum, and says which file is wrong. Nothing in a
bundle is unpickled or executed: ONNX is protobuf, the classifier safetensors, the manifest JSON.
Zip bundles: only the files the manifest lists are read, and only when their size in the archive matches
the manifest (a zip bomb or a swapped member is refused before it is decompressed).
Writing (``write_bundle``) is atomic, also against a kill at any moment (runtime/atomic.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edge_pace.runtime.atomic import atomic_write, file_sha256, recover_dir, remove_stale, write_dir

BUNDLE_FORMAT = "edge-pace-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDER = "embedder.onnx"
EMBEDDER_INT8 = "embedder.int8.onnx"
CLASSIFIER = "classifier.safetensors"
STATE = "state.safetensors"
REQUIRED_KEYS = ("format", "format_version", "sample_rate", "window_seconds", "hop_seconds", "feature_dim",
                 "labels", "files", "min_samples")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")  # no folders, no leading dot


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
    problems = manifest_problems(manifest)
    if problems:
        raise BundleError(f"{where}: {MANIFEST} is inconsistent: " + "; ".join(problems))
    return manifest


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def manifest_problems(m: dict) -> list[str]:
    """What is wrong with a manifest's fields (types, ranges, file entries); empty when nothing is."""
    out = []
    if not (_is_int(m["sample_rate"]) and 1000 <= m["sample_rate"] <= 1_000_000):
        out.append(f"sample_rate must be an integer from 1000 to 1000000 Hz, got {m['sample_rate']!r}")
    for k in ("window_seconds", "hop_seconds"):
        v = m[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v <= 3600):
            out.append(f"{k} must be a number of seconds in (0, 3600], got {v!r}")
    for k in ("feature_dim", "min_samples"):
        if not (_is_int(m[k]) and 0 < m[k] <= 1 << 24):
            out.append(f"{k} must be a positive integer, got {m[k]!r}")
    if not (isinstance(m["labels"], list) and all(isinstance(x, str) for x in m["labels"])):
        out.append("labels must be a list of strings")
    files = m["files"]
    if not isinstance(files, dict):
        return out + [f"files must map file names to {{sha256, bytes}}, got {type(files).__name__}"]
    for name, info in files.items():
        if not _PLAIN_NAME.match(name) or name == MANIFEST:
            out.append(f"file name {name!r} is not a plain file name of the bundle")
        elif not (isinstance(info, dict) and isinstance(info.get("sha256"), str)
                  and re.fullmatch(r"[0-9a-f]{64}", info["sha256"]) and _is_int(info.get("bytes"))
                  and info["bytes"] >= 0):
            out.append(f"files[{name!r}] must be {{\"sha256\": 64 hex digits, \"bytes\": size}}, got {info!r}")
    return out


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder or zip; with ``verify`` every listed file's size and sha256 is checked."""
    path = Path(path)
    if not path.exists():
        recover_dir(path)  # a folder replacement killed between its two renames (systems without renameat2)
    if path.is_dir():
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{path}: no {MANIFEST}: not a bundle folder (or a half-written one)")
        bundle = Bundle(path, _parse_manifest(mpath.read_bytes(), str(path)))
    elif path.is_file():
        bundle = _open_zip(path)
    else:
        raise BundleError(f"{path}: bundle not found")
    if verify:
        problems = verify_bundle(bundle)
        if problems:
            raise BundleError(f"{path}: " + "; ".join(problems))
    return bundle


def _open_zip(path: Path) -> Bundle:
    """A zip bundle: the manifest, then only the files it lists, each only if its size matches."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            if MANIFEST not in infos:
                raise BundleError(f"{path}: archive has no {MANIFEST}")
            if infos[MANIFEST].file_size > 16 << 20:
                raise BundleError(f"{path}: {MANIFEST} in the archive is {infos[MANIFEST].file_size} bytes; not a manifest")
            manifest = _parse_manifest(zf.read(MANIFEST), str(path))
            files = {MANIFEST: zf.read(MANIFEST)}
            for name, info in manifest["files"].items():
                if name in infos:
                    if infos[name].file_size != info["bytes"]:
                        raise BundleError(f"{path}: {name} is {infos[name].file_size} bytes in the archive but the "
                                          f"manifest says {info['bytes']} bytes")
                    files[name] = zf.read(name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{path}: not a bundle folder nor a readable zip archive ({exc})") from exc
    return Bundle(path, manifest, files)


def verify_bundle(bundle: Bundle) -> list[str]:
    """Problems found (empty when every file is present with the recorded size and sha256). Folder files are
    hashed in 1 MB blocks (memory stays small)."""
    problems = []
    for name, info in bundle.manifest["files"].items():
        if not bundle.has(name):
            problems.append(f"{name} is missing")
            continue
        if bundle.is_zip:
            data = bundle.read(name)
            size, digest = len(data), sha256_bytes(data)
        else:
            p = bundle.path / name
            size = p.stat().st_size
            digest = file_sha256(p) if size == info.get("bytes") else "(not hashed)"
        if size != info.get("bytes") or digest != info.get("sha256"):
            problems.append(f"{name} fails its checksum (sha256 {digest[:12]}…, {size} bytes; manifest says "
                            f"{str(info.get('sha256'))[:12]}…, {info.get('bytes')} bytes)")
    return problems


def write_bundle(out: str | Path, files: dict[str, bytes], manifest: dict, single_file: bool = False) -> Path:
    """Write files + manifest (checksums filled in here) atomically: everything goes to a temporary
    sibling first and is renamed into place only when complete, so a failure midway leaves the previous
    bundle (or nothing) at ``out``, never a half-written one."""
    out = Path(out)
    for name in files:
        if not _PLAIN_NAME.match(name) or name == MANIFEST:
            raise BundleError(f"{name!r} is not a plain file name for a bundle file")
    if not out.exists():
        recover_dir(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BundleError(f"{out}: exists and is not a bundle; refusing to replace it (choose another path)")
    if out.is_file() and not single_file:
        raise BundleError(f"{out}: is a file; choose a folder path (or --single-file for a zip)")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = dict(manifest, format=BUNDLE_FORMAT, format_version=BUNDLE_VERSION,
                    files={n: {"sha256": sha256_bytes(d), "bytes": len(d)} for n, d in files.items()})
    mbytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    remove_stale(out)
    contents = {**files, MANIFEST: mbytes}  # the manifest last
    if single_file:
        def write_zip(f) -> None:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                for name, data in contents.items():
                    zf.writestr(name, data)

        return atomic_write(out, write_zip)
    return write_dir(out, contents)
