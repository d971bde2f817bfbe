"""Classifier state on disk: safetensors (no pickle), versioned, checksummed, written atomically.

Layout: tensors ``R`` [D, D] float64 (omitted when it is exactly I / gamma, as in every frozen bundle: the file is
then format version 2, 33 MB smaller at D = 2048, and R is rebuilt exactly on load), ``W`` [D, K] float64,
``features.<k>`` [n_k, D] (per class, in class order, when kept) and ``groups.<k>`` [n_k] int64 (the clip each
stored row came from; files written before groups existed load with every row its own group),
``features.background``/``groups.background`` (the BACKGROUND rows, all-zero targets, when any); metadata
(strings): format, version, classes (JSON), counts (JSON), gamma, dim, keep_features, n_updates, and ``sha256`` of
the tensor payload so a flipped byte is caught; ``meta_sha256`` covers the other metadata strings, and the same
digest is stored as the tensor ``meta_digest`` (uint8[32]), which the tensor checksum covers, so a flip that hides
the metadata digest (e.g. in its key) is caught too. Files without ``meta_digest`` (older) are checked with
``meta_sha256`` when present and still load. Callers may add their own string metadata (``extra``), e.g. the device
runtime ties a state to its embedder (``embedder_sha256``); ``read_state`` returns it.

``state_lock``: the lock every process that reads, updates and saves a state takes (``edge-pace learn``/
``forget`` for one update, a live session for its whole run), so no process overwrites another's learning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_pace.runtime.analytic import BACKGROUND, AnalyticClassifier
from edge_pace.runtime.atomic import atomic_write_bytes  # noqa: F401 - re-exported

STATE_FORMAT = "edge-pace-classifier"
STATE_VERSION = 1
STATE_VERSION_NO_R = 2  # the same layout without R (R = I / gamma, exactly)
META_DIGEST = "meta_digest"  # uint8[32] tensor: sha256 of the metadata, covered by the tensor checksum


class StateError(ValueError):
    """A state file that cannot be used; the message names the file and the problem."""


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _meta_digest(meta: dict[str, str]) -> str:
    body = {k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def to_tensors(clf: AnalyticClassifier, extra: dict[str, str] | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and string metadata of a state; ``extra`` adds caller metadata (must not shadow the core keys)."""
    R = clf.R
    identity = not clf.features and np.array_equal(R, np.eye(clf.dim) / clf.gamma)
    tensors = {"W": clf.W} if identity else {"R": R, "W": clf.W}
    for k, c in [*enumerate(clf.classes), ("background", BACKGROUND)]:
        if c in clf.features:
            tensors[f"features.{k}"] = np.vstack(clf.features[c])
            if c in clf.groups:
                tensors[f"groups.{k}"] = np.concatenate(clf.groups[c]).astype(np.int64)
    version = STATE_VERSION_NO_R if identity else STATE_VERSION
    meta = {"format": STATE_FORMAT, "version": str(version), "classes": json.dumps(clf.classes),
            "counts": json.dumps(clf.counts), "gamma": repr(clf.gamma), "dim": str(clf.dim),
            "keep_features": json.dumps(clf.keep_features), "n_updates": str(clf.n_updates)}
    for k, v in (extra or {}).items():
        if k in meta or k in ("sha256", "meta_sha256"):
            raise ValueError(f"extra state metadata key {k!r} would overwrite a core key")
        meta[str(k)] = str(v)
    md = _meta_digest(meta)
    tensors[META_DIGEST] = np.frombuffer(bytes.fromhex(md), np.uint8).copy()  # binds the metadata to the tensors
    meta["sha256"] = _digest(tensors)
    meta["meta_sha256"] = md
    return tensors, meta


def state_to_bytes(clf: AnalyticClassifier, extra: dict[str, str] | None = None) -> bytes:
    from safetensors.numpy import save

    clf.check()
    tensors, meta = to_tensors(clf, extra)
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)


def save_state(clf: AnalyticClassifier, path: str | Path, extra: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, state_to_bytes(clf, extra))


def state_from_bytes(data: bytes, name: str = "state") -> AnalyticClassifier:
    return read_state(data, name)[0]


