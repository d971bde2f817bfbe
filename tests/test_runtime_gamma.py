"""The device chooses its own gamma (runtime/gamma.py through Learner) on a real bundle and real audio: the
same rule as the server, exact refactorisation, pinning, and states saved before and after the rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_pace.runtime import bundle as B
from edge_pace.runtime.analytic import joint_ridge
from edge_pace.runtime.gamma import select_gamma
from edge_pace.runtime.learner import Learner
from edge_pace.runtime.state import read_state, state_to_bytes

SR = 44100


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _joint(lrn):
    c = lrn.classifier
    Z = np.vstack([np.vstack(c.features[k]) for k in c.classes])
    y = np.concatenate([np.full(sum(len(f) for f in c.features[k]), i) for i, k in enumerate(c.classes)])
    return joint_ridge(Z, y, len(c.classes), c.gamma)


def test_frozen_bundle_ships_a_chosen_prior_not_a_bare_one(runtime_bundle):
    m = B.open_bundle(runtime_bundle).manifest
    assert m["gamma_prior"] == m["gamma"] != 1.0
    assert m["calibration"]["clips"] > 200 and m["calibration"]["gamma_search"]["source"] == "loo"
    assert m["projection"]["standardized"] is True and len(set(m["projection"]["scale"])) == 1  # "scalar"


def test_device_rechooses_gamma_with_the_shared_rule_and_stays_exact(bundle, real_sounds):
    lrn = Learner.load(bundle, state=False)
    prior = lrn.gamma
    lrn.learn(real_sounds["sine"][0], "sine", sample_rate=SR)
    lrn.learn(real_sounds["square"][0], "square", sample_rate=SR)
    assert lrn.gamma == prior and lrn.gamma_search.source == "prior"  # one clip per class: too few
    for c in ("sine", "square", "pluck"):
        lrn.learn_many(real_sounds[c][1:4], c, sample_rate=SR)
    found = lrn.gamma_search
    assert found.source == "loo" and lrn.gamma == found.gamma
    Z, labels, groups = lrn.classifier.stored()
    assert select_gamma(Z, labels, groups).gamma == lrn.gamma  # the very function the server calls
    assert _rel(lrn.classifier.W, _joint(lrn)) <= 1e-9  # refactorised exactly at the new gamma
    lrn.learn(real_sounds["pluck"][4], "pluck", sample_rate=SR)  # +1 clip of 9: below the 25 % growth
    assert lrn.gamma_search is found and _rel(lrn.classifier.W, _joint(lrn)) <= 1e-9  # recursive = joint


def test_pinned_gamma_survives_learning_and_saving(bundle, real_sounds):
    lrn = Learner.load(bundle, gamma=123.0)
    for c in ("sine", "square"):
        lrn.learn_many(real_sounds[c][:3], c, sample_rate=SR)
    assert lrn.gamma == 123.0 and lrn.choose_gamma() is None
    lrn.save()
    again = Learner.load(bundle)
    assert again.gamma == 123.0 and again.gamma_rule.pinned == 123.0
    again.pin_gamma(None)  # back to automatic: re-chosen at once
    assert again.gamma != 123.0 and again.gamma_search.source == "loo"
    with pytest.raises(ValueError, match="gamma"):
        Learner.load(bundle, gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        again.pin_gamma(float("nan"))


def test_state_saved_before_the_rule_loads_and_is_rechosen(bundle, real_sounds):
    lrn = Learner.load(bundle, gamma=1.0)
    for c in ("sine", "square"):
        lrn.learn_many(real_sounds[c][:3], c, sample_rate=SR)
    meta = {k: v for k, v in lrn.state_metadata().items() if not k.startswith("gamma_")}
    (bundle / "state.safetensors").write_bytes(state_to_bytes(lrn.classifier, meta))  # an older runtime's file
    old = Learner.load(bundle)
    assert old.gamma == 1.0 and old.gamma_rule.pinned is None  # loads as saved, rule on (documented default)
    old.learn(real_sounds["pluck"][0], "pluck", sample_rate=SR)  # the next change re-chooses
    assert old.gamma != 1.0 and old.gamma_search.source == "loo"
    old.save()
    _, saved = read_state((bundle / "state.safetensors").read_bytes())
    assert saved["gamma_mode"] == "auto" and float(saved["gamma"]) == old.gamma
