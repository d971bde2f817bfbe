"""EAT-style ViT backbone: shapes, variable length, input errors, ONNX parity, checkpoint loading."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_pace.backbones import eat_vit, get_backbone
from edge_pace.backbones.eat_checkpoint import EATCheckpointError, load_eat_checkpoint
from edge_pace.backbones.eat_vit import CONFIGS, EATConfig, EATViT

torch.set_num_threads(1)
TINY = CONFIGS["tiny"]


def _model(config: EATConfig = TINY, seed: int = 0) -> EATViT:
    torch.manual_seed(seed)
    return EATViT(config).eval()


def _wave(batch: int, samples: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, samples, generator=g)


def eat_position_table(dim: int, rows: int, cols: int) -> np.ndarray:
    """EAT's flexible 2-D sin-cos table, rewritten in numpy from its definition: tokens row-major over a
    [rows, cols] meshgrid; first half of the channels encodes the column, second half the row."""
    col_idx, row_idx = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))

    def one(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float32) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(dim // 2, col_idx), one(dim // 2, row_idx)], axis=1).astype(np.float32)


# ---- shapes and behaviour ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch,samples", [(1, 2800), (2, 16000), (3, 9001)])
def test_output_shapes(batch: int, samples: int) -> None:
    m = _model()
    with torch.no_grad():
        out = m(_wave(batch, samples))
        layers = m.layer_features(_wave(batch, samples))
    assert out.shape == (batch, TINY.embed_dim) and torch.isfinite(out).all()
    assert len(layers) == TINY.depth == len(m.blocks)
    assert all(t.shape == (batch, TINY.embed_dim) for t in layers)
    torch.testing.assert_close(layers[-1], out, rtol=0, atol=0)  # last block, same pooling


def test_interface_attributes() -> None:
    m = _model()
    assert (m.name, m.sample_rate, m.embed_dim) == ("eat-tiny", 16000, 64)
    assert m.min_samples == 400 + 15 * 160  # one row of 16 frames: 25 ms window + 15 hops of 10 ms
    assert isinstance(m.frontend, eat_vit.KaldiFbank)
    for blk in m.blocks:  # the projections LoRA wraps
        for lin in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
            assert type(lin) is torch.nn.Linear
    with torch.device("meta"):  # shapes only, no memory
        base = EATViT(CONFIGS["base"])
    assert base.embed_dim == 768 and len(base.blocks) == 12 and base.blocks[0].attn.num_heads == 12
    assert 85e6 < sum(p.numel() for p in base.parameters()) < 87e6  # EAT-base encoder ~85.3 M


def test_frames_beyond_last_patch_row_are_cropped_and_tokens_counted() -> None:
    m = _model()
    feats = torch.randn(2, 47, 128)
    with torch.no_grad():
        a, b = m.embed_features(feats), m.embed_features(feats[:, :32])
        tokens = m.encode(feats)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert tokens.shape == (2, 1 + 2 * 8, 64)


def test_batch_items_are_independent() -> None:
    m = _model()
    w = _wave(3, 8000)
    with torch.no_grad():
        joint = m(w)
        single = torch.cat([m(w[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(joint, single, rtol=1e-5, atol=1e-5)


def test_positions_equal_eat_table_and_mean_pooling() -> None:
    m = _model()
    ours = m.positions(5).numpy()
    np.testing.assert_allclose(ours, eat_position_table(64, 5, 8), rtol=0, atol=1e-5)
    assert not np.allclose(ours[:8], ours[8:16])  # rows differ: time is encoded
    mean_cfg = EATConfig("tiny-mean", 64, 2, 4, pool="mean")
    mm = _model(mean_cfg)
    feats = torch.randn(2, 40, 128)
    with torch.no_grad():
        tokens = mm.encode(feats)
        torch.testing.assert_close(mm.embed_features(feats), tokens[:, 1:].mean(1), rtol=0, atol=0)


def test_too_short_and_bad_inputs_raise_clear_errors() -> None:
    m = _model()
    with pytest.raises(ValueError, match="too short: 2799 samples, need at least 2800"):
        m(_wave(1, 2799))
    with pytest.raises(ValueError, match="too short"):
        m.check_input(_wave(1, 100))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        m(torch.zeros(4000))
    with pytest.raises(ValueError, match="at least 16"):
        m.embed_features(torch.zeros(1, 15, 128))
    with pytest.raises(ValueError, match="128"):
        m.embed_features(torch.zeros(1, 32, 96))
    with pytest.raises(ValueError, match="NaN"):
        m.check_input(torch.full((1, 4000), float("nan")))
    with pytest.raises(ValueError, match="too long"):
        m.check_input(torch.zeros(1, m.max_samples + 1))
    assert m.check_input(torch.zeros(4000)).shape == (1, 4000)
    with pytest.raises(ValueError, match="divisible by 4"):
        EATConfig("bad", 66, 2, 3)


# ---- ONNX ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[EATViT, Path]:
    m = _model(seed=3)
    path = tmp_path_factory.mktemp("onnx") / "eat_tiny.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    samples = torch.export.Dim("samples", min=m.min_samples, max=m.max_samples)
    torch.onnx.export(m, (_wave(2, 12345),), str(path), dynamo=True, verbose=False,
                      dynamic_shapes={"wave": {0: batch, 1: samples}}, input_names=["wave"], output_names=["embedding"])
    return m, path


def test_onnx_dynamic_batch_and_length_parity(tiny_onnx: tuple[EATViT, Path]) -> None:
    import onnxruntime as ort

    m, path = tiny_onnx
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, samples in [(1, m.min_samples), (3, 20000), (2, 9001)]:
        w = _wave(batch, samples, seed=samples)
        with torch.no_grad():
            ref = m(w).numpy()
        out = sess.run(None, {"wave": w.numpy()})[0]
        assert out.shape == (batch, 64)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


# ---- checkpoints ----------------------------------------------------------------------------------------

def _fairseq_state(src: EATViT, prefix: str = "") -> dict:
    """``src``'s weights in the fairseq EAT layout, with training-only parts a real checkpoint has."""
    p = "modality_encoders.IMAGE."
    rename = {"local_encoder.proj.weight": p + "local_encoder.proj.weight",
              "local_encoder.proj.bias": p + "local_encoder.proj.bias",
              "extra_tokens": p + "extra_tokens",
              "pre_norm.weight": p + "context_encoder.norm.weight", "pre_norm.bias": p + "context_encoder.norm.bias"}
    sd = {prefix + rename.get(k, k): v.clone() for k, v in src.state_dict().items()}
    d = src.embed_dim
    sd[prefix + p + "fixed_positional_encoder.positions"] = torch.from_numpy(eat_position_table(d, 20, 8))[None]
    sd[prefix + p + "decoder.blocks.0.0.weight"] = torch.randn(d, 1, 3, 3)
    sd[prefix + "_ema"] = {"blocks.0.norm1.weight": torch.ones(d)}
    return sd


