"""Crash safety: SIGKILL a child process at random moments while it saves learned state or writes a bundle;
afterwards the file (folder) must load, verified, and equal either the state before the interrupted write or
the one being written, every time.

    .venv/bin/python benchmarks/kill_trials.py                          # all modes, 100 trials each
    .venv/bin/python benchmarks/kill_trials.py --mode learn --trials 100
    .venv/bin/python benchmarks/kill_trials.py --bundle path/to/bundle  # default: newest cached test bundle

Modes (each trial is a fresh child, killed after a uniformly random delay within its write loop):
* ``save``: the child loads the bundle's ``Learner`` and saves two different learned states alternately
  (``Learner.save``: temp file, fsync, rename).
* ``learn``: the child learns one real clip at a time and saves after each (``learn`` then ``save``).
* ``bundle``: the child writes a real bundle's files with ``write_bundle`` (two versions alternately, ~60 MB
  each); Linux's atomic folder exchange (renameat2).
* ``bundle-fallback``: the same with the two-rename fallback of systems without renameat2; a kill between
  the renames is repaired when the bundle is next opened.
``--light`` runs ``save``/``learn`` children on the classifier alone (``AnalyticClassifier`` +
``state_to_bytes`` + ``atomic_write_bytes``, the functions ``Learner.save`` calls) with real features,
without starting ONNX Runtime: the pytest version (tests/test_reliability.py) uses it to stay fast.

The child reports ``writing <k> <sha>`` before and ``done <k> <sha>`` after each write (sha = the state's
tensor checksum, or the bundle version), so the parent knows the old and the new content of the write a
kill interrupted. Stale temporaries left by killed writers are counted; the next write removes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD_STATE = r'''
import sys, json
from pathlib import Path
import numpy as np
mode, light, bundle, folder = sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3]), Path(sys.argv[4])
from edge_pace.runtime.state import read_state, to_tensors, state_to_bytes, atomic_write_bytes
path = folder / "state.safetensors"
meta = json.loads((folder / "meta.json").read_text())
if light:
    def save(clf):
        atomic_write_bytes(path, state_to_bytes(clf, meta))
else:
    from edge_pace.runtime.learner import Learner
    lrn = Learner.load(bundle, state=path)
    def save(clf):
        lrn._clf = clf  # the live classifier whose state Learner.save writes
        lrn.save(path)
clf, _ = read_state((path if mode == "learn" else folder / "initial.safetensors").read_bytes(), str(path))
other, _ = read_state((folder / "other.safetensors").read_bytes(), "other")
feats = np.load(folder / "features.npy")  # real embeddings, one clip per row
labels = json.loads((folder / "labels.json").read_text())
print("ready", flush=True)
k = 0
while True:
    k += 1
    if mode == "learn":
        i = k % len(feats)
        if light:
            clf.learn(feats[i : i + 1], labels[i], groups=[0])
        else:
            lrn.learn(np.load(folder / "clips.npy", mmap_mode="r")[i], labels[i], sample_rate=lrn.sample_rate)
            clf = lrn.classifier
        target = clf
    else:
        target = other if k % 2 else clf
    sha = to_tensors(target)[1]["sha256"]
    print("writing", k, sha, flush=True)
    save(target)
    print("done", k, sha, flush=True)
'''

CHILD_BUNDLE = r'''
import sys, json
from pathlib import Path
from edge_pace.runtime import atomic
from edge_pace.runtime.bundle import write_bundle
src, out, fallback = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
atomic.ATOMIC_EXCHANGE = not fallback
m = json.loads((src / "manifest.json").read_text())
files = {n: (src / n).read_bytes() for n in m["files"]}
versions = {"A": (files, dict(m, created="A")),
            "B": ({**files, "classifier.safetensors": (src / "other.safetensors").read_bytes()}, dict(m, created="B"))}
print("ready", flush=True)
k = 0
while True:
    k += 1
    v = "B" if k % 2 else "A"
    print("writing", k, v, flush=True)
    write_bundle(out, *versions[v])
    print("done", k, v, flush=True)
'''


def _env() -> dict[str, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _kill_after(args: list[str], delay: float, ready_timeout: float = 120.0) -> tuple[list[str], float]:
    """Start a child, wait for its 'ready' line, sleep ``delay`` s, SIGKILL it; return its report lines."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=ROOT)
        t0 = time.monotonic()
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            proc.wait()
            err.seek(0)
            raise RuntimeError(f"child did not start: {line!r} {err.read()[-2000:]}")
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        # read through the same buffered reader as readline (it may already hold the next lines), then reap
        rest = proc.stdout.read()
        proc.wait()
    if time.monotonic() - t0 > ready_timeout + delay:
        raise RuntimeError("child took too long")
    return [line] + rest.splitlines(), delay


