"""Reliability (issue 8) on a real bundle: corrupt and inconsistent state/bundle files are refused with a message
naming the file and the problem; nothing is ever unpickled or executed; SIGKILL at random moments during save,
learn + save and write_bundle leaves the old or the new content (benchmarks/kill_trials.py, fewer trials);
recursive updates do not drift from the exact ridge solution (benchmarks/drift.py); threads that predict, learn
and save concurrently see consistent states; a short soak streams minutes of audio with exact event counts and
flat memory (benchmarks/soak.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_pace.runtime import atomic
from edge_pace.runtime import bundle as B
from edge_pace.runtime.analytic import DRIFT_TOLERANCE, AnalyticClassifier, loo_scores
from edge_pace.runtime.learner import Learner
from edge_pace.runtime.state import STATE_FORMAT, StateError, read_state, save_state, to_tensors

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def _bench(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"edge_pace_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def saved(bundle_copy, real_sounds) -> Path:
    """A bundle copy with a learned, saved state (2 classes); returns the state path."""
    lrn = Learner.load(bundle_copy)
    lrn.learn_many(real_sounds["sine"][:3], "sine", sample_rate=SR)
    lrn.learn(np.concatenate(real_sounds["speech"][:2]), "speech", sample_rate=SR)  # one clip of 3 windows
    return lrn.save()


def _safetensors_with(meta: dict, tensors: dict) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)


def _sealed(meta: dict, tensors: dict) -> bytes:
    """A state file with valid checksums for these (possibly inconsistent) contents."""
    from edge_pace.runtime.state import META_DIGEST, _digest, _meta_digest

    meta = {k: v for k, v in meta.items() if k not in ("sha256", "meta_sha256")}
    md = _meta_digest(meta)
    tensors = {**tensors, META_DIGEST: np.frombuffer(bytes.fromhex(md), np.uint8).copy()}
    return _safetensors_with({**meta, "sha256": _digest(tensors), "meta_sha256": md}, tensors)


# ---------------------------------------------------------------------------------------------- corrupt state
def test_truncated_state_is_refused_naming_the_file(saved, bundle_copy):
    data = saved.read_bytes()
    hlen = int.from_bytes(data[:8], "little")
    cuts = [0, 4, 8, 8 + hlen // 2, 8 + hlen, 8 + hlen + 100, len(data) // 2, len(data) - 1]
    for cut in cuts:
        saved.write_bytes(data[:cut])
        with pytest.raises(StateError) as e:
            read_state(saved.read_bytes(), str(saved))
        msg = str(e.value)
        assert msg.startswith(f"{saved}: ") and re.search("empty|not a readable safetensors|checksum", msg), (cut, msg)
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match=re.escape(str(saved))):  # the whole load path refuses it too
        Learner.load(bundle_copy)
    assert saved.read_bytes() == data[: len(data) // 2]  # refused, not repaired or deleted behind the user's back


def test_every_flipped_header_byte_and_sampled_data_bytes_are_refused(saved):
    data = saved.read_bytes()
    hlen = int.from_bytes(data[:8], "little")
    rng = np.random.default_rng(0)
    offsets = list(range(0, 8 + hlen)) + sorted(rng.choice(np.arange(8 + hlen, len(data)), 200, replace=False))
    offsets.append(len(data) - 1)
    kinds = set()
    for off in offsets:
        bad = bytearray(data)
        bad[off] ^= 0x01 if off % 2 else 0x80
        with pytest.raises(StateError) as e:
            read_state(bytes(bad), str(saved))
        assert str(e.value).startswith(f"{saved}: ")
        kinds.add(str(e.value).split(": ", 1)[1].split(" (")[0][:40])
    assert len(offsets) > 300 and len(kinds) >= 3  # several distinct diagnoses, all StateError


def test_a_state_with_nothing_learned_omits_R_and_reads_back_exactly():
    """R = I / gamma is not stored (format version 2: a frozen bundle's classifier is KBs, not 33 MB at D = 2048);
    once anything is learned R is stored again (version 1) and the round trip stays bit-exact."""
    from edge_pace.runtime.state import state_from_bytes, state_to_bytes

    fresh = AnalyticClassifier(64, gamma=0.3)
    data = state_to_bytes(fresh)
    back, meta = read_state(data)
    assert meta["version"] == "2" and len(data) < 4096 and np.array_equal(back.R, fresh.R)
    assert np.array_equal(back.W, fresh.W) and back.gamma == 0.3
    fresh.learn(np.random.default_rng(0).random((3, 64)), "a")
    data = state_to_bytes(fresh)
    back = state_from_bytes(data)
    assert read_state(data)[1]["version"] == "1" and np.array_equal(back.R, fresh.R) and np.array_equal(back.W, fresh.W)


def test_wrong_format_version_and_inconsistent_contents_are_refused(saved, tmp_path):
    clf, meta = read_state(saved.read_bytes())
    tensors, core = to_tensors(clf, {k: v for k, v in meta.items() if k not in
                                     ("format", "version", "classes", "counts", "gamma", "dim", "keep_features",
                                      "n_updates", "sha256", "meta_sha256")})
    cases = {
        "version": ({**core, "version": "3"}, tensors, "state format version 3 is not supported"),
        "version 2 with R": ({**core, "version": "2"}, tensors, "a version-2 state holds neither R"),
        "format": ({**core, "format": "something-else"}, tensors, "not an edge-pace classifier state"),
        "counts": ({**core, "counts": json.dumps([1, 1])}, tensors, "stored feature rows but a count"),
        "classes": ({**core, "classes": json.dumps(["sine"])}, tensors, "inconsistent shapes"),
        "groups": (core, {**tensors, "groups.0": np.zeros(2, np.int64)}, "groups.0 has shape"),
        "duplicate classes": ({**core, "classes": json.dumps(["sine", "sine"])}, tensors, "unique: 1"),
    }
    for name, (meta2, tensors2, msg) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(_sealed(meta2, tensors2))  # valid checksums: only the contents disagree
        with pytest.raises(StateError, match=re.escape(str(path)) + ".*" + re.escape(msg)):
            read_state(path.read_bytes(), str(path))
    assert meta["format"] == STATE_FORMAT


def test_a_state_written_before_groups_existed_still_loads(saved, tmp_path):
    clf, meta = read_state(saved.read_bytes())
    tensors, _ = to_tensors(clf)
    old_tensors = {k: v for k, v in tensors.items() if not k.startswith("groups.") and k != "meta_digest"}
    from edge_pace.runtime.state import _digest, _meta_digest

    old_meta = {k: v for k, v in meta.items() if k != "meta_sha256"}  # older files lacked meta_sha256 too
    old_meta["sha256"] = _digest(old_tensors)
    path = tmp_path / "old.safetensors"
    path.write_bytes(_safetensors_with(old_meta, old_tensors))
    back, _ = read_state(path.read_bytes(), str(path))
    assert back.classes == clf.classes and np.array_equal(back.W, clf.W)
    for c in back.classes:  # every row its own group: plain leave-one-out
        assert len(np.unique(back.groups[c][0])) == len(back.features[c][0])
    assert back.next_group == sum(len(f[0]) for f in back.features.values())
    plain = loo_scores(back.R, back.W, back.classes, back.features)
    grouped = loo_scores(back.R, back.W, back.classes, back.features, None, back.groups)
    assert all(np.array_equal(plain[c], grouped[c]) for c in back.classes)
    assert not np.array_equal(clf.loo_scores()["speech"], plain["speech"])  # the new file knew speech is one clip


# ---------------------------------------------------------------------------------------------- bundle manifest
def _edit_manifest(bundle: Path, **changes) -> None:
    m = json.loads((bundle / B.MANIFEST).read_text())
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    (bundle / B.MANIFEST).write_text(json.dumps(m))


def _files_entry(bundle: Path, name: str, **changes) -> dict:
    m = json.loads((bundle / B.MANIFEST).read_text())
    return {**m["files"], name: {**m["files"][name], **changes}}


MANIFEST_CASES = {
    "sha of a file": (lambda b: dict(files=_files_entry(b, B.CLASSIFIER, sha256="0" * 64)),
                      "classifier.safetensors fails its checksum"),
    "size of a file": (lambda b: dict(files=_files_entry(b, B.EMBEDDER, bytes=12)), "embedder.onnx fails its checksum"),
    "a listed file is missing": (lambda b: dict(files={**_files_entry(b, B.EMBEDDER),
                                                       "extra.onnx": {"sha256": "0" * 64, "bytes": 3}}),
                                 "extra.onnx is missing"),
    "path outside the bundle": (lambda b: dict(files={**_files_entry(b, B.EMBEDDER),
                                                      "../outside": {"sha256": "0" * 64, "bytes": 3}}),
                                "'../outside' is not a plain file name"),
    "feature_dim": (lambda b: dict(feature_dim=256), "outputs 512 features but the manifest says 256"),
    "sample_rate type": (lambda b: dict(sample_rate="44100"), "sample_rate must be an integer"),
    "sample_rate zero": (lambda b: dict(sample_rate=0), "sample_rate must be an integer"),
    "hop": (lambda b: dict(hop_seconds=-0.5), "hop_seconds must be a number of seconds"),
    "labels": (lambda b: dict(labels="sine"), "labels must be a list of strings"),
    "format version": (lambda b: dict(format_version=99), "bundle format version 99 is not supported"),
    "missing key": (lambda b: dict(min_samples=None), "lacks required keys ['min_samples']"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_a_manifest_that_disagrees_with_the_files_is_refused(bundle_copy, case):
    change, msg = MANIFEST_CASES[case]
    _edit_manifest(bundle_copy, **change(bundle_copy))
    with pytest.raises(B.BundleError) as e:
        Learner.load(bundle_copy)
    assert str(e.value).startswith(f"{bundle_copy}: ") and msg in str(e.value), str(e.value)


def test_truncated_manifest_and_zip_member_sizes_are_refused(bundle_copy, tmp_path):
    raw = (bundle_copy / B.MANIFEST).read_bytes()
    (bundle_copy / B.MANIFEST).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(B.BundleError, match=re.escape(f"{bundle_copy}: manifest.json is not valid JSON")):
        B.open_bundle(bundle_copy)
    (bundle_copy / B.MANIFEST).write_bytes(raw)
    m = json.loads(raw)
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:  # a member swapped for a longer one (or a zip bomb): refused unread
        zf.writestr(B.MANIFEST, raw)
        zf.writestr(B.CLASSIFIER, (bundle_copy / B.CLASSIFIER).read_bytes() + b"x")
    with pytest.raises(B.BundleError, match=f"{B.CLASSIFIER} is {m['files'][B.CLASSIFIER]['bytes'] + 1} bytes in the "
                                            f"archive but the manifest says {m['files'][B.CLASSIFIER]['bytes']}"):
        B.open_bundle(z)


# ---------------------------------------------------------------------------------------------- no unsafe loading
class _Payload:
    """Unpickling this creates the marker file: proof that something was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _torch_style_zip(payload: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the layout of torch.save: archive/data.pkl + version
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _set_file(bundle: Path, name: str, data: bytes) -> None:
    """Replace a bundle file and fix the manifest so that its checksum passes (an attacker would)."""
    (bundle / name).write_bytes(data)
    m = json.loads((bundle / B.MANIFEST).read_text())
    m["files"][name] = {"sha256": B.sha256_bytes(data), "bytes": len(data)}
    (bundle / B.MANIFEST).write_text(json.dumps(m))


def test_pickles_posing_as_state_bundle_or_model_are_refused_and_never_executed(bundle_copy, tmp_path):
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Payload(marker))
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))  # the payload is live: unpickling it does create the file
    assert probe.exists()
    state = bundle_copy / B.STATE
    for data, msg in [(payload, "not a readable safetensors"), (_torch_style_zip(payload), "not a readable safetensors")]:
        state.write_bytes(data)
        with pytest.raises(StateError, match=re.escape(str(state)) + ".*" + msg):
            Learner.load(bundle_copy)
    state.unlink()
    clf_bytes = (bundle_copy / B.CLASSIFIER).read_bytes()
    _set_file(bundle_copy, B.CLASSIFIER, payload)  # the exported classifier as a pickle, checksum fixed
    with pytest.raises(StateError, match="classifier.safetensors: not a readable safetensors"):
        Learner.load(bundle_copy)
    _set_file(bundle_copy, B.CLASSIFIER, clf_bytes)
    onnx_bytes = (bundle_copy / B.EMBEDDER).read_bytes()
    for data in (payload, _torch_style_zip(payload)):
        _set_file(bundle_copy, B.EMBEDDER, data)
        with pytest.raises(B.BundleError, match=re.escape(f"{bundle_copy}: embedder.onnx: ONNX Runtime cannot load")):
            Learner.load(bundle_copy)
    _set_file(bundle_copy, B.EMBEDDER, onnx_bytes)
    manifest = (bundle_copy / B.MANIFEST).read_bytes()
    (bundle_copy / B.MANIFEST).write_bytes(payload)
    with pytest.raises(B.BundleError, match="manifest.json is not valid JSON"):
        Learner.load(bundle_copy)
    (bundle_copy / B.MANIFEST).write_bytes(manifest)
    assert not marker.exists()