def test_load_fairseq_pt_checkpoint(tmp_path: Path) -> None:
    src, dst = _model(seed=11), _model(seed=12)
    path = tmp_path / "eat_pretrain.pt"
    torch.save({"model": _fairseq_state(src), "cfg": {"model": {"depth": 4}}, "optimizer_history": []}, path)
    report = load_eat_checkpoint(dst, path)
    assert report.layout == "fairseq" and len(report.loaded) == len(src.state_dict())
    assert "modality_encoders.IMAGE.decoder.blocks.0.0.weight" in report.ignored and "_ema" in report.ignored
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    w = _wave(2, 6000)
    with torch.no_grad():
        torch.testing.assert_close(dst(w), src(w), rtol=0, atol=0)


def test_load_hf_safetensors_and_finetuned_layouts(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = _model(seed=21)
    hf = {"model." + k: v.clone() for k, v in src.state_dict().items()}
    hf["model.fixed_positional_encoder.positions"] = torch.from_numpy(eat_position_table(64, 12, 8))[None]
    save_file(hf, str(tmp_path / "model.safetensors"))
    dst = _model(seed=22)
    assert load_eat_checkpoint(dst, tmp_path / "model.safetensors").layout == "hf"
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())

    ft = _fairseq_state(src, prefix="model.")  # fine-tuned fairseq: encoder under model., plus a head
    ft.update({"fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64), "head.weight": torch.randn(10, 64),
               "head.bias": torch.zeros(10)})
    torch.save({"model": ft}, tmp_path / "eat_ft.pt")
    dst2 = get_backbone("eat-tiny", weights=str(tmp_path / "eat_ft.pt"))  # through the registry
    assert all(torch.equal(dst2.state_dict()[k], v) for k, v in src.state_dict().items())