def _interrupted(lines: list[str], initial: str) -> tuple[str, str | None]:
    """(content of the last completed write, content of the write in progress or None)."""
    last, pending = initial, None
    for ln in lines:
        parts = ln.split()
        if len(parts) == 3 and parts[0] == "writing":
            pending = parts[2]
        elif len(parts) == 3 and parts[0] == "done":
            last, pending = parts[2], None
    return last, pending


def _stale(folder: Path, name: str) -> int:
    return sum(1 for p in folder.iterdir() if p.name.startswith(f".{name}.") and (p.name.endswith(".tmp")
                                                                                   or p.name.endswith(".old")))


# ---------------------------------------------------------------------------------------------- state files
def prepare_state(folder: Path, bundle: Path, seconds: float = 1.0, n_clips: int = 12) -> dict:
    """Real clips (sox tones and noise bursts, generated here), their embeddings, and two learned states."""
    from edge_pace.runtime.analytic import AnalyticClassifier
    from edge_pace.runtime.learner import Learner
    from edge_pace.runtime.state import save_state

    folder.mkdir(parents=True, exist_ok=True)
    lrn = Learner.load(bundle, state=False)
    rate = lrn.sample_rate
    clips, labels = [], []
    kinds = [("sine", 330), ("square", 220), ("pluck", 440), ("sawtooth", 550)]
    for i in range(n_clips):
        kind, f = kinds[i % len(kinds)]
        wav = folder / f"clip{i}.wav"
        subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(wav), "synth", str(seconds),
                        kind, str(f * (1 + 0.05 * i)), "fade", "0.02", str(seconds), "0.02", "gain", "-n", "-6"],
                       check=True, capture_output=True)
        import soundfile as sf

        x, _ = sf.read(str(wav), dtype="float32")
        clips.append(x[: int(seconds * rate)])
        labels.append(kind)
    clips = np.stack(clips)
    feats = np.concatenate([lrn.embed(c, rate) for c in clips])
    np.save(folder / "clips.npy", clips)
    np.save(folder / "features.npy", feats)
    (folder / "labels.json").write_text(json.dumps(labels))
    meta = lrn.state_metadata()
    (folder / "meta.json").write_text(json.dumps(meta))
    a = AnalyticClassifier(lrn.feature_dim, lrn.classifier.gamma)
    a.learn(feats[:4], labels[:4], groups=list(range(4)))
    b = AnalyticClassifier(lrn.feature_dim, lrn.classifier.gamma)
    b.learn(feats[4:10], labels[4:10], groups=list(range(6)))
    save_state(a, folder / "initial.safetensors", meta)
    save_state(b, folder / "other.safetensors", meta)
    return meta