def test_a_pickle_inside_a_valid_model_or_zip_bundle_is_inert(bundle_copy, tmp_path, real_sounds):
    import onnx

    marker = tmp_path / "executed"
    payload = pickle.dumps(_Payload(marker))
    model = onnx.load_from_string((bundle_copy / B.EMBEDDER).read_bytes())
    entry = model.metadata_props.add()
    entry.key, entry.value = "payload", payload.decode("latin-1")
    _set_file(bundle_copy, B.EMBEDDER, model.SerializeToString())
    lrn = Learner.load(bundle_copy)
    assert lrn.embedder.metadata["payload"] == payload.decode("latin-1")  # a string, nothing more
    lrn.learn_many(real_sounds["sine"][:2], "sine", sample_rate=SR)
    assert lrn.predict(real_sounds["sine"][4], SR)[0] == "sine"
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in bundle_copy.iterdir():
            if f.is_file():
                zf.writestr(f.name, f.read_bytes())
        zf.writestr("payload.pkl", payload)  # not listed in the manifest: never read
        zf.writestr("__init__.py", f"open({str(marker)!r}, 'w')")
    assert Learner.load(z, state=False).classes == []
    assert not marker.exists()


def test_the_runtime_source_never_unpickles_or_evaluates():
    pattern = re.compile(r"\bpickle\.loads?\b|import pickle|torch\.load|allow_pickle\s*=\s*True|\beval\(|\bexec\(|"
                         r"__import__\(|marshal\.|np\.load\(")
    found = [(p.name, i + 1, line.strip()) for p in sorted((ROOT / "runtime").glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert found == []


# ---------------------------------------------------------------------------------------------- crash safety
def test_sigkill_during_save_and_learn_then_save_leaves_old_or_new_state(runtime_bundle, tmp_path):
    kt = _bench("kill_trials")
    for mode in ("save", "learn"):
        res = kt.state_trials(runtime_bundle, trials=8, mode=mode, light=True, seed=1, work=tmp_path / mode,
                              log=lambda m: None)
        assert res["trials"] == 8 and res["old"] + res["new"] == 8  # every trial checked inside state_trials
        assert res["stale_after_next_write"] == 0


def test_sigkill_during_write_bundle_leaves_old_or_new_bundle(runtime_bundle, tmp_path):
    kt = _bench("kill_trials")
    for fallback in (False, True):
        res = kt.bundle_trials(runtime_bundle, trials=6, fallback=fallback, seed=2, work=tmp_path / str(fallback),
                               log=lambda m: None)
        assert res["trials"] == 6 and res["old"] + res["new"] == 6 and res["stale_after_next_write"] == 0


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_half_done_two_rename_swap_is_repaired_and_stale_temporaries_removed(runtime_bundle, tmp_path):
    m = json.loads((runtime_bundle / B.MANIFEST).read_text())
    files = {B.CLASSIFIER: (runtime_bundle / B.CLASSIFIER).read_bytes()}
    m["files"] = {}
    out = B.write_bundle(tmp_path / "b", files, dict(m, created="A"))
    pid = _dead_pid()
    os.rename(out, tmp_path / f".b.{pid}.old")  # a writer killed between its two renames
    assert B.open_bundle(out).manifest["created"] == "A" and out.is_dir()  # repaired on open
    os.rename(out, tmp_path / f".b.{pid}.old")
    B.write_bundle(out, files, dict(m, created="B"))  # or by the next write, which then replaces it
    assert B.open_bundle(out).manifest["created"] == "B"
    stale = [tmp_path / f".b.{pid}.x1y2.tmp", tmp_path / f".state.safetensors.{pid}.abc.tmp"]
    live = tmp_path / f".state.safetensors.{os.getpid()}.abc.tmp"  # a live writer's temporary is left alone
    stale[0].mkdir()
    for p in stale[1:] + [live]:
        p.write_bytes(b"partial")
    B.write_bundle(out, files, dict(m, created="C"))
    atomic.atomic_write_bytes(tmp_path / "state.safetensors", b"data")
    assert not any(p.exists() for p in stale) and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [live.name]


# ---------------------------------------------------------------------------------------------- numerical drift
@pytest.mark.parametrize("dtype,updates", [("float64", 20_000), ("float32", 20_000),
                                           pytest.param("float64", 100_000, marks=pytest.mark.slow)])
def test_recursive_updates_match_the_joint_ridge_solution(dtype, updates):
    """Single-example updates at D = 256: 2 x 10^4 (10^5 marked slow; benchmarks/drift.py also runs D = 2048)."""
    drift = _bench("drift")
    rows = drift.run(dim=256, updates=updates, dtype=dtype, hard=False, checkpoints=(updates,), log=lambda m: None)
    r = rows[-1]
    assert r["cond"] < 1e7  # moderately conditioned: the joint solution itself is accurate to ~1e-10 here
    assert r["rel_W"] <= 1e-8 and r["rel_R"] <= 1e-8 and r["rel_scores"] <= 1e-8, r
    assert r["backward_R"] <= 1e-13, r


def test_ill_conditioned_updates_stay_backward_stable_and_the_guard_refits():
    drift = _bench("drift")
    r = drift.run(dim=128, updates=5_000, hard=True, checkpoints=(5_000,), keep_features=True, log=lambda m: None)[-1]
    assert r["cond"] > 1e8 and r["backward_R"] <= 1e-13 and r["drift_probe"] <= 1e-12, r  # stable despite cond
    # drift is detected and removed: a perturbed R (as after heavy rounding) is refitted exactly
    rng = np.random.default_rng(0)
    Z = np.maximum(rng.standard_normal((300, 32)) * 3, 0)
    clf = AnalyticClassifier(32, 1.0).learn(Z, [f"c{i % 3}" for i in range(300)])
    assert clf.drift() < 1e-14
    E = rng.standard_normal((32, 32)) * 1e-6 * np.abs(clf.R).max()
    clf.R = clf.R + E + E.T
    assert clf.drift() > DRIFT_TOLERANCE
    clf.refit()
    assert clf.drift() < 1e-14
    clf.R = -np.eye(32)  # no longer positive definite: a clear error, nothing learned
    W = clf.W.copy()
    with pytest.raises(FloatingPointError, match="no longer positive definite"):
        clf.learn(Z[:1], "c0")
    assert np.array_equal(clf.W, W)


# ---------------------------------------------------------------------------------------------- concurrency
def test_predicting_learning_and_saving_threads_see_consistent_states(bundle_copy, real_sounds):
    lrn = Learner.load(bundle_copy)
    lrn.learn_many(real_sounds["sine"][:2], "sine", sample_rate=SR)
    lrn.learn_many(real_sounds["square"][:2], "square", sample_rate=SR)
    clip = real_sounds["pluck"][5]
    z = lrn.embed(clip, SR).astype(np.float64)
    views = {lrn.version: lrn._view}
    path = lrn.save()
    results, saved, errors, stop = [], [], [], threading.Event()

    def guard(fn):
        def run():
            while not stop.is_set():
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - any exception fails the test
                    errors.append(exc)
                    return
        return threading.Thread(target=run)

    def save():
        lrn.save(path)
        saved.append(read_state(path.read_bytes(), str(path))[0])

    def read():  # a reader of the file never sees a torn write
        read_state(path.read_bytes(), str(path))

    threads = [guard(lambda: results.append(lrn.predict_proba(clip, SR))) for _ in range(3)] + [guard(save), guard(read)]
    for t in threads:
        t.start()
    try:
        steps = [("pluck", 0), ("sine", 2), ("speech", 0), ("pluck", 1), ("square", 2), ("speech", 1)]
        for c, i in steps:
            lrn.learn(real_sounds[c][i], c, sample_rate=SR)
            views[lrn.version] = lrn._view
        lrn.forget("speech")
        views[lrn.version] = lrn._view
        while len(saved) < 3 and not errors:
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results) >= 3 and len(saved) >= 3
    for s in results:  # every prediction comes from exactly one published state
        v = views[s.version]
        assert list(s.ridge) == list(v.classes)
        assert np.allclose(list(s.ridge.values()), (z @ v.W).mean(0), rtol=1e-9, atol=1e-9)
    for clf in saved:  # every saved file holds exactly one published state
        match = [v for v in views.values() if v.classes == tuple(clf.classes) and np.array_equal(v.W, clf.W)]
        assert match, clf.classes
    back = Learner.load(bundle_copy)
    assert back.classes == lrn.classes or any(v.classes == tuple(back.classes) for v in views.values())


# ---------------------------------------------------------------------------------------------- long runs
def test_short_soak_exact_events_and_flat_memory(runtime_bundle, tmp_path):
    """4 minutes of audio (a sound every ~5 s, learning a class every minute) in a fresh process."""
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "4", "--every", "5",
                        "--learn-every", "1", "--sample-every", "15", "--warmup", "60", "--bundle", str(runtime_bundle), "--json",
                        str(out)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["sounds_known"] >= 35 and len(res["learned"]) >= 6
    assert res["exact"] == res["sounds_known"] and res["stray_events"] == 0, res  # one right event per sound
    assert res["windows_quiet"] > 0.5 * res["windows_seen"]
    assert res["rss_growth_after_warmup_mb"] is not None and res["rss_growth_after_warmup_mb"] < 5.0, res["samples"]


def test_pinning_the_mmap_threshold_is_accepted_on_glibc_and_checks_its_argument():
    """runtime/memory.py: LiveSession fixes glibc's mmap threshold (the soak's memory steps); bad sizes are refused."""
    import platform

    from edge_pace.runtime.memory import pin_mmap_threshold

    if platform.libc_ver()[0] == "glibc":
        assert pin_mmap_threshold() is True
    for bad in (0, -1, 1 << 26, 1.5, True):
        with pytest.raises(ValueError, match="nbytes"):
            pin_mmap_threshold(bad)
