"""Round trip: adapted checkpoint -> `edge-pace export` -> runtime predicts what the training side predicts."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge_pace.method.config import PaceConfig
from edge_pace.method.checkpoint import save_checkpoint
from edge_pace.method.lora import lora_layers
from edge_pace.method.pace import PaceLearner
from edge_pace.runtime.bundle import open_bundle
from edge_pace.runtime.learner import Learner
from sounds import sox_set

KINDS = ["sine", "square", "noise", "pluck", "saw"]


@pytest.fixture(scope="module")
def adapted_checkpoint(tmp_path_factory):
    """The tiny EAT-style ViT adapted with PACE (FSA, staged LoRA, boundary loss) on real sox sounds."""
    torch.set_num_threads(2)
    train = sox_set(KINDS, 4, seed=10, rate=16000)
    test = sox_set(KINDS, 3, seed=11, rate=16000)
    torch.manual_seed(0)
    cfg = PaceConfig(e0=1, msa_epochs=1, d_proj=128, n_perturb=2, batch_size=8, quiet=True, seed=0)
    learner = PaceLearner("eat-tiny", cfg, pretrained=False)
    learner.fit_session(0, train[0], train[1])
    ckpt = save_checkpoint(learner, tmp_path_factory.mktemp("rt") / "ckpt")
    return learner, ckpt, test


def test_runtime_predicts_what_the_training_side_predicts(adapted_checkpoint, tmp_path):
    learner, ckpt, (test_waves, _) = adapted_checkpoint
    out = tmp_path / "bundle.zip"
    res = subprocess.run([sys.executable, "-m", "edge_pace.cli", "export", str(ckpt), "-o", str(out), "--single-file"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    bundle = open_bundle(out)
    assert bundle.is_zip and bundle.manifest["sample_rate"] == 16000
    # the do-no-harm decision travels into the manifest (kept or not, the bundle serves what the learner serves)
    assert bundle.manifest["adapted"] is learner.adaptation["kept"] is bool(lora_layers(learner.backbone))
    assert bundle.manifest["adaptation"] == json.loads(json.dumps(learner.adaptation))
    assert bundle.manifest["labels"] == learner.classes
    device = Learner.load(out, unknown=False)
    server_pred = learner.predict(test_waves)
    device_pred = [device.predict(x, sample_rate=16000)[0] for x in test_waves]
    assert device_pred == server_pred
    z_server = learner.features(test_waves)
    z_device = np.vstack([device.embed(x, sample_rate=16000) for x in test_waves])
    assert np.abs(z_device - z_server).max() <= 1e-4 * np.abs(z_server).max()
    info = subprocess.run([sys.executable, "-m", "edge_pace.cli", "info", str(out)], capture_output=True, text=True)
    assert info.returncode == 0 and "checksums    OK" in info.stdout and "16000 Hz" in info.stdout
    assert "adaptation" in info.stdout and learner.adaptation["reason"] in info.stdout


def test_too_short_audio_is_refused_clearly(adapted_checkpoint, tmp_path):
    _, ckpt, _ = adapted_checkpoint
    from edge_pace.export.exporter import export_bundle, source_from_checkpoint

    out = export_bundle(source_from_checkpoint(ckpt), tmp_path / "b", log=lambda m: None)
    device = Learner.load(out)
    min_samples = json.loads((out / "manifest.json").read_text())["min_samples"]
    with pytest.raises(ValueError, match=str(min_samples)):
        device.predict(np.zeros(min_samples // 2, np.float32) + 0.1, sample_rate=16000)
