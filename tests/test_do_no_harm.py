"""Do-no-harm FSA (issue 12, method/harm.py): held-out-class validation, fallback to the frozen backbone bit for bit,
N_stop counted from session 0, one-class MSA sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_pace.method.checkpoint import load_checkpoint, save_checkpoint
from edge_pace.method.harm import holdout_split
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
    assert [c["epoch"] for c in a["curve"]] == [1, 2]  # evaluated after every epoch
    assert acc["adapted"] == max(c["accuracy"] for c in a["curve"]) and a["epoch"] in (1, 2)
    assert a["kept"] == (acc["adapted"] > acc["frozen"])  # strictly better, margin 0
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


pytestmark = pytest.mark.usefixtures("one_torch_thread")
