"""Property-based tests (hypothesis) of the device runtime's public API and CLI under bad input: random shapes,
dtypes, sample rates, lengths (0 samples to hours, the long ones through zero-copy strided arrays), NaN/Inf,
clipped, silent and denormal audio, random bytes posing as WAV files, mutated state files and manifests, random
chunkings of a stream, random feature matrices and labels. Each call must end in a result that equals the
documented computation or in a documented error (AudioError/ValueError/TypeError/StateError/BundleError with a
message), never another exception, a hang (a deadline per example), or a changed state after an error.

Run ``pytest tests/test_properties.py --hypothesis-show-statistics`` to see the cases tried per test."""

from __future__ import annotations

import io
import json
import re
import struct
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from edge_pace.runtime import bundle as B
from edge_pace.runtime.analytic import AnalyticClassifier, joint_ridge
from edge_pace.runtime.audio import MAX_RATE, MIN_RATE, AudioError
from edge_pace.runtime.audio import level_dbfs
from edge_pace.runtime.learner import Learner, check_label
from edge_pace.runtime.state import StateError, read_state, state_to_bytes
from edge_pace.runtime.unknown import UNKNOWN

from conftest import link_bundle

SR = 44100
COMMON = dict(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large], deadline=timedelta(seconds=20), derandomize=True,
              print_blob=True)
ERRORS = (AudioError, ValueError, TypeError)


@pytest.fixture(scope="module")
def learner(runtime_bundle, real_sounds) -> Learner:
    lrn = Learner.load(runtime_bundle, state=False)
    lrn.learn_many(real_sounds["sine"][:2], "sine", sample_rate=SR)
    lrn.learn_many(real_sounds["speech"][:2], "speech", sample_rate=SR)
    return lrn


def _snapshot(lrn: Learner):
    c = lrn.classifier
    return (lrn.version, c.W.copy(), c.factors()[0].copy(), list(c.classes), list(c.counts))


def _same(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3:] == b[3:]


# ---------------------------------------------------------------------------------------------- arrays
# Categorical choices come from a numpy generator seeded by hypothesis, with stated probabilities, so that about
# half of the cases reach the embedder and the classifier (hypothesis' own choices favour the edges).
DTYPES = {"float32": 5, "float64": 2, "int16": 2, "float16": 1, "int32": 1, "int64": 0.4, "uint8": 0.4, "bool": 0.4,
          "complex64": 0.4, "str": 0.4}
CONTENT = {"sound": 8, "clipped": 2, "loud": 2, "dc": 1, "silence": 1, "quiet": 1, "denormal": 1, "nan": 1, "inf": 1,
           "huge": 1}
SHAPES = {"1d": 10, "frames": 2, "channels": 2, "3d": 0.5, "scalar": 0.5, "list": 1}
RATES = {8000: 1, 16000: 3, 22050: 1, 44100: 10, 48000: 1, 96000: 1, 44100.0: 1, "np16000": 1, "random int": 1,
         44100.5: 0.4, None: 0.4, "44100": 0.4, True: 0.4, 0: 0.4, 1e15: 0.4}
LABELS = {"sine": 6, "speech": 4, "new class": 1, "unknown": 1, "": 1, 3: 1}


