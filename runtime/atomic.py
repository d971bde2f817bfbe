"""Crash-safe file replacement for the runtime's state files and bundles (POSIX; Linux for folder swaps).

* ``atomic_write(path, write)`` / ``atomic_write_bytes(path, data)``: a temporary file in the same folder
  (``write(f)`` fills it), fsync, ``os.replace`` over the target, fsync of the folder. A process killed at
  any moment leaves the old file or the new one, never a mixture (rename(2) is atomic); a power cut after
  the call returns leaves the new one. Every single-file write of the project goes through it.
* ``write_dir(out, files)``: a complete folder of files (name -> bytes), each fsynced, swapped in at ``out``
  with ``atomic_replace_dir`` (bundles, checkpoints).
* ``atomic_replace_dir(tmp, out)``: puts a complete folder ``tmp`` at ``out``. When ``out`` exists, Linux's
  ``renameat2(RENAME_EXCHANGE)`` swaps the two names in one atomic step (then the old copy is removed).
  Where that is unavailable (other systems, some file systems) two renames are used,
  ``out -> .out.<pid>.old`` and ``tmp -> out``; a kill between them leaves ``out`` missing and the complete
  previous folder at ``.out.<pid>.old``, which ``recover_dir`` (called by ``open_bundle`` and
  ``write_bundle``) renames back once its writer is gone.
* Temporary names carry the writer's process id, ``.<name>.<pid>.<random>.tmp``: temporaries left by killed
  writers (a kill skips every cleanup) are removed by the next write to the same target
  (``remove_stale``), never those of a live process.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

AT_FDCWD = -100
RENAME_EXCHANGE = 2
ATOMIC_EXCHANGE = True  # tests set False to exercise the two-rename fallback


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie counts as alive until reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_synced(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (for files inside a temporary folder that is swapped in later)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.(?:[^/]+\.tmp|old)$")


def remove_stale(target: str | Path) -> list[Path]:
    """Remove temporaries (files or folders) of ``target`` left by writers that no longer run; returns them.
    ``.old`` folders are left for ``recover_dir`` while the target is missing."""
    target = Path(target)
    pattern, removed = _temp_pattern(target.name), []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if not m or pid_alive(int(m.group(1))) or (p.name.endswith(".old") and not target.exists()):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def recover_dir(target: str | Path) -> bool:
    """If ``target`` is missing because a two-rename replacement was killed half-way, rename the complete
    previous folder ``.target.<pid>.old`` back (only when that writer is gone). Returns whether it did."""
    target = Path(target)
    if target.exists():
        return False
    pattern = _temp_pattern(target.name)
    try:
        olds = [p for p in target.parent.iterdir() if p.name.endswith(".old") and pattern.match(p.name)]
    except OSError:
        return False
    for p in sorted(olds, key=lambda p: p.stat().st_mtime, reverse=True):
        if not pid_alive(int(pattern.match(p.name).group(1))):
            try:
                os.rename(p, target)
            except OSError:
                return False
            fsync_dir(target.parent)
            return True
    return False


def temp_file(target: Path) -> tuple[int, str]:
    """mkstemp beside ``target`` with a name ``remove_stale`` recognises."""
    return tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)


def temp_dir(target: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Atomically replace ``path`` with what ``write(f)`` writes to a binary file: temp file in the same folder,
    fsync, rename over the target, fsync the folder. Returns the path."""
    path = Path(path)
    remove_stale(path)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``atomic_write`` of bytes."""
    return atomic_write(path, lambda f: f.write(data))


def write_dir(out: str | Path, files: dict[str, bytes]) -> Path:
    """Put a folder holding ``files`` (name -> bytes, written in order and fsynced) at ``out`` atomically: a
    temporary sibling folder swapped in with ``atomic_replace_dir``; removed again if anything fails."""
    out = Path(out)
    tmp = temp_dir(out)
    try:
        for name, data in files.items():
            write_synced(tmp / name, data)
        fsync_dir(tmp)
        atomic_replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not ATOMIC_EXCHANGE:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: the file system or kernel cannot exchange
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def atomic_replace_dir(tmp: Path, out: Path) -> None:
    """Put the complete, fsynced folder ``tmp`` at ``out`` (see the module docstring)."""
    if out.exists():
        if _exchange(tmp, out):
            fsync_dir(out.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
            return
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, out)
    fsync_dir(out.parent)
