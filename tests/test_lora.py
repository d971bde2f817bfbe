"""LoRA wrappers: merged == unmerged forward, LoRA subtraction, state round trip, targets, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_pace.backbones.aisfx_cnn import AisfxCNN
from edge_pace.method.lora import (LoRALayer, add_lora, base_state_dict, load_lora_state_dict, lora_layers,
                            lora_parameters, lora_state_dict, merge_lora, unlearned, unlearned_weight)


def _randomise(layer: LoRALayer, g: torch.Generator) -> None:
    with torch.no_grad():
        for a in layer.adapters.values():
            a.B.copy_(torch.randn(a.B.shape, generator=g) * 0.1)


def test_new_adapter_is_identity() -> None:
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 7, 9, generator=g)
    ref = conv(x)
    layer = LoRALayer(conv)
    layer.add_adapter(4, 8.0, 0, g)
    assert torch.equal(layer(x), ref)  # B starts at zero: exactly no change


@pytest.mark.parametrize("stride,padding,dilation,bias", [(1, 1, 1, False), (2, 0, 1, True), (1, 2, 2, True)])
def test_conv_merge_equals_unmerged(stride: int, padding: int, dilation: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, bias=bias)
    layer = LoRALayer(conv)
    for s in range(3):
        layer.add_adapter(2, 4.0, s, g)
    _randomise(layer, g)
    x = torch.randn(3, 4, 11, 13, generator=g)
    merged = layer.to_plain()
    assert isinstance(merged, nn.Conv2d)
    torch.testing.assert_close(merged(x), layer(x), atol=1e-5, rtol=0)
    # merged kernel: dW[o,i,kh,kw] = scale * sum_r B[o,r] A[r,i,kh,kw]
    expect = conv.weight + sum(a.scale * torch.einsum("or,rikl->oikl", a.B, a.A) for a in layer.adapters.values())
    torch.testing.assert_close(merged.weight, expect, atol=1e-6, rtol=0)
    # and the explicit conv with the merged weight
    y = nn.functional.conv2d(x, expect, conv.bias, stride, padding, dilation)
    torch.testing.assert_close(layer(x), y, atol=1e-5, rtol=0)


def test_linear_merge_equals_unmerged() -> None:
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    lin = nn.Linear(16, 12)
    layer = LoRALayer(lin)
    for s in range(2):
        layer.add_adapter(3, 6.0, s, g)
    _randomise(layer, g)
    x = torch.randn(5, 7, 16, generator=g)  # tokens
    torch.testing.assert_close(layer.to_plain()(x), layer(x), atol=1e-5, rtol=0)
    expect = lin.weight + sum(a.scale * a.B @ a.A for a in layer.adapters.values())
    torch.testing.assert_close(layer.merged_weight(), expect, atol=1e-6, rtol=0)


def test_unlearned_equals_w0_minus_older() -> None:
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = AisfxCNN(width=4).eval()
    add_lora(model, [2, 3], 2, 4.0, 0, generator=g)
    add_lora(model, [2, 3], 2, 4.0, 1, generator=g)
    for layer in lora_layers(model).values():
        _randomise(layer, g)
    feats = torch.rand(2, 16, 96, generator=g)
    with torch.no_grad():
        full = model.embed_features(feats)
        with unlearned(model):
            sub = model.embed_features(feats)
        with unlearned(model, before_session=1):
            sub0 = model.embed_features(feats)
        assert torch.equal(model.embed_features(feats), full)  # mode restored
    # the same computation with plain layers of weight W0 - sum(older)
    for before, got in ((None, sub), (1, sub0)):
        plain = merge_lora(model)
        for name, layer in lora_layers(model).items():
            mod = plain.get_submodule(name)
            with torch.no_grad():
                mod.weight.copy_(unlearned_weight(layer, before))
            w = layer.base.weight.detach().clone()
            for a in layer.adapters.values():
                if before is None or a.session < before:
                    w = w - a.delta_weight().detach()
            torch.testing.assert_close(unlearned_weight(layer, before), w, atol=0, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(got, plain.embed_features(feats), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sub, full)


def test_add_lora_targets_freezing_and_merge_of_model() -> None:
    g = torch.Generator().manual_seed(4)
    model = AisfxCNN(width=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = add_lora(model, [3], 2, 4.0, 0, generator=g)
    assert list(new) == ["conv_block4.conv1", "conv_block4.conv2"]
    assert all(isinstance(model.get_submodule(n), LoRALayer) for n in new)
    new1 = add_lora(model, [3], 2, 4.0, 1, generator=g)
    assert all(not p.requires_grad for a in new.values() for p in a.parameters())  # older frozen
    assert all(p.requires_grad for a in new1.values() for p in a.parameters())
    assert len(lora_parameters(model, session=1)) == 4 and len(lora_parameters(model)) == 8
    for layer in lora_layers(model).values():
        _randomise(layer, g)
    feats = torch.rand(2, 16, 96, generator=g)
    merged = merge_lora(model)
    assert not lora_layers(merged) and lora_layers(model)  # the input model is untouched
    with torch.no_grad():
        torch.testing.assert_close(merged.embed_features(feats), model.embed_features(feats), atol=1e-5, rtol=1e-5)
    # base weights come back under their original names
    base = base_state_dict(model)
    assert set(base) == set(before) and all(torch.equal(base[k], before[k]) for k in before)


def test_state_dict_round_trip() -> None:
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = AisfxCNN(width=4).eval()
    fresh = AisfxCNN(width=4).eval()
    fresh.load_state_dict(model.state_dict())
    add_lora(model, [2, 3], 2, 4.0, 0, generator=g)
    add_lora(model, [3], 3, 3.0, 1, generator=g)
    for layer in lora_layers(model).values():
        _randomise(layer, g)
    state = lora_state_dict(model)
    assert "conv_block4.conv2.s1.A" in state and state["conv_block4.conv2.s1.alpha"].item() == 3.0
    assert load_lora_state_dict(fresh, state) == [0, 1]
    feats = torch.rand(2, 16, 96, generator=g)
    with torch.no_grad():
        assert torch.equal(fresh.embed_features(feats), model.embed_features(feats))
    with pytest.raises(ValueError, match="does not have"):
        load_lora_state_dict(AisfxCNN(width=4), {"nope.s0.A": torch.zeros(1), "nope.s0.B": torch.zeros(1),
                                                 "nope.s0.alpha": torch.ones(1)})
    with pytest.raises(ValueError, match="not a LoRA tensor name"):
        load_lora_state_dict(AisfxCNN(width=4), {"garbage": torch.zeros(1)})


def test_vit_linear_targets() -> None:
    eat = pytest.importorskip("edge_pace.backbones.eat_vit")
    torch.manual_seed(6)
    model = eat.EATViT(eat.CONFIGS["tiny"]).eval()
    g = torch.Generator().manual_seed(6)
    new = add_lora(model, [2, 3], 2, 4.0, 0, generator=g)
    assert sorted(n.rsplit(".", 1)[-1] for n in new) == sorted(["qkv", "proj", "fc1", "fc2"] * 2)
    assert all(n.startswith(("blocks.2.", "blocks.3.")) for n in new)
    for layer in lora_layers(model).values():
        _randomise(layer, g)
    feats = torch.randn(2, 32, 128, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(merge_lora(model).embed_features(feats), model.embed_features(feats),
                                   atol=1e-5, rtol=1e-5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="groups=1"):
        LoRALayer(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="Conv2d or nn.Linear"):
        LoRALayer(nn.Conv1d(2, 2, 3))
    layer = LoRALayer(nn.Linear(3, 3))
    layer.add_adapter(1, 1.0, 2)
    with pytest.raises(ValueError, match="already has"):
        layer.add_adapter(1, 1.0, 2)
    with pytest.raises(ValueError, match="older"):
        layer.add_adapter(1, 1.0, 1)
    with pytest.raises(IndexError, match="out of range"):
        add_lora(AisfxCNN(width=4), [4], 2, 2.0, 0)
    with pytest.raises(ValueError, match="no LoRA target"):
        add_lora(AisfxCNN(width=4), [0], 2, 2.0, 0, targets=("nothing",))


pytestmark = pytest.mark.usefixtures("one_torch_thread")
