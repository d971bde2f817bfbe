"""PaceLearner: L_tune rule, stop rule, MSA subspace, ablations, determinism, checkpoints, real audio."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from edge_pace.backbones.aisfx_cnn import AisfxCNN
from edge_pace.method.checkpoint import CheckpointError, load_adapted_model, load_checkpoint, save_checkpoint
from edge_pace.method.config import PaceConfig
from edge_pace.method.lora import lora_layers, unlearned
from edge_pace.method.pace import PaceLearner, choose_l_tune
from edge_pace.method.subspace import collect_inputs

SR = 44100


def _tiny_config(**kw) -> PaceConfig:
    # do_no_harm off: these tests check the mechanics of adaptation, which a rejected FSA would skip (the
    # do-no-harm tests below switch it on)
    base = dict(e0=1, msa_epochs=1, batch_size=4, n_perturb=2, d_proj=64, quiet=True, lora_rank=2, cka_max_samples=16,
                do_no_harm=False)
    base.update(kw)
    return PaceConfig(**base)


def _tiny_model(seed: int = 0) -> AisfxCNN:
    torch.manual_seed(seed)
    return AisfxCNN(width=4).eval()


def _tones(session: int, n: int = 6, seconds: float = 0.25, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """n clips of 3 classes (tone pitch per class) with random amplitude and noise."""
    rng = np.random.default_rng(seed * 100 + session)
    t = np.arange(int(SR * seconds)) / SR
    waves, labels = [], []
    for i in range(n):
        k = i % 3
        f = 200.0 * (1 + k) * (1 + 0.5 * session)
        waves.append(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t)))
        labels.append(f"s{session}c{k}")
    return np.asarray(waves, dtype=np.float32), labels


# ---- L_tune rule ------------------------------------------------------------------------------------

def test_choose_l_tune_follows_the_papers_indexing() -> None:
    # k* = argmax_k [s_k < rho] (first 0-based block below), L_tune = k* + 1 (1-based)
    assert choose_l_tune([0.99, 0.93, 0.97, 0.90], 0.94) == 2
    assert choose_l_tune([0.90, 0.99, 0.99, 0.99], 0.94) == 1
    assert choose_l_tune([0.99, 0.99, 0.99, 0.50], 0.94) == 4
    assert choose_l_tune([0.99, 0.94, 0.95], 0.94) == 3  # equal is not below; none below -> last block
    with pytest.raises(ValueError):
        choose_l_tune([], 0.94)


# ---- the learner --------------------------------------------------------------------------------------

def test_fsa_adapts_blocks_from_l_tune_and_stop_rule_freezes_at_n_stop() -> None:
    learner = PaceLearner(_tiny_model(), _tiny_config(n_stop=12, rho_layer=0.999999))
    m0 = learner.fit_session(0, *_tones(0))
    assert len(m0["cka"]) == 4 and all(0.0 < s <= 1.0 + 1e-9 for s in m0["cka"])
    assert m0["l_tune"] == choose_l_tune(m0["cka"], 0.999999)
    adapted = {n.split(".")[0] for n in lora_layers(learner.backbone)}
    assert adapted == {f"conv_block{k}" for k in range(m0["l_tune"], 5)}
    assert learner.classifier is not None and sorted(learner.classes) == ["s0c0", "s0c1", "s0c2"]

    assert learner.msa_samples_seen == 6  # N_stop counts from session 0 on
    m1 = learner.fit_session(1, *_tones(1))
    assert m1["adapted"] and learner.msa_samples_seen == 12 and not learner.frozen  # 12 does not exceed n_stop
    assert all(0 < k <= d for k, d in m1["subspace"].values())
    m2 = learner.fit_session(2, *_tones(2))
    assert m2["adapted"] and learner.msa_samples_seen == 18 and learner.frozen  # 18 > n_stop
    probe = _tones(0, seed=9)[0]
    before = learner.embed(probe)
    state = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    m3 = learner.fit_session(3, *_tones(3))
    assert not m3["adapted"] and learner.msa_samples_seen == 24
    assert all(a.session <= 2 for layer in lora_layers(learner.backbone).values() for a in layer.adapters.values())
    after = learner.backbone.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    np.testing.assert_array_equal(learner.embed(probe), before)  # backbone frozen for good
    assert len(learner.classes) == 12  # the classifier still learned session 3
    assert m0["gamma"] == m0["gamma_search"]["gamma"] > 0 and m0["gamma_search"]["source"] in ("loo", "prior")
    with pytest.raises(ValueError, match="expected session 4"):
        learner.fit_session(2, *_tones(2))


def test_msa_update_lies_in_the_unlearned_input_subspace() -> None:
    cfg = _tiny_config(rho_layer=1.0, n_stop=100, rho_svd=0.9)
    learner = PaceLearner(_tiny_model(1), cfg)
    learner.fit_session(0, *_tones(0))
    waves, labels = _tones(1)
    learner.fit_session(1, waves, labels)
    feats = learner.frontend_features(waves)
    layers = lora_layers(learner.backbone)
    # recompute the subspace the session used: inputs under W0 - (session-0 LoRA)
    with torch.no_grad(), unlearned(learner.backbone, before_session=1), collect_inputs(layers) as stats:
        learner.backbone.embed_features(feats)
    for name, layer in layers.items():
        P = stats[name].basis(0.9)[0].float()
        a = layer.adapters["s1"]
        dW = (a.B @ a.A.reshape(a.rank, -1)).detach()
        assert dW.abs().max() > 0
        assert (dW - dW @ P @ P.T).abs().max() <= 1e-4 * dW.abs().max()


def test_ablation_switches() -> None:
    naive = PaceLearner(_tiny_model(), _tiny_config(naive_fsa=True, use_msa=False, use_boundary_loss=False))
    m = naive.fit_session(0, *_tones(0))
    assert m["l_tune"] == 1 and m["cka"] is None and "probe_seconds" not in m
    assert len(lora_layers(naive.backbone)) == 8  # conv1 + conv2 of all 4 blocks
    assert {a.session for layer in lora_layers(naive.backbone).values() for a in layer.adapters.values()} == {0}
    assert m["train"]["reg"] == [0.0] and naive.frozen  # no L_reg; no MSA -> frozen after session 0
    m1 = naive.fit_session(1, *_tones(1))
    assert not m1["adapted"] and all(len(layer.adapters) == 1 for layer in lora_layers(naive.backbone).values())


def test_deterministic_for_a_seed() -> None:
    waves, labels = _tones(0)
    a = PaceLearner(_tiny_model(), _tiny_config())
    b = PaceLearner(_tiny_model(), _tiny_config())
    a.fit_session(0, waves, labels)
    b.fit_session(0, waves, labels)
    np.testing.assert_array_equal(a.features(waves), b.features(waves))
    c = PaceLearner(_tiny_model(), _tiny_config(seed=1))
    c.fit_session(0, waves, labels)
    assert not np.array_equal(a.embed(waves), c.embed(waves))


def test_checkpoint_round_trip_and_resume(tmp_path) -> None:
    cfg = _tiny_config(n_stop=100)
    learner = PaceLearner(_tiny_model(2), cfg)
    for s in range(2):
        learner.fit_session(s, *_tones(s))
    folder = save_checkpoint(learner, tmp_path / "ckpt")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "adapters.safetensors", "classifier.safetensors", "metrics.json",
            "backbone.safetensors"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    cfgd = json.loads((folder / "config.json").read_text())
    assert cfgd["sessions_done"] == 2 and cfgd["window_seconds"] == 1.0 and cfgd["hop_seconds"] == 0.5
    proj = cfgd["projection"]
    assert {k: proj[k] for k in ("in_dim", "dim", "seed", "standardized")} == {"in_dim": 32, "dim": 64, "seed": 0,
                                                                                "standardized": True}
    assert len(proj["mean"]) == len(proj["scale"]) == 32 and min(proj["scale"]) > 0 and cfgd["sample_rate"] == SR
    assert PaceConfig.from_dict(cfgd["pace"]) == cfg

    test_waves = np.concatenate([_tones(0, seed=5)[0], _tones(1, seed=5)[0]])
    loaded = load_checkpoint(folder)
    assert loaded.predict(test_waves) == learner.predict(test_waves)
    np.testing.assert_array_equal(loaded.features(test_waves), learner.features(test_waves))
    assert (loaded.l_tune, loaded.sessions_done, loaded.msa_samples_seen) == (learner.l_tune, 2, 12)

    # the export view: merged backbone + projection + classifier
    merged, projection, clf, cfg_dict = load_adapted_model(folder)
    assert not lora_layers(merged) and cfg_dict["classes"] == learner.classes
    with torch.no_grad():
        z = projection(merged(torch.from_numpy(test_waves))).numpy()
    np.testing.assert_allclose(z, learner.features(test_waves), rtol=1e-4, atol=1e-4)
    assert clf.predict(z) == learner.predict(test_waves)

    # resuming gives exactly what an uninterrupted run gives
    learner.fit_session(2, *_tones(2))
    loaded.fit_session(2, *_tones(2))
    np.testing.assert_array_equal(loaded.features(test_waves), learner.features(test_waves))
    save_checkpoint(loaded, folder)  # replacing an existing checkpoint
    assert load_checkpoint(folder).sessions_done == 3

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an edge-pace checkpoint"):
        save_checkpoint(learner, tmp_path / "other")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "other")


def test_vit_backbone_end_to_end_with_checkpoint(tmp_path) -> None:
    """The EAT-style ViT (LoRA on nn.Linear qkv/proj/fc1/fc2): FSA, MSA, checkpoint, merged export view."""
    eat = pytest.importorskip("edge_pace.backbones.eat_vit")
    torch.manual_seed(0)
    model = eat.EATViT(eat.CONFIGS["tiny"]).eval()
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000

    def clips(session: int) -> tuple[np.ndarray, list[str]]:
        w = [np.sin(2 * np.pi * (300 * (1 + i % 2) + 150 * session) * t) + 0.05 * rng.standard_normal(len(t))
             for i in range(6)]
        return np.asarray(w, dtype=np.float32), [f"s{session}c{i % 2}" for i in range(6)]

    learner = PaceLearner(model, _tiny_config(rho_layer=1.0, n_stop=100))
    m0 = learner.fit_session(0, *clips(0))
    assert len(m0["cka"]) == 4 and m0["l_tune"] == 1
    names = lora_layers(learner.backbone)
    assert len(names) == 16 and all(n.rsplit(".", 1)[-1] in ("qkv", "proj", "fc1", "fc2") for n in names)
    m1 = learner.fit_session(1, *clips(1))
    assert m1["adapted"] and set(m1["subspace"]) == set(names)
    folder = save_checkpoint(learner, tmp_path / "vit")
    waves = clips(2)[0]
    loaded = load_checkpoint(folder)
    np.testing.assert_array_equal(loaded.features(waves), learner.features(waves))
    merged, projection, _, cfgd = load_adapted_model(folder)
    assert cfgd["sample_rate"] == 16000 and not lora_layers(merged)
    with torch.no_grad():
        z = projection(merged(torch.from_numpy(waves))).numpy()
    np.testing.assert_allclose(z, learner.features(waves), rtol=1e-4, atol=1e-4)


def test_input_errors() -> None:
    learner = PaceLearner(_tiny_model(), _tiny_config())
    waves, labels = _tones(0)
    with pytest.raises(ValueError, match="expected session 0"):
        learner.fit_session(1, waves, labels)
    with pytest.raises(ValueError, match="labels"):
        learner.fit_session(0, waves, labels[:-1])
    with pytest.raises(ValueError, match="too short"):
        learner.fit_session(0, waves[:, :100], labels)
    with pytest.raises(RuntimeError, match="fit_session"):
        learner.predict(waves)
    with pytest.raises(ValueError, match="PaceConfig.rho_svd"):
        PaceConfig(rho_svd=1.5)
    with pytest.raises(ValueError, match="unknown field"):
        PaceConfig.from_dict({"nope": 1})


# ---- real audio ---------------------------------------------------------------------------------------

SOX_KINDS = {  # class -> sox synth arguments, {f} a per-clip random frequency
    "sine": ["sine", "{f}"], "square": ["square", "{f}"], "saw": ["sawtooth", "{f}"], "pluck": ["pluck", "{f}"],
    "noise": ["whitenoise"], "brown": ["brownnoise"], "sweep": ["sine", "{f}:{f4}"],
    "trem": ["sine", "{f}", "tremolo", "8", "90"],
}


def sox_clips(kinds: list[str], per_class: int, seed: int, folder) -> tuple[np.ndarray, list[str]]:
    """Real synthesised audio: 1 s, 44.1 kHz mono clips rendered by sox (``-R``: repeatable noise),
    random pitch 150..900 Hz per clip from ``seed``, random level; decoded with soundfile."""
    import subprocess

    import soundfile as sf

    rng = np.random.default_rng(seed)
    waves, labels = [], []
    for kind in kinds:
        for i in range(per_class):
            f = float(rng.uniform(150, 900))
            args = [a.format(f=f"{f:.1f}", f4=f"{4 * f:.1f}") for a in SOX_KINDS[kind]]
            path = folder / f"{kind}_{seed}_{i}.wav"
            subprocess.run(["sox", "-R", "-n", "-r", str(SR), "-b", "16", "-c", "1", str(path), "synth", "1", *args,
                            "fade", "0.02", "1", "0.02", "gain", "-n", f"{-rng.uniform(1, 12):.1f}"],
                           check=True, capture_output=True)
            x, sr = sf.read(path, dtype="float32")
            assert sr == SR and x.shape == (SR,)
            waves.append(x)
            labels.append(kind)
    return np.stack(waves), labels


@pytest.mark.slow
def test_three_sessions_on_real_audio_beat_chance_and_random_features(tmp_path) -> None:
    """8 classes of sox-synthesised sounds (1 s, 44.1 kHz; 5 train clips per class, 10 test clips per class
    at held-out pitches), sessions of 4 + 2 + 2 classes, pretrained aisfx, e0 = 1: accuracy on all 8 classes
    after the last session, against chance and against the same pipeline on a randomly initialised aisfx.

    Learning rates are 10x / 50x below the paper's: with 3 SGD steps per session on 20 clips, the paper's
    0.05 moves the early conv blocks of this batch-norm CNN far (probe CKA ~0.7, L_tune 1) and the test
    accuracy drops below that of the frozen features (measured 0.725 vs 0.9); at 0.005 it matches them."""
    from edge_pace.backbones import weights_present

    if not weights_present("aisfx"):
        pytest.skip("aisfx weights not converted (edge-pace backbones fetch)")
    kinds = list(SOX_KINDS)
    tr_w, tr_y = sox_clips(kinds, 5, 0, tmp_path)
    te_w, te_y = sox_clips(kinds, 10, 1, tmp_path)
    tr_y = np.asarray(tr_y)
    sessions = [kinds[:4], kinds[4:6], kinds[6:]]
    cfg = PaceConfig(e0=1, msa_epochs=1, n_perturb=2, batch_size=8, d_proj=512, quiet=True,
                     lr_backbone=0.005, msa_lr=0.001)

    def run(learner: PaceLearner) -> float:
        for s, classes in enumerate(sessions):
            m = np.isin(tr_y, classes)
            learner.fit_session(s, tr_w[m], list(tr_y[m]))
        return float(np.mean(np.asarray(learner.predict(te_w)) == np.asarray(te_y)))

    t = time.perf_counter()
    pace = PaceLearner("aisfx", cfg)
    acc = run(pace)
    seconds = time.perf_counter() - t
    torch.manual_seed(0)
    random_acc = run(PaceLearner(AisfxCNN().eval(), cfg.replace(e0=0, use_msa=False)))
    print(f"PACE {acc:.3f} vs random features {random_acc:.3f} (chance {1 / 8:.3f}); PACE run {seconds:.1f} s "
          f"(FSA {pace.history[0]['fsa_seconds']:.1f} s); CKA {np.round(pace.cka, 4).tolist()}, L_tune {pace.l_tune}")
    # do-no-harm: MSA runs iff session 0's adaptation was kept (4 classes: 3 adapted, 1 held out)
    assert pace.history[1]["adapted"] == pace.history[2]["adapted"] == pace.history[0]["adaptation"]["kept"]
    assert acc >= 0.8  # chance is 1/8
    assert acc >= random_acc + 0.05  # measured 0.9 vs 0.8


pytestmark = pytest.mark.usefixtures("one_torch_thread")
