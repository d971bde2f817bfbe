"""Unknown sounds (runtime/openset.py through Learner): background enrolment is exact and never a class, the
sensitivity moves the per-class thresholds in the documented direction, and the CLI exposes both."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from edge_pace.runtime.analytic import BACKGROUND
from edge_pace.runtime.learner import Learner
from edge_pace.runtime.openset import lower_bound
from edge_pace.runtime.unknown import UNKNOWN

SR = 44100


def _learner(bundle, real_sounds, **kw) -> Learner:
    kw.setdefault("openset_min_clips", 0)  # 4 clips per class: force the open-set score (default: from 10 clips)
    lrn = Learner.load(bundle, state=False, gamma=100.0, **kw)  # gamma pinned: comparisons stay exact
    for c in ("sine", "square", "pluck"):
        lrn.learn_many(real_sounds[c][:4], c, sample_rate=SR)
    return lrn


def test_lower_bound_is_the_quantile_or_a_wider_student_t_bound_for_few_values():
    rng = np.random.default_rng(0)
    many, few = rng.standard_normal(5000), rng.standard_normal(4)
    assert lower_bound(many, 0.025) == pytest.approx(np.quantile(many, 0.025), abs=0.1)
    assert lower_bound(few, 0.025) < np.quantile(few, 0.025) - 1.0  # four values: the t bound is far wider
    assert lower_bound(many, 0.01) <= lower_bound(many, 0.05) <= lower_bound(many, 0.2)


def test_sensitivity_moves_every_class_threshold_in_the_documented_direction(runtime_bundle, real_sounds):
    lrn = _learner(runtime_bundle, real_sounds)
    lrn.unknown_quantile = 0.01
    lo = lrn.thresholds()
    lrn.unknown_quantile = 0.2
    hi = lrn.thresholds()
    assert set(lo) == set(hi) == {"sine", "square", "pluck"}
    assert all(lo[c] < hi[c] for c in lo)  # a larger target miss rate: stricter thresholds
    with pytest.raises(ValueError, match="unknown_quantile"):
        Learner.load(runtime_bundle, state=False, unknown_quantile=1.5)


def test_background_is_never_a_class_makes_its_sounds_unknown_and_forgets_exactly(runtime_bundle, real_sounds):
    lrn = _learner(runtime_bundle, real_sounds)
    ref_W = lrn.classifier.W.copy()
    noise = real_sounds["noise"]
    lrn.learn(noise[0], BACKGROUND, sample_rate=SR)
    assert BACKGROUND not in lrn.classes and BACKGROUND not in lrn.counts
    s = lrn.predict_proba(noise[0], SR)
    assert s.label == UNKNOWN and s.background and BACKGROUND not in s
    for c in ("sine", "square", "pluck"):  # known sounds still recognised
        assert lrn.predict_proba(real_sounds[c][4], SR).top == c
    lrn.forget(BACKGROUND)
    assert BACKGROUND not in lrn.classifier.features
    assert np.abs(lrn.classifier.W - ref_W).max() <= 1e-9 * np.abs(ref_W).max()  # equals never having learned it
    with pytest.raises(KeyError, match="unknown class"):
        lrn.forget(BACKGROUND)  # nothing left to forget


def test_cli_background_enrolment_and_sensitivity(bundle_copy, real_sounds, tmp_path):
    for i, c in enumerate(("sine", "square", "sine", "square", "sine", "square")):
        sf.write(tmp_path / f"{c}{i}.wav", real_sounds[c][i // 2], SR)
    sf.write(tmp_path / "noise.wav", real_sounds["noise"][0], SR)

    def cli(*args):
        code = "import sys\nfrom edge_pace.cli import main\nsys.argv = ['edge-pace', *sys.argv[1:]]\nmain()\n"
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    for c in ("sine", "square"):
        r = cli("learn", bundle_copy, c, *sorted(tmp_path.glob(f"{c}*.wav")))
        assert r.returncode == 0, r.stderr[-2000:]
    r = cli("learn", bundle_copy, "--background", tmp_path / "noise.wav")
    assert r.returncode == 0 and "1 background file(s)" in r.stdout, r.stderr[-2000:]
    r = cli("predict", bundle_copy, tmp_path / "noise.wav", tmp_path / "sine0.wav", "--json", "--miss", "0.01")
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert r.returncode == 0 and [row["label"] for row in rows] == ["unknown", "sine"] and rows[0]["background"]
    r = cli("forget", bundle_copy, "--background")
    assert r.returncode == 0 and "forgot the background" in r.stdout, r.stderr[-2000:]
    r = cli("forget", bundle_copy)
    assert r.returncode == 2 and "--background" in r.stderr


def test_leverage_ignores_background_rows_exactly():
    """Background rows lower the class scores near them (all-zero targets) but must not make those windows look
    enrolled: the open-set leverage equals the one of a classifier that never saw the background (Woodbury), and
    the rule stays exact through pending low-rank factors (R = R_base - P^T P)."""
    from edge_pace.runtime.analytic import AnalyticClassifier
    from edge_pace.runtime.openset import calibrate, leverage

    rng = np.random.default_rng(3)
    D = 24
    Z = np.abs(rng.standard_normal((60, D)))
    labels = [f"c{i % 3}" for i in range(60)]
    bg = np.abs(rng.standard_normal((9, D))) + 1.0
    plain = AnalyticClassifier(D, 2.0).learn(Z, labels)
    withbg = AnalyticClassifier(D, 2.0).learn(Z, labels).learn(bg, BACKGROUND)
    R, P = withbg.factors()
    assert len(P)  # pending factors: the rule must fold them in
    model = calibrate(R, withbg.W, withbg.classes, withbg.features, withbg.groups, P)
    probe = np.vstack([bg, np.abs(rng.standard_normal((5, D)))])
    want = leverage(probe, plain.R)
    assert np.abs(model.leverage(probe, R, P) - want).max() <= 1e-9 * want.max()
    assert (leverage(probe[:9], withbg.R) < want[:9] - 1e-3).all()  # what the correction undoes
    ref = calibrate(plain.R, plain.W, plain.classes, plain.features, plain.groups)
    assert model.norm[4:] == pytest.approx(ref.norm[4:], rel=1e-9)  # held-out leverages: the classes' alone


def test_background_audio_is_learned_as_a_stream_meets_it(runtime_bundle, real_sounds):
    """Background clips are learned edge-padded (windows with only their start or end, as a stream holds them),
    and a stream of the background sound with silence between repeats gives no event at all."""
    from edge_pace.runtime.openset import edge_padded

    lrn = _learner(runtime_bundle, real_sounds)
    noise = real_sounds["noise"][0]
    lrn.learn(noise, BACKGROUND, sample_rate=SR)
    mono = lrn.feature_path.audio(noise, SR)
    assert len(np.vstack(lrn.classifier.features[BACKGROUND])) == len(lrn.feature_path.windows(
        edge_padded(mono, lrn.window))) > len(lrn.feature_path.windows(mono))
    gap = np.zeros(SR, np.float32)
    events = lrn.stream(SR).feed(np.concatenate([noise, gap, noise[: SR // 2], gap, noise[SR // 4 :], gap]))
    assert events == []
    assert all(lrn.predict_proba(real_sounds[c][4], SR).label == c for c in ("sine", "square", "pluck"))


def test_default_sensitivity_sits_between_lenient_and_strict_settings(runtime_bundle, real_sounds):
    from edge_pace.runtime.openset import DEFAULT_MISS

    lrn = _learner(runtime_bundle, real_sounds)
    default = lrn.thresholds()
    lrn.unknown_quantile = DEFAULT_MISS
    assert lrn.thresholds() == default
    for lo_q, hi_q in ((0.001, DEFAULT_MISS), (DEFAULT_MISS, 0.5)):
        lrn.unknown_quantile = lo_q
        lo = lrn.thresholds()
        lrn.unknown_quantile = hi_q
        hi = lrn.thresholds()
        assert all(lo[c] < hi[c] for c in lo)
