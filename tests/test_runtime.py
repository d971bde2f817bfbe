"""The on-device learner (runtime/learner.py) on a real exported bundle and real generated audio:
exact classifier math through ONNX Runtime features, exact forgetting, state files, bad input, threads."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import soundfile as sf

from edge_pace.runtime import bundle as B
from edge_pace.runtime.analytic import AnalyticClassifier, joint_ridge, loo_scores
from edge_pace.runtime.audio import AudioError
from edge_pace.runtime.learner import Learner, NotFittedError
from edge_pace.runtime.state import StateError, read_state, save_state
from edge_pace.runtime.unknown import FALLBACK_THRESHOLD, UNKNOWN

SR = 44100
CLASSES = ("sine", "square", "pluck", "speech")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _snapshot(lrn: Learner) -> dict:
    c = lrn.classifier
    return {"R": c.R.copy(), "W": c.W.copy(), "classes": list(c.classes), "counts": list(c.counts),
            "n_features": {k: sum(len(f) for f in v) for k, v in c.features.items()}, "version": lrn.version}


def _assert_same(before: dict, lrn: Learner) -> None:
    after = _snapshot(lrn)
    assert np.array_equal(before["R"], after["R"]) and np.array_equal(before["W"], after["W"])
    assert before["classes"] == after["classes"] and before["counts"] == after["counts"]
    assert before["n_features"] == after["n_features"] and before["version"] == after["version"]


@pytest.fixture(scope="module")
def trained(runtime_bundle, real_sounds) -> Learner:
    """4 classes from 4 shots each (read-only for the tests that use it)."""
    lrn = Learner.load(runtime_bundle, state=False)
    for c in CLASSES:
        lrn.learn_many(real_sounds[c][:4], c, sample_rate=SR)
    return lrn


# ---------------------------------------------------------------------------------------------- the math
def test_learning_equals_the_analytic_classifier_on_the_same_features(runtime_bundle, real_sounds):
    lrn = Learner.load(runtime_bundle, state=False, gamma=B.open_bundle(runtime_bundle).manifest["gamma"])  # pinned
    ref = AnalyticClassifier(lrn.feature_dim, gamma=lrn.classifier.gamma)
    steps = [("sine", real_sounds["sine"][:3]), ("speech", real_sounds["speech"][:2]), ("sine", real_sounds["sine"][3:4])]
    for label, clips in steps:
        lrn.learn_many(clips, label, sample_rate=SR)
        ref.learn(np.vstack([lrn.embed(c, SR) for c in clips]), label)
    lrn.learn(real_sounds["pluck"][0], "pluck", sample_rate=SR)
    ref.learn(lrn.embed(real_sounds["pluck"][0], SR), "pluck")
    c = lrn.classifier
    # same features, same operations: identical up to float64 rounding (in practice bit-identical)
    assert c.classes == ref.classes and c.counts == ref.counts == [4, 2, 1]
    assert _rel(c.R, ref.R) < 1e-12 and _rel(c.W, ref.W) < 1e-12
    # and equal to the joint ridge solution on all data (weight invariance), float64 tolerance
    Z = np.vstack([np.vstack(c.features[k]) for k in c.classes])
    y = np.repeat(np.arange(3), [4, 2, 1])
    assert _rel(c.W, joint_ridge(Z, y, 3, c.gamma)) < 1e-6


def test_forget_returns_the_never_learned_state(runtime_bundle, real_sounds):
    a = Learner.load(runtime_bundle, state=False)
    b = Learner.load(runtime_bundle, state=False)
    for c in ("sine", "square", "pluck"):
        a.learn_many(real_sounds[c][:3], c, sample_rate=SR)
        if c != "square":
            b.learn_many(real_sounds[c][:3], c, sample_rate=SR)
    a.forget("square")
    ca, cb = a.classifier, b.classifier
    assert ca.classes == cb.classes == ["sine", "pluck"] and ca.counts == cb.counts
    assert np.linalg.norm(ca.R - cb.R) / np.linalg.norm(cb.R) < 1e-9
    assert np.linalg.norm(ca.W - cb.W) / np.linalg.norm(cb.W) < 1e-9
    assert set(ca.features) == {"sine", "pluck"}
    with pytest.raises(KeyError, match="unknown class 'square'"):
        a.forget("square")


def test_loo_function_matches_the_classifier_method(trained):
    c = trained.classifier
    direct = loo_scores(c.R, c.W, c.classes, c.features)
    method = c.loo_scores()
    assert direct.keys() == method.keys() == set(CLASSES)
    # brute force for one example: refit without it, score it
    Z = np.vstack(c.features["sine"]).astype(np.float64)
    others = np.vstack([np.vstack(c.features[k]) for k in c.classes if k != "sine"]).astype(np.float64)
    Zall = np.vstack([Z[1:], others])
    y = np.concatenate([np.zeros(len(Z) - 1, int), np.repeat(np.arange(1, 4), [len(np.vstack(c.features[k])) for k in c.classes[1:]])])
    W = joint_ridge(Zall, y, 4, c.gamma)
    assert direct["sine"][0] == pytest.approx(float(Z[0] @ W[:, 0]), rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------------- real audio
def test_few_shot_real_audio_held_out_and_unknown(trained, real_sounds):
    tau = trained.threshold()
    assert 0.3 < tau < 1.0  # calibrated from leave-one-out scores, not the fallback
    accepted = 0
    for c in CLASSES:
        for clip in real_sounds[c][4:]:  # held-out pitches / voices
            s = trained.predict_proba(clip, SR)
            assert s.top == c, f"{c}: predicted {s.top} ({dict(s)})"
            assert s.label in (c, UNKNOWN)
            accepted += s.label == c
            assert s[c] == max(s.values()) and abs(sum(s.values()) - 1) < 1e-9
    # the rule rejects about a quantile (5 %) of genuine sounds by design; with 8 held-out clips allow one
    assert accepted >= 7
    for clip in real_sounds["noise"]:
        label, score = trained.predict(clip, SR)
        assert label == UNKNOWN and score < tau


def test_unknown_rule_switches_fixed_threshold_and_recalibration(runtime_bundle, real_sounds):
    lrn = Learner.load(runtime_bundle, state=False)
    lrn.learn(real_sounds["sine"][0], "sine", sample_rate=SR)
    lrn.learn(real_sounds["square"][0], "square", sample_rate=SR)
    assert lrn.threshold() == FALLBACK_THRESHOLD  # no class has 2 examples yet
    lrn.learn_many(real_sounds["sine"][1:3], "sine", sample_rate=SR)
    lrn.learn_many(real_sounds["square"][1:3], "square", sample_rate=SR)
    tau = lrn.threshold()
    v = lrn._view
    expected = np.quantile(np.concatenate(list(loo_scores(v.R, v.W, list(v.classes), v.features, v.P).values())), 0.05)
    assert tau == pytest.approx(expected, abs=1e-12)
    lrn.learn_many(real_sounds["pluck"][:3], "pluck", sample_rate=SR)
    assert lrn.threshold() != tau  # recomputed for the new state
    noise = real_sounds["noise"][0]
    assert lrn.predict(noise, SR)[0] == UNKNOWN
    lrn.unknown = False
    label, _ = lrn.predict(noise, SR)
    assert label in lrn.classes and lrn.threshold() is None
    lrn.unknown, lrn.unknown_threshold = True, -1e9
    assert lrn.predict(noise, SR)[0] in lrn.classes


def test_predict_before_learning_is_a_clear_error(runtime_bundle, real_sounds):
    lrn = Learner.load(runtime_bundle, state=False)
    with pytest.raises(NotFittedError, match="no class yet"):
        lrn.predict(real_sounds["sine"][0], SR)


# ---------------------------------------------------------------------------------------------- state files
def test_save_load_round_trip_is_exact(bundle_copy, real_sounds):
    lrn = Learner.load(bundle_copy)
    assert lrn.state_origin == B.CLASSIFIER and lrn.classes == []
    for c in ("sine", "speech"):
        lrn.learn_many(real_sounds[c][:3], c, sample_rate=SR)
    path = lrn.save()
    assert path == bundle_copy / B.STATE and not list(bundle_copy.glob(".*.tmp"))
    back = Learner.load(bundle_copy)  # picks the saved state up by default
    assert back.state_origin == str(path)
    a, b = lrn.classifier, back.classifier
    assert np.array_equal(a.R, b.R) and np.array_equal(a.W, b.W)
    assert a.classes == b.classes and a.counts == b.counts and a.gamma == b.gamma
    for k in a.classes:
        assert np.array_equal(np.vstack(a.features[k]), np.vstack(b.features[k]))
    clip = real_sounds["speech"][5]
    assert dict(lrn.predict_proba(clip, SR)) == dict(back.predict_proba(clip, SR))
    assert Learner.load(bundle_copy, state=False).classes == []  # the exported classifier is untouched
    _, meta = read_state(path.read_bytes())
    assert meta["embedder"] == B.EMBEDDER and meta["embedder_sha256"] == lrn.embedder.sha256
    assert meta["feature_dim"] == str(lrn.feature_dim)


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_corrupt_or_mismatched_state_is_refused_whole(bundle_copy, real_sounds, tmp_path):
    lrn = Learner.load(bundle_copy)
    lrn.learn_many(real_sounds["sine"][:2], "sine", sample_rate=SR)
    good = lrn.save().read_bytes()
    state = bundle_copy / B.STATE
    header = 8 + int.from_bytes(good[:8], "little")
    cases = {"tensor byte": lambda: _flip(state, len(good) - 100),
             "metadata byte": lambda: (state.write_bytes(good), _flip(state, good.index(b'sine', 0, header) + 1)),
             "truncated": lambda: state.write_bytes(good[: header + 1000]),
             "empty": lambda: state.write_bytes(b""),
             "garbage": lambda: state.write_bytes(b"not a state at all" * 10)}
    for name, corrupt in cases.items():
        state.write_bytes(good)
        corrupt()
        with pytest.raises(StateError, match="state"):
            Learner.load(bundle_copy)
    state.write_bytes(good)
    # learned with the fp32 embedder: the int8 embedder's features are another space -> refused
    with pytest.raises(StateError, match="learned with features of embedder.onnx"):
        Learner.load(bundle_copy, int8=True)
    # a state of another feature dimension, even claiming the right embedder
    other = AnalyticClassifier(16)
    other.learn(np.abs(np.random.default_rng(0).standard_normal((3, 16))), "x")
    save_state(other, tmp_path / "other.safetensors", {"embedder_sha256": lrn.embedder.sha256})
    with pytest.raises(StateError, match="feature dimension 16"):
        Learner.load(bundle_copy, state=tmp_path / "other.safetensors")
    with pytest.raises(StateError, match="not found"):
        Learner.load(bundle_copy, state=tmp_path / "missing.safetensors")
    assert Learner.load(bundle_copy).classes == ["sine"]  # the good state still loads


def test_bundle_errors_are_clear(bundle_copy, tmp_path):
    m = json.loads((bundle_copy / B.MANIFEST).read_text())
    with pytest.raises(B.BundleError, match="not found"):
        Learner.load(tmp_path / "nope")
    (bundle_copy / B.EMBEDDER).unlink()
    (bundle_copy / B.EMBEDDER).write_bytes(b"x")
    with pytest.raises(B.BundleError, match="embedder.onnx fails its checksum"):
        Learner.load(bundle_copy)
    assert m["files"][B.EMBEDDER]["bytes"] > 1


def test_save_to_a_missing_folder_fails_cleanly(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trained.save(tmp_path / "no" / "state.safetensors")


# ---------------------------------------------------------------------------------------------- input handling
def test_documented_conversions(trained, real_sounds, tmp_path):
    x = real_sounds["sine"][4]
    z = trained.embed(x, SR)
    pcm = np.round(x * 32767).astype(np.int16)
    assert np.allclose(trained.embed(pcm, SR), trained.embed(pcm.astype(np.float32) / 32768, SR))
    assert np.array_equal(trained.embed(x.astype(np.float64), SR), z)
    assert np.array_equal(trained.embed(np.stack([x, x], axis=1), SR), z)  # [samples, channels]
    assert np.array_equal(trained.embed(np.stack([x, x]), SR), z)  # [channels, samples]
    assert np.array_equal(trained.embed([float(v) for v in x], SR), z)  # a list of floats
    # another rate: resampled to the bundle's with soxr (documented), same decision
    import soxr

    x16 = soxr.resample(x, SR, 16000)
    assert trained.predict_proba(x16, 16000).top == "sine"
    # files: decoded at their own rate (espeak-ng writes 22.05 kHz) and resampled
    f = tmp_path / "s.wav"
    sf.write(f, x16, 16000, subtype="FLOAT")
    assert np.array_equal(trained.embed(str(f)), trained.embed(x16, 16000))
    # framing: a short clip is padded to one window; a long one gives windows every hop
    assert trained.embed(x[:8000], SR).shape == (1, trained.feature_dim)
    assert trained.windows(np.tile(x, 3), SR)[0].shape == (5, trained.window)  # 0, .5, 1, 1.5, 2 s
    assert trained.windows(np.tile(x, 3)[: int(2.2 * SR)], SR)[0].shape == (4, trained.window)  # tail window


BAD_AUDIO = {
    "nan": (np.full(SR, np.nan, np.float32), SR, AudioError, "NaN or Inf"),
    "inf": (np.concatenate([np.zeros(SR - 1, np.float32), [np.inf]]).astype(np.float32), SR, AudioError, "NaN or Inf"),
    "empty": (np.zeros(0, np.float32), SR, AudioError, "empty"),
    "too short": (np.ones(4000, np.float32) * 0.1, SR, AudioError, "at least 7168 samples"),
    "too short after resampling": (np.ones(2000, np.float32) * 0.1, 16000, AudioError, "at least 7168 samples"),
    "3-D": (np.zeros((2, 2, SR), np.float32), SR, AudioError, "1-D"),
    "strings": (np.array(["a", "b"]), SR, AudioError, "dtype"),
    "object": (object(), SR, AudioError, "dtype"),
    "int64": (np.zeros(SR, np.int64), SR, AudioError, "int16/int32"),
    "no rate": (np.zeros(SR, np.float32), None, AudioError, "sample_rate is required"),
    "zero rate": (np.zeros(SR, np.float32), 0, AudioError, "positive integer"),
    "fractional rate": (np.zeros(SR, np.float32), 44100.5, AudioError, "positive integer"),
    "string rate": (np.zeros(SR, np.float32), "44100", AudioError, "positive integer"),
    "bool rate": (np.zeros(SR, np.float32), True, AudioError, "positive integer"),
    "silence": (np.zeros(SR, np.float32), SR, AudioError, "below the level gate"),
    "missing file": ("/nonexistent/x.wav", None, AudioError, "cannot decode"),
}


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_raises_and_leaves_state_unchanged(trained, real_sounds, case):
    audio, rate, exc, msg = BAD_AUDIO[case]
    before = _snapshot(trained)
    with pytest.raises(exc, match=msg):
        trained.learn(audio, "sine", sample_rate=rate)
    many_rate = SR if case == "missing file" else rate
    with pytest.raises(exc, match=msg):  # one bad clip among good ones: nothing is learned
        trained.learn_many([real_sounds["sine"][0], audio], ["sine", "sine"], sample_rate=many_rate)
    _assert_same(before, trained)
    if case != "silence":
        with pytest.raises(exc, match=msg):
            trained.predict(audio, rate)


@pytest.mark.parametrize("label,exc,msg", [(None, TypeError, "must be a str"), (3, TypeError, "must be a str"),
                                           ("", ValueError, "non-empty"), ("Unknown", ValueError, "reserved")])
def test_bad_labels_raise_and_leave_state_unchanged(trained, real_sounds, label, exc, msg):
    before = _snapshot(trained)
    with pytest.raises(exc, match=msg):
        trained.learn(real_sounds["sine"][0], label, sample_rate=SR)
    with pytest.raises(exc, match=msg):
        trained.learn_many([real_sounds["sine"][0]] * 2, ["sine", label], sample_rate=SR)
    with pytest.raises(ValueError, match="2 clips but 1 labels"):
        trained.learn_many([real_sounds["sine"][0]] * 2, ["sine"], sample_rate=SR)
    _assert_same(before, trained)


def test_quiet_clip_predicts_unknown(trained):
    s = trained.predict_proba(np.full(SR, 1e-4, np.float32), SR)  # -80 dBFS
    assert s.quiet and s.unknown and s.label == UNKNOWN


def test_settings_validation(runtime_bundle):
    with pytest.raises(ValueError, match="not available"):
        Learner.load(runtime_bundle, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="threads"):
        Learner.load(runtime_bundle, threads=-1)
    with pytest.raises(ValueError, match="unknown_quantile"):
        Learner.load(runtime_bundle, unknown_quantile=2.0)
    lrn = Learner.load(runtime_bundle, threads=2, int8=True, state=False)
    assert lrn.embedder.providers[-1] == "CPUExecutionProvider" and lrn.embedder.name == B.EMBEDDER_INT8


def test_int8_embedder_agrees_with_fp32(runtime_bundle, real_sounds):
    fp, q = Learner.load(runtime_bundle, state=False), Learner.load(runtime_bundle, int8=True, state=False)
    x = np.stack([real_sounds[c][5] for c in CLASSES])
    za, zb = fp.embedder(x), q.embedder(x)
    cos = np.sum(za * zb, 1) / np.linalg.norm(za, axis=1) / np.linalg.norm(zb, axis=1)
    assert cos.min() > 0.95


# ---------------------------------------------------------------------------------------------- threads
def test_predictions_during_learning_are_consistent(runtime_bundle, real_sounds):
    lrn = Learner.load(runtime_bundle, state=False)
    lrn.learn_many(real_sounds["sine"][:2], "sine", sample_rate=SR)
    lrn.learn_many(real_sounds["square"][:2], "square", sample_rate=SR)
    clip = real_sounds["pluck"][5]
    z = lrn.embed(clip, SR).astype(np.float64)
    views = {lrn.version: lrn._view}
    results, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                results.append(lrn.predict_proba(clip, SR))
            except Exception as exc:  # noqa: BLE001 - any exception fails the test
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for c, i in [("pluck", 0), ("sine", 2), ("speech", 0), ("pluck", 1), ("square", 2)]:
            lrn.learn(real_sounds[c][i], c, sample_rate=SR)
            views[lrn.version] = lrn._view
        lrn.forget("speech")
        views[lrn.version] = lrn._view
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results) >= 2
    for s in results:
        v = views[s.version]  # every prediction comes from exactly one published state
        assert list(s.ridge) == list(v.classes)
        assert np.allclose(list(s.ridge.values()), (z @ v.W).mean(0), rtol=1e-9, atol=1e-9)
