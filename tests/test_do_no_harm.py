"""Do-no-harm FSA (issue 12, method/harm.py): held-out-class validation (two folds, paired ridge-margin tie-break),
L_tune chosen on the held-out classes, the cached frozen blocks, fallback to the frozen backbone bit for bit, N_stop
counted from session 0, one-class MSA sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_pace.method.checkpoint import load_checkpoint, save_checkpoint
from edge_pace.method.fsa import advance, stem_activations, stem_bank
from edge_pace.method.harm import better, critical_z, held_out_score, holdout_split, mcnemar_z, paired_z
from edge_pace.method.lora import lora_layers
from edge_pace.method.pace import PaceLearner
from tests.test_pace import _tiny_config, _tiny_model, _tones


def test_holdout_split_is_seeded_and_keeps_both_sides() -> None:
    labels = [f"c{i % 6}" for i in range(24)]
    a = holdout_split(labels, 1 / 3, torch.Generator().manual_seed(0))
    b = holdout_split(labels, 1 / 3, torch.Generator().manual_seed(0))
    assert a is not None and b is not None and a.held_classes == b.held_classes and torch.equal(a.test, b.test)
    assert len(a.held_classes) == 2 and len(a.adapt_classes) == 4
    assert len(a.train) == 16 and len(a.enrol) == len(a.test) == 4
    assert sorted(torch.cat([a.train, a.enrol, a.test]).tolist()) == list(range(24))
    held = {labels[i] for i in torch.cat([a.enrol, a.test]).tolist()}
    assert held == set(a.held_classes) and not held & {labels[i] for i in a.train.tolist()}
    small = holdout_split(["x", "x", "y", "y", "z", "z"], 0.01, torch.Generator().manual_seed(1))
    assert small is not None and len(small.held_classes) == 1  # at least one class held out
    big = holdout_split(["x", "x", "y", "y", "z", "z"], 0.99, torch.Generator().manual_seed(1))
    assert big is not None and len(big.adapt_classes) == 2  # at least two classes to adapt on
    assert holdout_split(["x", "x", "y", "y"], 1 / 3, torch.Generator()) is None  # one class left to adapt on


def test_held_out_validation_runs_and_is_recorded(tmp_path) -> None:
    cfg = _tiny_config(do_no_harm=True, e0=2, n_stop=100, rho_layer=0.999999)
    learner = PaceLearner(_tiny_model(), cfg)
    m0 = learner.fit_session(0, *_tones(0, n=12))
    a = m0["adaptation"]
    assert a is learner.adaptation and isinstance(a["kept"], bool) and a["reason"]
    assert a["split"]["held_out_classes"] and a["split"]["n_train"] == 8 and a["split"]["n_test"] == 2
    acc = a["held_out_accuracy"]
    assert 0.0 <= acc["frozen"] <= 1.0 and 0.0 <= acc["adapted"] <= 1.0
    assert [c["epoch"] for c in a["curve"]] == [1, 2]  # evaluated after every epoch (L_tune 1: no earlier block)
    assert a["l_tune_cka"] == 1 and {c["l_tune"] for c in a["curve"]} == {1}
    assert acc["adapted"] == max(c["accuracy"] for c in a["curve"]) and a["epoch"] in (1, 2)
    if acc["adapted"] < acc["frozen"]:
        assert not a["kept"]
    else:  # a tie: the paired margin test decides, at 2 standard errors corrected for the 2 epochs tried
        assert a["n_candidates"] == 2 and a["critical_z"] == pytest.approx(2.28, abs=0.01)
        assert a["kept"] == (a["paired_margin_z"] is not None and a["paired_margin_z"] > a["critical_z"])
    assert m0["adapted"] == a["kept"] == bool(lora_layers(learner.backbone)) == (not learner.frozen)
    assert sorted(learner.classes) == ["s0c0", "s0c1", "s0c2"]  # the held-out classes are still learned
    folder = save_checkpoint(learner, tmp_path / "ckpt")
    cfgd = json.loads((folder / "config.json").read_text())
    assert cfgd["adaptation"]["kept"] == a["kept"] and cfgd["adapted"] == a["kept"]
    assert json.loads((folder / "metrics.json").read_text())["adaptation"]["held_out_accuracy"] == acc
    assert load_checkpoint(folder).adaptation == cfgd["adaptation"]


@pytest.mark.parametrize("naive", [False, True])
def test_rejected_adaptation_leaves_the_frozen_backbone_bit_for_bit(naive: bool) -> None:
    """A margin of 1.0 (adapted must beat frozen by more than 100 points) rejects any adaptation."""
    cfg = _tiny_config(do_no_harm=True, holdout_margin=1.0, naive_fsa=naive, e0=2, n_stop=100,
                       lr_backbone=0.5, grad_clip=0.0)
    learner = PaceLearner(_tiny_model(), cfg)
    waves, labels = _tones(0, n=12)
    probe = np.concatenate([waves, _tones(1, seed=3)[0]])
    before = learner.embed(probe)
    state = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    m0 = learner.fit_session(0, waves, labels)
    assert not m0["adapted"] and not m0["adaptation"]["kept"] and "frozen backbone kept" in m0["adaptation"]["reason"]
    assert not lora_layers(learner.backbone) and learner.frozen
    after = learner.backbone.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    np.testing.assert_array_equal(learner.embed(probe), before)
    m1 = learner.fit_session(1, *_tones(1))  # frozen for good: no MSA
    assert not m1["adapted"] and not lora_layers(learner.backbone)
    np.testing.assert_array_equal(learner.embed(probe), before)


def test_two_class_session_0_keeps_the_frozen_backbone() -> None:
    learner = PaceLearner(_tiny_model(), _tiny_config(do_no_harm=True))
    waves, _ = _tones(0)
    m0 = learner.fit_session(0, waves, ["a", "b"] * (len(waves) // 2))
    assert not m0["adapted"] and learner.frozen and not lora_layers(learner.backbone)
    assert "cannot be split" in m0["adaptation"]["reason"]


@pytest.mark.parametrize("n_stop, msa_runs", [(5, False), (6, True)])
def test_n_stop_counts_from_session_0(n_stop: int, msa_runs: bool) -> None:
    """Session 0 has 6 clips: with n_stop 5 it alone exceeds N_stop, so no MSA ever runs; with 6 it does not
    (the paper's sum_{t=0} N_t > N_stop), so session 1 adapts and then (12 > 6) the backbone freezes."""
    learner = PaceLearner(_tiny_model(), _tiny_config(n_stop=n_stop))
    learner.fit_session(0, *_tones(0))
    assert learner.msa_samples_seen == 6 and learner.frozen == (not msa_runs)
    m1 = learner.fit_session(1, *_tones(1))
    assert m1["adapted"] == msa_runs and learner.frozen and learner.msa_samples_seen == 12
    sessions = {a.session for layer in lora_layers(learner.backbone).values() for a in layer.adapters.values()}
    assert sessions == ({0, 1} if msa_runs else {0})


def test_one_class_msa_session_is_skipped_but_counted() -> None:
    learner = PaceLearner(_tiny_model(), _tiny_config(n_stop=100))
    learner.fit_session(0, *_tones(0))
    waves, _ = _tones(1)
    m1 = learner.fit_session(1, waves, ["solo"] * len(waves))
    assert not m1["adapted"] and "one class" in m1["msa_skipped"] and learner.msa_samples_seen == 12
    assert "solo" in learner.classes


def _score(correct, margins) -> dict:
    ok, m = np.asarray(correct, dtype=bool), np.asarray(margins, dtype=float)
    return {"accuracy": float(ok.mean()), "margin": float(m.mean()), "margins": m, "correct": ok}


def test_better_needs_a_significant_paired_gain() -> None:
    rng = np.random.default_rng(0)
    n = 60
    base = rng.uniform(0.2, 0.8, n)
    all_right = np.ones(n, bool)
    frozen = _score(all_right, base)
    one_wrong = all_right.copy()
    one_wrong[0] = False
    assert not better(_score(one_wrong, base + 0.5), frozen)  # lower accuracy loses whatever the margins
    assert better(_score(all_right, base + 0.05 + rng.normal(0, 0.01, n)), frozen)  # tie, margins clearly higher
    noisy = base + rng.normal(0, 0.05, n)
    noisy += 0.001 - (noisy - base).mean()  # higher on average by a hair, far inside the noise
    assert not better(_score(all_right, noisy), frozen) and abs(paired_z(_score(all_right, noisy), frozen)) < 2
    assert not better(_score(all_right, base), frozen)  # identical: no gain
    # one more clip right is not significant (McNemar z 1), ten more are (z 3.2), whatever the margins
    f10 = all_right.copy()
    f10[:10] = False
    f9 = f10.copy()
    f9[0] = True
    assert mcnemar_z(_score(f9, base), _score(f10, base)) == 1.0
    assert not better(_score(f9, base - 1), _score(f10, base))
    assert better(_score(all_right, base - 1), _score(f10, base))
    assert not better(_score(all_right, base - 1), _score(f10, base), acc_margin=0.2)  # must clear the margin
    # best of several candidates: the bar rises (Bonferroni): z 2.3 passes alone, not as the best of 4
    assert critical_z(2.0, 1) == pytest.approx(2.0) and critical_z(2.0, 4) == pytest.approx(2.53, abs=0.01)
    d = rng.normal(0, 1, n)
    d = d - d.mean() + 2.3 * d.std(ddof=1) / np.sqrt(n)  # paired z exactly 2.3
    cand = _score(all_right, base + 0.01 * d)
    assert paired_z(cand, frozen) == pytest.approx(2.3)
    assert better(cand, frozen, n_candidates=1) and not better(cand, frozen, n_candidates=4)


def test_held_out_score_tests_every_held_out_clip_in_two_folds() -> None:
    rng = np.random.default_rng(1)
    labels = [f"c{i % 6}" for i in range(48)]
    centres = rng.normal(size=(6, 32))
    emb = np.stack([centres[int(c[1:])] for c in labels]) + 0.3 * rng.normal(size=(48, 32))
    split = holdout_split(labels, 1 / 3, torch.Generator().manual_seed(0))
    r = held_out_score(emb.astype(np.float32), labels, split, 128, 0, "scalar", 1.0, (0.1, 1.0, 10.0), "mse")
    assert r["n_test"] == len(split.enrol) + len(split.test) == 16 and len(r["margins"]) == 16
    assert r["accuracy"] == 1.0 and r["margin"] > 0 and len(r["gammas"]) == 2
    # margins at given gammas: the same classifier at those gammas (paired comparisons at a common scale)
    same = held_out_score(emb.astype(np.float32), labels, split, 128, 0, "scalar", 1.0, (0.1, 1.0, 10.0), "mse",
                          ref_gammas=r["gammas"])
    np.testing.assert_allclose(same["margins"], r["margins"], rtol=1e-9, atol=1e-12)
    shrunk = held_out_score(emb.astype(np.float32), labels, split, 128, 0, "scalar", 1.0, (0.1, 1.0, 10.0), "mse",
                            ref_gammas=[1e6, 1e6])
    assert shrunk["accuracy"] == r["accuracy"] and shrunk["margin"] < 0.01 * r["margin"]  # scores shrink with gamma


def test_l_tune_is_chosen_on_the_held_out_classes() -> None:
    """rho_layer 1e-9: no block below it, so the probe picks L_tune = 4 (the last block); l_tune_search 1 also tries
    L_tune 3. The curve holds both, and the decision names the best one."""
    cfg = _tiny_config(do_no_harm=True, e0=1, n_stop=100, rho_layer=1e-9, l_tune_search=1)
    learner = PaceLearner(_tiny_model(), cfg)
    m0 = learner.fit_session(0, *_tones(0, n=12))
    a = m0["adaptation"]
    assert a["l_tune_cka"] == 4 and [c["l_tune"] for c in a["curve"]] == [4, 3]
    best = max(a["curve"], key=lambda c: (c["accuracy"], c["margin"]))
    assert a["l_tune"] == best["l_tune"] and a["held_out_accuracy"]["adapted"] == best["accuracy"]
    if a["kept"]:
        assert learner.l_tune == a["l_tune"] and min(
            int(n.split(".")[0].removeprefix("conv_block")) for n in lora_layers(learner.backbone)) == a["l_tune"]


@pytest.mark.parametrize("use_reg", [False, True])
def test_cached_frozen_blocks_train_like_the_whole_backbone(use_reg: bool) -> None:
    """cache_stem runs the frozen blocks below L_tune once. Without L_reg nothing else changes, so the adapted
    features equal those of uncached training; with L_reg the masks are drawn once (not every epoch), so only
    the mechanics are checked. In float32 (amp off): with bfloat16 autocast the uncached run would compute the
    frozen blocks in bfloat16 too, while the cache holds float32 activations."""
    waves, labels = _tones(0, n=12)
    out = {}
    for cache in (False, True):
        cfg = _tiny_config(e0=2, n_stop=0, rho_layer=1e-9, use_boundary_loss=use_reg, cache_stem=cache,
                           lr_backbone=0.2, amp=False)
        learner = PaceLearner(_tiny_model(), cfg)
        m0 = learner.fit_session(0, waves, labels)
        assert m0["adapted"] and learner.l_tune == 4 and ("cache_seconds" in m0) == cache
        out[cache] = learner.embed(waves)
    moved = np.abs(out[False] - PaceLearner(_tiny_model(), _tiny_config()).embed(waves)).max()
    assert moved > 1e-4  # adaptation changed the features
    if not use_reg:
        np.testing.assert_allclose(out[True], out[False], rtol=1e-4, atol=1e-5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_adaptation_that_wrecks_the_features_is_rejected() -> None:
    """A destructive rate (lr 3, no clipping) degrades the features; the held-out check (accuracy, else the paired
    margins) must reject it and leave the pretrained backbone, with no artificial margin."""
    cfg = _tiny_config(do_no_harm=True, e0=2, n_stop=100, rho_layer=0.999999, lr_backbone=3.0, grad_clip=0.0,
                       l_tune_search=0)
    learner = PaceLearner(_tiny_model(), cfg)
    waves, labels = _tones(0, n=12)
    before = learner.embed(waves)
    m0 = learner.fit_session(0, waves, labels)
    a = m0["adaptation"]
    assert not a["kept"] and learner.frozen and not lora_layers(learner.backbone), a["reason"]
    assert a["held_out_accuracy"]["adapted"] < a["held_out_accuracy"]["frozen"] or a["paired_margin_z"] <= 2.0
    assert a["mcnemar_z"] <= a["critical_z"]
    np.testing.assert_array_equal(learner.embed(waves), before)


def test_advanced_activations_equal_the_stem() -> None:
    """The deeper L_tune candidate's cached activations are advanced from the shallower one's (``advance``): equal
    to running the frozen blocks from the start, for the clean clips and the masked copies (same masks)."""
    learner = PaceLearner(_tiny_model(), _tiny_config(amp=False))
    feats = learner.frontend_features(_tones(0, n=6)[0])
    x1 = stem_activations(learner, feats, 1)
    torch.testing.assert_close(advance(learner, x1, 1, 3), stem_activations(learner, feats, 3), rtol=1e-5, atol=1e-6)
    bank1 = stem_bank(learner, feats, 1, torch.Generator().manual_seed(0))
    bank3 = stem_bank(learner, feats, 3, torch.Generator().manual_seed(0))
    assert bank1.shape[:2] == bank3.shape[:2] == (6, 2)
    torch.testing.assert_close(advance(learner, bank1, 1, 3, bank=True), bank3, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("margin_z", [0.0, 2.0])
def test_session_0_features_are_the_final_backbones(margin_z: float) -> None:
    """FSA hands the session its embeddings (the kept candidate's, computed on cached activations while validating
    it, or the pretrained model's when rejected): the classifier's stored features of session 0 must equal what the
    final backbone computes. Six tone classes, L_tune 4 and 3 tried (the deeper one's activations advanced);
    critical z 0 keeps the adaptation here, 2 rejects it."""
    waves = np.concatenate([_tones(0, n=18)[0], _tones(1, n=18)[0]])
    labels = _tones(0, n=18)[1] + _tones(1, n=18)[1]
    cfg = _tiny_config(do_no_harm=True, e0=2, n_stop=100, rho_layer=1e-9, l_tune_search=1, lr_backbone=0.05, seed=2,
                       amp=False, holdout_margin_z=margin_z)
    learner = PaceLearner(_tiny_model(2), cfg)
    m0 = learner.fit_session(0, waves, labels)
    assert m0["adaptation"]["kept"] == (margin_z == 0.0) and "cache_seconds" in m0
    assert sorted({c["l_tune"] for c in m0["adaptation"]["curve"]}) == [3, 4]
    stored = np.concatenate([np.concatenate(learner.classifier.features[c]) for c in learner.classes])
    order = np.concatenate([[i for i, lab in enumerate(labels) if lab == c] for c in learner.classes])
    np.testing.assert_allclose(stored, learner.features(waves[order]), rtol=1e-5, atol=1e-5)