def _pick(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    p = np.array(list(weights.values()), float)
    return keys[rng.choice(len(keys), p=p / p.sum())]


@st.composite
def audio_case(draw, sounds):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rate = _pick(rng, RATES)
    if rate == "np16000":
        rate = np.int64(16000)
    elif rate == "random int":
        rate = int(rng.integers(-10, 3_000_000))
    ok_rate = (not isinstance(rate, (bool, str)) and rate is not None and float(rate).is_integer()
               and MIN_RATE <= rate <= MAX_RATE)
    r = int(rate) if ok_rate else SR
    u = rng.random()
    n = int(rng.integers(0, 400)) if u < 0.1 else int(rng.integers(0, int(0.2 * r))) if u < 0.2 else \
        int(rng.integers(int(0.17 * r), int(2.2 * r)))
    content = _pick(rng, CONTENT)
    if content == "sound":
        src = sounds[rng.integers(len(sounds))]
        x = np.resize(src, n) * rng.uniform(0.05, 1.0)
    elif content == "silence":
        x = np.zeros(n)
    elif content == "quiet":
        x = rng.standard_normal(n) * 1e-4
    elif content == "clipped":
        x = np.clip(np.resize(sounds[0], n) * 50, -1, 1)
    elif content == "loud":
        x = np.resize(sounds[1], n) * 1e4  # far beyond [-1, 1]: the gate sees it, the embedder normalises it
    elif content == "dc":
        x = np.full(n, 0.5)
    elif content == "denormal":
        x = np.full(n, 1e-40)
    elif content == "huge":
        x = np.full(n, 1e39)
    else:
        x = rng.standard_normal(n) * 0.1
        if n:
            x[rng.integers(n)] = np.nan if content == "nan" else -np.inf
    dtype = _pick(rng, DTYPES)
    if dtype in ("int16", "int32", "int64", "uint8"):
        info = np.iinfo(dtype)
        with np.errstate(all="ignore"):
            a = np.clip(np.nan_to_num(x, posinf=1, neginf=-1) * info.max, info.min, info.max).astype(dtype)
    elif dtype == "str":
        a = x.astype(str)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            a = x.astype(dtype)
    shape = _pick(rng, SHAPES)
    ch = int(rng.integers(1, 11))
    if shape == "frames":
        a = np.repeat(a[:, None], ch, axis=1)
    elif shape == "channels":
        a = np.repeat(a[None, :], ch, axis=0)
    elif shape == "3d":
        a = a.reshape(1, 1, -1)
    elif shape == "scalar":
        a = np.asarray(a[0] if len(a) else 0.0)
    elif shape == "list" and n <= 4000:
        a = a.tolist()  # python numbers: ints become int64, floats float64
        dtype = {"int16": "int64", "int32": "int64", "float16": "float64", "float32": "float64"}.get(dtype, dtype)
    label = _pick(rng, LABELS)
    return a, rate, label, dict(rate_ok=ok_rate, content=content, dtype=dtype, shape=shape, ch=ch, n=n)


def _contract_errors(info) -> list[str]:
    """The documented errors this input must raise (any one of them when several apply; empty: none must)."""
    out = []
    if not info["rate_ok"]:
        out.append("sample_rate")
    if info["dtype"] in ("int64", "uint8", "bool", "complex64", "str"):
        out.append("expected float")
    if info["shape"] in ("3d", "scalar"):
        out.append("1-D")
    if info["shape"] in ("frames", "channels") and info["ch"] > 8 and info["n"] > 8:
        out.append("<= 8 channels")
    if info["n"] == 0:
        out.append("empty")
    if info["content"] in ("nan", "inf") and info["dtype"].startswith("float") and info["n"]:
        out.append("NaN or Inf")
    if info["content"] == "huge" and info["n"]:
        out.append("do not fit float32" if info["dtype"] == "float64" else "NaN or Inf")  # 1e39 is inf in float32
    return out


@settings(max_examples=160, **COMMON)
@given(data=st.data())
def test_learn_and_predict_end_in_the_documented_result_or_error(learner, real_sounds, data):
    sounds = [real_sounds["sine"][4], real_sounds["speech"][4], real_sounds["noise"][0], real_sounds["pluck"][5]]
    a, rate, label, info = data.draw(audio_case(sounds))
    want = _contract_errors(info)
    before = _snapshot(learner)
    try:
        learner.learn(a, label, sample_rate=rate)
        learned = True
    except ERRORS as exc:
        learned = False
        event(f"learn: {type(exc).__name__}: " + re.sub(r"[0-9.]+", "#", str(exc).split(": ")[-1])[:40])
        assert str(exc) and _same(before, _snapshot(learner)), f"state changed after {exc!r}"
        if want and label in ("sine", "speech", "new class"):
            assert any(w in str(exc) for w in want), (want, str(exc))
    if learned:
        event("learn: learned")
        assert not want, f"accepted input that must raise ({want}): {info}"
        assert label in ("sine", "speech", "new class") and learner.version == before[0] + 1
        w, lv = learner.windows(a, rate)  # the documented computation: every window at or above the gate
        added = dict(zip(learner.classifier.classes, learner.classifier.counts))[label] - \
            dict(zip(before[3], before[4])).get(label, 0)
        assert added == int(np.sum(lv >= learner.gate_dbfs)) > 0
    before = _snapshot(learner)
    try:
        s = learner.predict_proba(a, rate)
    except ERRORS as exc:
        assert any(w in str(exc) for w in want) or (not want and "too short" in str(exc)), (info, exc)
        assert _same(before, _snapshot(learner))
        return
    assert not want, f"predict accepted input that must raise ({want}): {info}"
    assert s.label in learner.classes + [UNKNOWN] and np.isfinite(s.score)
    assert abs(sum(s.values()) - 1) < 1e-9 and all(np.isfinite(list(s.values())))
    w, lv = learner.windows(a, rate)
    active = lv >= learner.gate_dbfs
    if not active.any():
        assert s.quiet and s.label == UNKNOWN
    else:  # the answer equals the documented computation (framing + gate + mean ridge score)
        ridge = (learner.embedder(w[active]).astype(np.float64) @ learner._view.W).mean(0)
        assert np.allclose(list(s.ridge.values()), ridge, rtol=1e-4, atol=1e-4)
    assert _same(before, _snapshot(learner))


@settings(max_examples=25, **COMMON)
@given(seconds=st.floats(600.5, 10 * 3600), kind=st.sampled_from(["zeros", "const"]),
       rate=st.sampled_from([8000, 16000, 44100, 48000]), channels=st.sampled_from([0, 2]))
def test_clips_beyond_the_limit_are_refused_in_bounded_time_and_memory(learner, seconds, kind, rate, channels):
    n = int(seconds * rate)
    base = np.zeros(1, np.float32) if kind == "zeros" else np.full(1, 0.5, np.float32)
    a = np.lib.stride_tricks.as_strided(base, shape=(n,), strides=(0,))  # hours of samples in 4 bytes
    if channels:
        a = np.lib.stride_tricks.as_strided(base, shape=(n, channels), strides=(0, 0))
    before = _snapshot(learner)
    tracemalloc.start()
    t = time.perf_counter()
    for call in (lambda: learner.learn(a, "sine", sample_rate=rate), lambda: learner.predict(a, rate),
                 lambda: learner.embed(a, rate)):
        with pytest.raises(AudioError, match=r"longer than the 600 s limit"):
            call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t < 2.0 and peak < 1 << 20  # refused before any conversion
    assert _same(before, _snapshot(learner))


def test_hours_streamed_in_one_chunk_cost_bounded_memory_and_linear_time(learner):
    hours = 1.0
    n = int(hours * 3600 * SR)
    zeros = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(n,), strides=(0,))
    st_ = learner.stream(SR)
    tracemalloc.start()
    t = time.perf_counter()
    events = st_.feed(zeros) + st_.flush()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert events == [] and st_.windows_seen == st_.windows_quiet == (n - learner.window) // learner.hop + 1
    assert peak < 8 << 20, peak  # a few slices and windows, not the 635 MB of float32 an hour is
    assert seconds < 120, seconds  # ~0.3 % of real time here; linear in the length
    rate16 = learner.stream(16000)  # through the resampler too (10 minutes)
    n16 = 600 * 16000
    assert rate16.feed(np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(n16,), strides=(0,))) == []
    assert rate16.windows_seen == rate16.windows_quiet >= 1195