def read_state(data: bytes, name: str = "state") -> tuple[AnalyticClassifier, dict[str, str]]:
    """Parse and verify a state; returns the classifier and all its string metadata."""
    from safetensors.numpy import load

    if not data:
        raise StateError(f"{name}: file is empty")
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__", {})
        tensors = load(data)
    except Exception as exc:
        raise StateError(f"{name}: not a readable safetensors classifier state ({exc})") from exc
    if meta.get("format") != STATE_FORMAT:
        raise StateError(f"{name}: not an edge-pace classifier state (format {meta.get('format')!r})")
    if meta.get("version") not in (str(STATE_VERSION), str(STATE_VERSION_NO_R)):
        raise StateError(f"{name}: state format version {meta.get('version')} is not supported "
                         f"(this runtime reads versions {STATE_VERSION} and {STATE_VERSION_NO_R})")
    if _digest(tensors) != meta.get("sha256"):
        raise StateError(f"{name}: checksum mismatch: the state file is corrupt")
    if META_DIGEST in tensors:  # files since groups: the metadata digest is itself checksummed, so mandatory
        if not (_meta_digest(meta) == tensors[META_DIGEST].tobytes().hex() == meta.get("meta_sha256")):
            raise StateError(f"{name}: metadata checksum mismatch: the state file is corrupt")
    elif "meta_sha256" in meta and _meta_digest(meta) != meta["meta_sha256"]:
        raise StateError(f"{name}: metadata checksum mismatch: the state file is corrupt")
    try:
        classes, counts = json.loads(meta["classes"]), json.loads(meta["counts"])
        clf = AnalyticClassifier(int(meta["dim"]), float(meta["gamma"]), json.loads(meta["keep_features"]))
        if meta["version"] == str(STATE_VERSION_NO_R):
            if "R" in tensors or any(k.startswith("features.") for k in tensors):
                raise ValueError("a version-2 state holds neither R nor stored features")
            clf.R = np.eye(clf.dim, dtype=np.float64) / clf.gamma
        else:
            clf.R = tensors["R"].astype(np.float64)
        clf.W = tensors["W"].astype(np.float64)
        clf.classes, clf.counts, clf.n_updates = list(classes), list(counts), int(meta["n_updates"])
        clf.features = {c: [tensors[f"features.{k}"]] for k, c in enumerate(classes) if f"features.{k}" in tensors}
        if "features.background" in tensors:  # rows with an all-zero target (runtime/analytic.py BACKGROUND)
            clf.features[BACKGROUND] = [tensors["features.background"]]
        clf.groups = _read_groups(tensors, classes, clf.features)
        clf.next_group = 1 + max((int(g[0].max()) for g in clf.groups.values() if len(g[0])), default=-1)
        clf.check()
    except (KeyError, ValueError, TypeError, FloatingPointError) as exc:
        raise StateError(f"{name}: inconsistent classifier state: {exc}") from exc
    if len(clf.counts) != len(clf.classes) or len(set(clf.classes)) != len(clf.classes):
        raise StateError(f"{name}: inconsistent classifier state: {len(clf.classes)} classes (unique: "
                         f"{len(set(clf.classes))}) but {len(clf.counts)} counts")
    for k, c in enumerate(clf.classes):
        if c in clf.features and len(clf.features[c][0]) != clf.counts[k]:
            raise StateError(f"{name}: inconsistent classifier state: class {c!r} has {len(clf.features[c][0])} stored "
                             f"feature rows but a count of {clf.counts[k]}")
    return clf, dict(meta)


def _read_groups(tensors: dict[str, np.ndarray], classes: list[str],
                 features: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Group ids per class; a class stored without them (older files) gets one fresh group per row."""
    groups, nxt = {}, 0
    keys = [*enumerate(classes)] + ([("background", BACKGROUND)] if BACKGROUND in features else [])
    for k, c in keys:
        if f"groups.{k}" in tensors:
            g = tensors[f"groups.{k}"]
            if c not in features or g.shape != (len(features[c][0]),) or not np.issubdtype(g.dtype, np.integer):
                raise ValueError(f"groups.{k} has shape {g.shape} dtype {g.dtype}, expected one integer per stored "
                                 f"feature row of class {c!r}")
            groups[c] = [g.astype(np.int64)]
            nxt = max(nxt, int(g.max()) + 1 if len(g) else 0)
    for _, c in keys:
        if c in features and c not in groups:
            n = len(features[c][0])
            groups[c] = [nxt + np.arange(n, dtype=np.int64)]
            nxt += n
    return groups


def load_state(path: str | Path) -> AnalyticClassifier:
    path = Path(path)
    if not path.is_file():
        raise StateError(f"{path}: classifier state file not found")
    return state_from_bytes(path.read_bytes(), str(path))


def lock_path(state_path: str | Path) -> Path:
    """The lock file of a state file: ``<state>.lock`` beside it."""
    state_path = Path(state_path)
    return state_path.with_name(state_path.name + ".lock")


@contextlib.contextmanager
def state_lock(state_path: str | Path, wait: float | None = None) -> Iterator[None]:
    """Exclusive advisory lock (POSIX flock) on ``lock_path(state_path)`` while a process reads, updates and saves
    the state. ``wait``: None = as long as it takes, else seconds, after which ``StateError`` says the state is in
    use. OSError when the lock file cannot be opened (e.g. a read-only folder). A no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock
        yield
        return
    lock = lock_path(state_path)
    with open(lock, "a+") as f:
        if wait is None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StateError(f"{state_path} is in use by another edge-pace process (its lock {lock} is "
                                         f"held for more than {wait:g} s); stop it, or use another state file") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