def test_wrong_keys_and_shapes_raise_listing_them(tmp_path: Path) -> None:
    src = _model(seed=31)
    sd = _fairseq_state(src)
    del sd["blocks.2.mlp.fc1.weight"]
    sd["blocks.2.mlp.fc3.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pt")
    before = {k: v.clone() for k, v in _model(seed=32).state_dict().items()}
    dst = _model(seed=32)
    with pytest.raises(EATCheckpointError) as err:
        load_eat_checkpoint(dst, tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing (1): blocks.2.mlp.fc1.weight" in msg and "unexpected (1): blocks.2.mlp.fc3.weight" in msg
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in before.items())  # nothing half-loaded

    report = load_eat_checkpoint(dst, tmp_path / "bad.pt", strict=False)
    assert report.missing == ["blocks.2.mlp.fc1.weight"] and report.unexpected == ["blocks.2.mlp.fc3.weight"]
    assert torch.equal(dst.state_dict()["blocks.0.attn.qkv.weight"], src.state_dict()["blocks.0.attn.qkv.weight"])

    torch.save(_fairseq_state(src), tmp_path / "good.pt")
    small = _model(EATConfig("small", 32, 2, 2))
    with pytest.raises(EATCheckpointError, match=r"(?s)shape mismatches.*embed_dim=64, depth=4"):
        load_eat_checkpoint(small, tmp_path / "good.pt", strict=False)  # shapes are checked even when not strict


def test_foreign_positions_are_rejected(tmp_path: Path) -> None:
    sd = _fairseq_state(_model(seed=41))
    sd["modality_encoders.IMAGE.fixed_positional_encoder.positions"] = torch.randn(1, 160, 64)
    torch.save(sd, tmp_path / "learned_pos.pt")
    with pytest.raises(EATCheckpointError, match="sin-cos"):
        load_eat_checkpoint(_model(), tmp_path / "learned_pos.pt")


class _Trap:
    """Pickles as a call to open(path, 'w'): a loader that runs foreign globals would create the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_metadata_falls_back_to_restricted_unpickler(tmp_path: Path) -> None:
    src = _model(seed=51)
    trap = tmp_path / "trap_was_run"
    ckpt = {"model": _fairseq_state(src), "args": argparse.Namespace(lr=0.1), "extra": np.float64(3.0),
            "task_state": _Trap(trap)}
    torch.save(ckpt, tmp_path / "fairseq_full.pt")
    with pytest.raises(pickle.UnpicklingError):  # weights_only refuses this file
        torch.load(tmp_path / "fairseq_full.pt", weights_only=True)
    dst = _model(seed=52)
    load_eat_checkpoint(dst, tmp_path / "fairseq_full.pt")
    assert not trap.exists()
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


def test_missing_file_and_non_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_eat_checkpoint(_model(), tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(EATCheckpointError, match="expected a state dict"):
        load_eat_checkpoint(_model(), tmp_path / "list.pt")