def state_trials(bundle: Path, trials: int = 100, mode: str = "learn", light: bool = False, seed: int = 0,
                 work: Path | None = None, log=print) -> dict:
    """Kill trials for ``save`` or ``learn`` (then save); returns counts. Raises AssertionError on a failure."""
    from edge_pace.runtime.state import read_state

    rng = np.random.default_rng(seed)
    work = Path(work or tempfile.mkdtemp(prefix="kill-state-"))
    prepare_state(work, bundle)
    shutil.copy(work / "initial.safetensors", work / "state.safetensors")
    from edge_pace.runtime.state import to_tensors

    current = to_tensors(read_state((work / "state.safetensors").read_bytes())[0])[1]["sha256"]
    args = [sys.executable, "-c", CHILD_STATE, mode, "1" if light else "0", str(bundle), str(work)]
    # the first trial (killed after 1.5 s) also measures the write loop's period, to spread later kills over it
    res = {"trials": 0, "mid_write": 0, "old": 0, "new": 0, "max_stale": 0, "writes_seen": 0}
    span = None
    t_start = time.perf_counter()
    for t in range(trials):
        if span is None:
            lines, _ = _kill_after(args, 1.5)
            done = [ln for ln in lines if ln.startswith("done")]
            span = max(0.05, 1.5 / max(len(done), 1)) * 3  # about three write cycles
        else:
            lines, _ = _kill_after(args, float(rng.uniform(0.0, span)))
        last, pending = _interrupted(lines, current)
        got = to_tensors(read_state((work / "state.safetensors").read_bytes(), str(work / "state.safetensors"))[0])
        sha = got[1]["sha256"]
        assert sha in (last, pending), f"trial {t}: state {sha[:12]} is neither the old {last[:12]} nor the new " \
                                       f"{str(pending)[:12]}"
        res["trials"] += 1
        res["mid_write"] += pending is not None
        res["old" if sha == last else "new"] += 1
        res["writes_seen"] += sum(1 for ln in lines if ln.startswith("done"))
        res["max_stale"] = max(res["max_stale"], _stale(work, "state.safetensors"))
        current = sha  # the next child starts from (learn) or alternates against (save) what is on disk
    # a final complete write removes the temporaries of killed writers
    from edge_pace.runtime.state import atomic_write_bytes

    atomic_write_bytes(work / "state.safetensors", (work / "state.safetensors").read_bytes())
    res["stale_after_next_write"] = _stale(work, "state.safetensors")
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    log(f"{mode}{' (light)' if light else ''}: {res['trials']} kills, {res['mid_write']} inside a write, state "
        f"loaded and equal to the old one {res['old']} times, the new one {res['new']} times; up to "
        f"{res['max_stale']} stale temp file(s), {res['stale_after_next_write']} after the next write "
        f"({res['seconds']} s)")
    shutil.rmtree(work, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------- bundles
def bundle_trials(bundle: Path, trials: int = 100, fallback: bool = False, seed: int = 0, work: Path | None = None,
                  log=print) -> dict:
    """Kill trials for ``write_bundle`` of a real bundle's files; returns counts."""
    from edge_pace.runtime import bundle as B
    from edge_pace.runtime.analytic import AnalyticClassifier
    from edge_pace.runtime.state import state_to_bytes

    rng = np.random.default_rng(seed)
    work = Path(work or tempfile.mkdtemp(prefix="kill-bundle-"))
    src = work / "src"
    src.mkdir(parents=True)
    m = json.loads((bundle / B.MANIFEST).read_text())
    for name in m["files"]:
        shutil.copy(bundle / name, src / name)
    (src / B.MANIFEST).write_text(json.dumps(m))
    other = AnalyticClassifier(int(m["feature_dim"]), float(m.get("gamma", 1.0)))
    other.learn(np.abs(np.random.default_rng(0).standard_normal((3, other.dim))), "x")
    (src / "other.safetensors").write_bytes(state_to_bytes(other))
    out = work / "bundle"
    files = {n: (src / n).read_bytes() for n in m["files"]}
    B.write_bundle(out, files, dict(m, created="A"))
    args = [sys.executable, "-c", CHILD_BUNDLE, str(src), str(out), "1" if fallback else "0"]
    res = {"trials": 0, "mid_write": 0, "old": 0, "new": 0, "recovered": 0, "max_stale": 0}
    current, span, t_start = "A", None, time.perf_counter()
    for t in range(trials):
        if span is None:
            lines, _ = _kill_after(args, 3.0)
            done = [ln for ln in lines if ln.startswith("done")]
            span = max(0.1, 3.0 / max(len(done), 1)) * 2.5
        else:
            lines, _ = _kill_after(args, float(rng.uniform(0.0, span)))
        last, pending = _interrupted(lines, current)
        res["max_stale"] = max(res["max_stale"], _stale(work, out.name))
        missing = not out.exists()
        opened = B.open_bundle(out, verify=True)  # verifies every checksum; repairs a half-done fallback swap
        res["recovered"] += missing and out.exists()
        version = opened.manifest["created"]
        assert version in (last, pending), f"trial {t}: bundle version {version} is neither {last} nor {pending}: {lines}"
        want = {**files, "classifier.safetensors": (src / "other.safetensors").read_bytes()} if version == "B" else files
        for name, data in want.items():
            assert opened.manifest["files"][name]["sha256"] == B.sha256_bytes(data), f"trial {t}: {name} differs"
        res["trials"] += 1
        res["mid_write"] += pending is not None
        res["old" if version == last else "new"] += 1
        current = version
    B.write_bundle(out, files, dict(m, created="final"))
    res["stale_after_next_write"] = _stale(work, out.name)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    log(f"bundle{' (two-rename fallback)' if fallback else ''}: {res['trials']} kills, {res['mid_write']} inside a "
        f"write, bundle verified and equal to the old version {res['old']} times, the new one {res['new']} times"
        + (f", repaired on open {res['recovered']} times" if fallback else "")
        + f"; up to {res['max_stale']} stale temporaries, {res['stale_after_next_write']} after the next write "
        f"({res['seconds']} s)")
    shutil.rmtree(work, ignore_errors=True)
    return res


def default_bundle() -> Path:
    from edge_pace.backbones.weights import aisfx_path

    root = aisfx_path().parent / "test-bundles"
    found = sorted((d for d in root.glob("*") if (d / "manifest.json").is_file()), key=lambda d: d.stat().st_mtime)
    if not found:
        raise SystemExit("no bundle: pass --bundle (e.g. one written by `edge-pace export`)")
    return found[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--mode", choices=["save", "learn", "bundle", "bundle-fallback", "all"], default="all")
    ap.add_argument("--light", action="store_true", help="classifier-only children for save/learn")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    bundle = a.bundle or default_bundle()
    print(f"bundle {bundle}")
    modes = ["save", "learn", "bundle", "bundle-fallback"] if a.mode == "all" else [a.mode]
    for m in modes:
        if m in ("save", "learn"):
            state_trials(bundle, a.trials, m, a.light, a.seed)
        else:
            bundle_trials(bundle, a.trials, m == "bundle-fallback", a.seed)


if __name__ == "__main__":
    main()