# ---------------------------------------------------------------------------------------------- files
def _wav_header(n_bytes: int, rate: int = 16000, channels: int = 1, bits: int = 16) -> bytes:
    return (b"RIFF" + struct.pack("<I", min(36 + n_bytes, 0xFFFFFFFF)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            rate * channels * bits // 8, channels * bits // 8, bits) + b"data" + struct.pack("<I", n_bytes))


@settings(max_examples=40, **COMMON)
@given(body=st.binary(min_size=0, max_size=6000), header=st.sampled_from(["none", "wav", "wav-huge", "flac-magic"]),
       rate=st.sampled_from([1, 8000, 44100, 2_000_000]), channels=st.sampled_from([1, 2, 300]))
def test_random_bytes_posing_as_audio_files(learner, tmp_path_factory, body, header, rate, channels):
    path = tmp_path_factory.mktemp("bytes") / "clip.wav"
    prefix = {"none": b"", "flac-magic": b"fLaC", "wav": _wav_header(len(body), rate, channels),
              "wav-huge": _wav_header(0xFFFFFFF0, rate, channels)}[header]
    path.write_bytes(prefix + body)
    before = _snapshot(learner)
    try:
        learner.learn(path, "sine")
        assert learner.version == before[0] + 1  # decodable after all: learned like any clip
    except AudioError as exc:
        assert str(path) in str(exc) or "audio" in str(exc), str(exc)
        assert _same(before, _snapshot(learner))
    before = _snapshot(learner)
    try:
        s = learner.predict_proba(str(path))
        assert s.label in learner.classes + [UNKNOWN]
    except AudioError as exc:
        assert str(path) in str(exc) or "audio" in str(exc), str(exc)
    assert _same(before, _snapshot(learner))


@pytest.fixture(scope="module")
def cli_bundle(runtime_bundle, tmp_path_factory) -> Path:
    return link_bundle(runtime_bundle, tmp_path_factory.mktemp("cli") / "bundle")


@pytest.fixture(scope="module")
def file_pool(real_sounds, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pool")
    pool = {}
    sf.write(d / "sine.wav", real_sounds["sine"][0], SR)
    sf.write(d / "speech16k.flac", real_sounds["speech"][0][::3], 14700)
    sf.write(d / "silence.wav", np.zeros(SR, np.float32), SR)
    sf.write(d / "short.wav", real_sounds["sine"][1][:1000], SR)
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (d / "header_only.wav").write_bytes(_wav_header(0))
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio at all")
    (d / "folder.wav").mkdir()
    for p in d.iterdir():
        pool[p.name] = p
    pool["missing.wav"] = d / "missing.wav"
    return pool


@settings(max_examples=12, **COMMON)
@given(names=st.lists(st.sampled_from(["sine.wav", "speech16k.flac", "silence.wav", "short.wav", "random.wav",
                                       "header_only.wav", "empty.wav", "text.wav", "folder.wav", "missing.wav"]),
                      min_size=1, max_size=3),
       label=st.sampled_from(["beep", "unknown", " ", "x" * 300, "clé ✓"]))
def test_cli_learn_and_predict_with_random_files(cli_bundle, file_pool, names, label):
    from typer.testing import CliRunner

    from edge_pace.cli import app

    runner = CliRunner()
    state = cli_bundle / B.STATE
    before = state.read_bytes() if state.exists() else None
    files = [str(file_pool[n]) for n in names]
    r = runner.invoke(app, ["learn", str(cli_bundle), label, *files])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if r.exit_code != 0:
        assert r.exit_code == 2 and "error:" in r.output and "nothing was learned" in r.output, r.output
        assert (state.read_bytes() if state.exists() else None) == before  # nothing saved after an error
    else:
        assert set(names) <= {"sine.wav", "speech16k.flac"} and state.exists()
    r = runner.invoke(app, ["predict", str(cli_bundle), *files, "--json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 1, 2) and "Traceback" not in r.output
    if state.exists() and r.exit_code in (0, 1):
        rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
        assert len(rows) == len(files) and (r.exit_code == 1) == any("error" in row for row in rows)


# ---------------------------------------------------------------------------------------------- state and bundle
@pytest.fixture(scope="module")
def state_bytes(learner) -> bytes:
    return state_to_bytes(learner.classifier, learner.state_metadata())


@settings(max_examples=250, **COMMON)
@given(data=st.data())
def test_mutated_state_files_are_refused_with_a_state_error(state_bytes, data):
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "random"]))
    b = bytearray(state_bytes)
    if kind == "random":
        b = bytearray(data.draw(st.binary(max_size=2000)))
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        i = data.draw(st.integers(0, len(b) - 1))
        if kind == "flip":
            b[i] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            new = data.draw(st.binary(min_size=1, max_size=64))
            assume(bytes(b[i : i + len(new)]) != new[: len(b) - i])
            b[i : i + len(new)] = new
    with pytest.raises(StateError, match=r"^state\.safetensors: "):
        read_state(bytes(b), "state.safetensors")


MANIFEST_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                            st.text(max_size=20), st.lists(st.integers(), max_size=3),
                            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@settings(max_examples=60, **COMMON)
@given(key=st.sampled_from(["sample_rate", "window_seconds", "hop_seconds", "feature_dim", "labels", "files",
                            "min_samples", "format", "format_version", "new_key"]), value=MANIFEST_VALUES,
       file_field=st.sampled_from([None, "sha256", "bytes", "name"]))
def test_mutated_manifests_are_refused_with_a_bundle_error_or_load(runtime_bundle, tmp_path_factory, key, value,
                                                                    file_field):
    m = json.loads((runtime_bundle / B.MANIFEST).read_text())
    if file_field is None:
        m[key] = value
    elif file_field == "name":
        m["files"] = {**m["files"], str(value): m["files"][B.CLASSIFIER]}
    else:
        m["files"][B.CLASSIFIER] = {**m["files"][B.CLASSIFIER], file_field: value}
    d = tmp_path_factory.mktemp("manifest")
    for f in runtime_bundle.iterdir():
        if f.is_file() and not f.name.startswith("state"):
            (d / f.name).symlink_to(f)
    (d / B.MANIFEST).unlink()
    (d / B.MANIFEST).write_text(json.dumps(m))  # NaN is written as NaN, as Python's json does
    try:
        b = B.open_bundle(d, verify=True)
    except B.BundleError as exc:
        assert str(exc).startswith(f"{d}: ")
        return
    assert b.manifest["format_version"] == B.BUNDLE_VERSION  # accepted: every checked field is valid


# ---------------------------------------------------------------------------------------------- stream
@settings(max_examples=20, **COMMON)
@given(data=st.data())
def test_stream_events_do_not_depend_on_chunking_and_bad_chunks_are_not_consumed(learner, real_sounds, data):
    pieces = data.draw(st.lists(st.sampled_from(["sine", "speech", "gap", "short gap", "noise"]), min_size=1,
                                max_size=4))
    parts = []
    for p in pieces:
        if p in ("gap", "short gap"):
            parts.append(np.zeros(int((0.9 if p == "gap" else 0.2) * SR), np.float32))
        else:
            parts.append(real_sounds[p][-1] * 0.5)
    x = np.concatenate(parts + [np.zeros(SR // 2, np.float32)])
    ref = learner.stream(SR)
    expected = ref.feed(x) + ref.flush()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(x)), max_size=12)))
    st_ = learner.stream(SR)
    events, prev = [], 0
    for c in cuts + [len(x)]:
        events += st_.feed(x[prev:c])
        bad = data.draw(st.sampled_from([None, "nan", "3d", "int64", "ragged"]))
        if bad:
            chunk = {"nan": np.full(7, np.nan, np.float32), "3d": np.zeros((1, 2, 3), np.float32),
                     "int64": np.zeros(5, np.int64), "ragged": [[0.0, 1.0], [0.0]]}[bad]
            n = st_.samples_in
            with pytest.raises(AudioError):
                st_.feed(chunk)
            assert st_.samples_in == n
        prev = c
    assert events + st_.flush() == expected


# ---------------------------------------------------------------------------------------------- classifier
@settings(max_examples=120, **COMMON)
@given(n=st.integers(0, 40), d=st.sampled_from([3, 8]), dtype=st.sampled_from(["float64", "float32", "int64", "bool"]),
       bad=st.sampled_from([None, "nan", "inf", "shape", "labels", "groups"]), seed=st.integers(0, 1000))
def test_classifier_learn_gives_the_joint_ridge_solution_or_an_error(n, d, dtype, bad, seed):
    rng = np.random.default_rng(seed)
    clf = AnalyticClassifier(8, gamma=0.5)
    base = np.abs(rng.standard_normal((10, 8)))
    clf.learn(base, [f"c{i % 2}" for i in range(10)])
    W0, R0 = clf.W.copy(), clf.R.copy()
    Z = np.abs(rng.standard_normal((n, d))).astype(dtype)
    labels = [f"c{i % 3}" for i in range(n)]
    groups = None
    if bad in ("nan", "inf") and n and np.issubdtype(Z.dtype, np.floating):
        Z[rng.integers(n), rng.integers(d)] = np.nan if bad == "nan" else np.inf
    elif bad == "shape":
        Z = Z.reshape(1, 1, -1) if n else Z[None]
    elif bad == "labels":
        labels = labels[:-1] if n else ["x"]
    elif bad == "groups":
        groups = [0] * n  # one clip with mixed labels (valid only when n < 2)
    try:
        clf.learn(Z, labels, groups=groups)
    except (ValueError, TypeError) as exc:
        assert str(exc) and np.array_equal(clf.W, W0) and np.array_equal(clf.R, R0)
        return
    assert d == 8 and dtype.startswith("float") and Z.shape == (n, 8)
    assert bad is None or (bad == "groups" and n < 2) or (bad in ("nan", "inf") and n == 0)
    allZ = np.vstack([base, Z.astype(np.float64)])
    y = [clf.classes.index(c) for c in [f"c{i % 2}" for i in range(10)] + labels]
    assert np.allclose(clf.W, joint_ridge(allZ, y, len(clf.classes), 0.5), rtol=1e-8, atol=1e-10)


@settings(max_examples=150, **COMMON)
@given(labels=st.lists(st.text(min_size=0, max_size=30) | st.sampled_from(["\ud800x", "a\x00b", "UNKNOWN ", "é" * 200]),
                       min_size=1, max_size=4))
def test_any_accepted_label_survives_a_save_and_load(labels):
    clf = AnalyticClassifier(4)
    ok = []
    for lb in labels:
        try:
            ok.append(check_label(lb))
        except (TypeError, ValueError) as exc:
            assert "label" in str(exc) or "reserved" in str(exc)
            assert not lb.strip() or lb.strip().lower() == UNKNOWN
    ok = list(dict.fromkeys(ok))
    if not ok:
        return
    clf.learn(np.abs(np.random.default_rng(0).standard_normal((len(ok), 4))) + 0.1, ok)
    back, _ = read_state(state_to_bytes(clf), "s")
    assert back.classes == ok and np.array_equal(back.W, clf.W)


def test_wav_files_of_silence_longer_than_the_limit_are_refused_before_decoding(learner, tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros(11 * 60 * 8000, np.int16), 8000)  # 11 minutes of silence compress to a few kB
    assert path.stat().st_size < 200_000
    for call in (lambda: learner.learn(path, "sine"), lambda: learner.predict(path)):
        with pytest.raises(AudioError, match=r"660\.0 s of audio is longer than the 600 s limit"):
            call()
    buf = io.BytesIO()
    sf.write(buf, np.zeros(100, np.int16), 8000, format="WAV")
    assert buf.getvalue()[:4] == b"RIFF"
