"""PACE on a multi-branch backbone (issue 16): PACE adapts the trainable branch (aisfx, the first), the speech and
voice branches stay frozen; the classifier's features are the combined, per-branch conditioned embedding; a
checkpoint round-trips and exports to one multi-branch bundle whose ONNX features are the learner's.

Tiny settings (0.5 s clips, a few clips per class, e0 = 1, d_proj 64) on real sox tones and noise; the pretrained
weights come from scripts/setup.sh (these tests skip without them, naming the fetch command).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge_pace import backbones
from edge_pace.method.config import PaceConfig
from edge_pace.method.lora import lora_layers

pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="sox renders the test audio")

COMBO = "aisfx+speech+voice"
HALF = 22050  # 0.5 s at 44.1 kHz (the multi-branch backbone needs 12128 samples)


def _need_weights() -> None:
    for name in ("aisfx", "speech", "voice"):
        if not backbones.weights_present(name):
            pytest.skip(f"{name} weights not in the cache; fetch them with: edge-pace backbones fetch {name}")


def _cfg(**kw) -> PaceConfig:
    # do-no-harm off: on a dozen clips the held-out check would (rightly) keep the frozen backbone, and these
    # tests are about what happens to the branches when PACE does adapt
    base = dict(e0=1, msa_epochs=1, d_proj=64, n_perturb=2, batch_size=8, quiet=True, seed=0, device="cpu",
                do_no_harm=False, lora_rank=2)
    base.update(kw)
    return PaceConfig(**base)


@pytest.fixture(scope="module")
def sessions():
    from sounds import sox_set

    w0, l0 = sox_set(["sine", "square", "noise"], 4, seed=1)
    w1, l1 = sox_set(["pluck", "saw"], 3, seed=2)
    test, lt = sox_set(["sine", "square", "noise", "pluck", "saw"], 1, seed=3)
    cut = lambda w: np.ascontiguousarray(w[:, :HALF])  # noqa: E731
    return (cut(w0), l0), (cut(w1), l1), (cut(test), lt)


@pytest.fixture(scope="module")
def learned(sessions):
    """A PACE learner on aisfx+speech+voice after sessions 0 (FSA) and 1 (MSA), with the frozen branches' state
    before adaptation."""
    from edge_pace.method.pace import PaceLearner

    _need_weights()
    torch.set_num_threads(1)
    learner = PaceLearner(COMBO, _cfg())
    before = {k: v.clone() for k, v in learner.branches.branches[1:].state_dict().items()}
    aisfx_before = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    (w0, l0), (w1, l1), _ = sessions
    m0 = learner.fit_session(0, w0, l0)
    m1 = learner.fit_session(1, w1, l1)
    return learner, before, aisfx_before, m0, m1


def test_pace_adapts_only_the_first_branch(learned, sessions):
    from edge_pace.backbones.branches import MultiBranch

    learner, before, aisfx_before, m0, m1 = learned
    assert isinstance(learner.branches, MultiBranch) and learner.branches.names == ["aisfx", "speech", "voice"]
    assert learner.backbone is learner.branches.branches[0].model  # LoRA added to it lives inside the bundle's model
    assert (learner.embed_dim, learner.feature_in_dim) == (512, 960)
    assert m0["adapted"] and m1["adapted"] and m1.get("subspace")  # FSA in session 0, MSA in session 1
    layers = lora_layers(learner.branches)
    assert layers and all(n.startswith("branches.0.") for n in layers)
    assert {a.session for layer in layers.values() for a in layer.adapters.values()} == {0, 1}
    # the frozen branches: bit for bit the pretrained ones, no gradients
    after = learner.branches.branches[1:].state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in learner.branches.branches[1:].parameters())
    # the trainable branch's base weights (LoRA is beside them) and BatchNorm statistics are unchanged too
    base = {k.replace(".base.", "."): v for k, v in learner.backbone.state_dict().items() if ".adapters." not in k}
    assert base.keys() == aisfx_before.keys() and all(torch.equal(base[k], aisfx_before[k]) for k in base)
    # one classifier over every class, on the combined features
    assert learner.classes == ["sine", "square", "noise", "pluck", "saw"] and learner.classifier.dim == 64
    assert learner.features(sessions[2][0]).shape == (5, 64)


def test_classifier_features_are_the_combined_per_branch_conditioned_embedding(learned, sessions):
    from edge_pace.backbones.branches import branch_stats, frozen_embeddings

    learner, *_ = learned
    (w0, _), _, (test, _) = sessions
    sl = learner.branches.slices()
    proj = learner.projection
    assert proj.in_dim == 960 and proj.standardized
    mean, scale = proj.mean.numpy(), proj.scale.numpy()
    # the frozen branches' statistics are those of their session-0 embeddings, conditioned as a bundle conditions
    # them (z-scored, / sqrt(dim), / weight) -- branch_stats on the combined session-0 embedding
    side = frozen_embeddings(learner.branches, torch.from_numpy(w0)).numpy()
    emb0 = np.concatenate([np.ones((len(w0), 512), np.float32), side], 1)  # the aisfx part does not matter here
    m_ref, s_ref = branch_stats(learner.branches, emb0, mode="scalar")
    for name in ("speech", "voice"):
        np.testing.assert_allclose(mean[sl[name]], m_ref[sl[name]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scale[sl[name]], s_ref[sl[name]], rtol=1e-5)
    # aisfx: its RMS (scalar conditioning), weight 1, mean 0
    assert not mean[sl["aisfx"]].any() and np.ptp(scale[sl["aisfx"]]) == 0
    # z = the projection of [adapted aisfx, speech, voice]
    f = learner.embed(test)
    assert f.shape == (len(test), 960)
    np.testing.assert_allclose(f[:, 512:], frozen_embeddings(learner.branches, torch.from_numpy(test)).numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(learner.features(test), proj.numpy(f), rtol=1e-5, atol=1e-5)
    # gamma by the device's leave-one-clip-out rule, on the combined features (every session)
    assert learned[3]["gamma_search"] and learned[4]["gamma_search"]


def test_checkpoint_round_trip(learned, sessions, tmp_path):
    from edge_pace.method.checkpoint import load_checkpoint, save_checkpoint

    learner, *_ = learned
    _, _, (test, _) = sessions
    ckpt = save_checkpoint(learner, tmp_path / "ckpt")
    assert not (ckpt / "backbone.safetensors").exists()  # every part is rebuilt from its pinned, fetched weights
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["backbone"] == COMBO and cfg["feature_in_dim"] == 960 and cfg["projection"]["in_dim"] == 960
    br = cfg["branches"]
    assert list(br) == ["aisfx", "speech", "voice"] and br["aisfx"]["trainable"] and br["aisfx"]["adapted"]
    assert not br["speech"]["trainable"] and not br["voice"]["adapted"] and br["voice"]["dims"] == [704, 960]
    again = load_checkpoint(ckpt, device="cpu")
    assert again.branches.names == learner.branches.names and again.branches.weights == learner.branches.weights
    assert again.sessions_done == 2 and again.classes == learner.classes
    assert lora_layers(again.branches).keys() == lora_layers(learner.branches).keys()
    np.testing.assert_allclose(again.features(test), learner.features(test), rtol=1e-6, atol=1e-6)
    assert again.predict(test) == learner.predict(test)
    # non-default branch weights travel with the checkpoint
    learner.branches.weights["voice"] = 0.5
    try:
        moved = load_checkpoint(save_checkpoint(learner, tmp_path / "w"), device="cpu")
        assert moved.branches.weights["voice"] == 0.5
    finally:
        learner.branches.weights["voice"] = 4.0


def test_adapt_and_export_a_multi_branch_checkpoint(tmp_path):
    """`edge-pace adapt --backbone aisfx+speech` -> checkpoint -> `edge-pace export --checkpoint` -> one bundle with
    merged LoRA in the aisfx branch; its ONNX features are the learner's (parity tolerance), the device predicts
    what the learner predicts, the manifest shows the adaptation decision and the branches."""
    import onnxruntime as ort

    from edge_pace.cli import app
    from edge_pace.data.loaders import load_dataset, read_clips
    from edge_pace.export.exporter import PARITY_TOLERANCE
    from edge_pace.method.checkpoint import load_checkpoint
    from edge_pace.runtime.bundle import open_bundle
    from edge_pace.runtime.learner import Learner

    try:
        from test_baselines import make_folder_dataset
    except ImportError:  # tests/ imported as a package
        from tests.test_baselines import make_folder_dataset

    _need_weights()
    root = make_folder_dataset(tmp_path / "data", {"train": 3, "test": 1})
    ckpt, out = tmp_path / "ckpt", tmp_path / "bundle"
    tiny = ["--e0", "1", "--set", "n_perturb=1", "--set", "d_proj=64", "--set", "batch_size=4", "--set",
            "lora_rank=2", "--set", "do_no_harm=false", "--duration", "0.5", "--device", "cpu", "--quiet",
            "--threads", "1"]
    res = CliRunner().invoke(app, ["adapt", "--data", str(root), "--kind", "folder", "--backbone", "aisfx+speech",
                                   "--out", str(ckpt), *tiny])
    assert res.exit_code == 0, res.output
    assert "PACE adapts aisfx; speech stay" in res.output.replace("\n", " ")
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = open_bundle(out).manifest
    assert m["backbone"]["name"] == "aisfx+speech" and m["adapted"] is True and m["feature_dim"] == 64
    assert m["adaptation"] is None or "kept" in m["adaptation"]  # do-no-harm off: no held-out decision to record
    br = m["branches"]
    assert list(br) == ["aisfx", "speech"] and br["aisfx"]["trainable"] and br["aisfx"]["adapted"]
    assert not br["speech"]["trainable"] and "44100 -> 16000" in br["speech"]["resampling"]
    assert all(b["parity"]["max_rel"] <= b["parity"]["tolerance"] for b in br.values())
    # what was exported: the aisfx branch with its LoRA merged (weights changed), the speech branch as fetched
    from edge_pace.method.checkpoint import load_adapted_model

    merged = load_adapted_model(ckpt)[0]
    pre_a, pre_s = backbones.load("aisfx")[0].state_dict(), backbones.load("speech")[0].state_dict()
    got_a, got_s = merged.branches[0].model.state_dict(), merged.branches[1].model.state_dict()
    assert got_a.keys() == pre_a.keys() and not lora_layers(merged)
    assert any(not torch.equal(got_a[k], pre_a[k]) for k in pre_a)
    assert all(torch.equal(got_s[k], pre_s[k]) for k in pre_s)
    # the ONNX embedder (LoRA merged) computes the learner's features
    learner = load_checkpoint(ckpt, device="cpu")
    clips, kept = read_clips(load_dataset("folder", root), 44100, duration=0.5)
    z_torch = learner.features(clips)
    sess = ort.InferenceSession(str(out / "embedder.onnx"), providers=["CPUExecutionProvider"])
    z_onnx = sess.run(None, {"wave": clips})[0]
    assert np.abs(z_onnx - z_torch).max() <= PARITY_TOLERANCE * np.abs(z_torch).max()
    device = Learner.load(out, unknown=False)
    assert [device.predict(c, sample_rate=44100)[0] for c in clips] == learner.predict(clips)
    from edge_pace.export.exporter import describe

    assert "PACE-trained, adapted True" in describe(out) and "speech: dims [512, 704]" in describe(out)


def test_a_multi_branch_learner_keeps_the_frozen_backbone_when_do_no_harm_says_so(sessions):
    """With do-no-harm on and nothing to gain, the first branch stays the pretrained one and the learner equals
    the frozen multi-branch classifier (ACIL-style on the same combined features)."""
    from edge_pace.method.pace import PaceLearner

    _need_weights()
    (w0, l0), _, (test, _) = sessions
    learner = PaceLearner("aisfx+speech", _cfg(do_no_harm=True, e0=0))
    m = learner.fit_session(0, w0, l0)
    assert m["adaptation"]["kept"] is False and learner.frozen and not lora_layers(learner.branches)
    assert learner.branch_description()["aisfx"]["adapted"] is False
    assert learner.features(test).shape == (len(test), 64)


def test_do_no_harm_judges_a_multi_branch_backbone_on_the_combined_features(sessions):
    """The held-out check scores what the classifier will use: the frozen arm's recorded held-out margin is the one
    of the combined, per-branch conditioned embedding (aisfx + speech), not of aisfx alone."""
    from edge_pace.method.harm import held_out_score, holdout_split
    from edge_pace.method.pace import PaceLearner

    _need_weights()
    (w0, l0), _, _ = sessions
    cfg = _cfg(do_no_harm=True, e0=1)
    m = PaceLearner("aisfx+speech", cfg).fit_session(0, w0, l0)
    record = m["adaptation"]
    fresh = PaceLearner("aisfx+speech", cfg)  # the pretrained branches
    split = holdout_split(l0, cfg.holdout_fraction, torch.Generator().manual_seed(0))  # session 0's first draw
    assert split.held_classes == record["split"]["held_out_classes"]
    args = (split, cfg.d_proj, cfg.proj_seed, cfg.standardize, cfg.gamma_fallback, cfg.gamma_grid,
            cfg.gamma_criterion)
    combined = held_out_score(fresh._combined(w0).cpu().numpy(), l0, *args, stats=fresh._conditioning)
    alone = held_out_score(fresh._embed(fresh.frontend_features(w0)).cpu().numpy(), l0, *args)
    assert record["held_out_margin"]["frozen"] == pytest.approx(combined["margin"], rel=1e-5, abs=1e-7)
    assert record["held_out_accuracy"]["frozen"] == combined["accuracy"]
    assert abs(alone["margin"] - combined["margin"]) > 1e-4


def test_a_multi_branch_module_without_fetched_weights_stores_every_branch(sessions, tmp_path):
    """Given a MultiBranch module (here randomly initialised), the checkpoint stores every branch's base weights and
    rebuilds the same learner."""
    from edge_pace.backbones.branches import MultiBranch
    from edge_pace.method.checkpoint import load_checkpoint, save_checkpoint
    from edge_pace.method.pace import PaceLearner

    torch.manual_seed(0)
    (w0, l0), _, (test, _) = sessions
    learner = PaceLearner(MultiBranch.from_parts(["aisfx", "speech"], pretrained=False), _cfg(head_epochs=0))
    learner.fit_session(0, w0, l0)
    ckpt = save_checkpoint(learner, tmp_path / "ckpt")
    assert (ckpt / "backbone.safetensors").is_file()
    again = load_checkpoint(ckpt, device="cpu")
    assert again.branches.names == ["aisfx", "speech"] and again.predict(test) == learner.predict(test)
    np.testing.assert_allclose(again.features(test), learner.features(test), rtol=1e-6, atol=1e-6)
