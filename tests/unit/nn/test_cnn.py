"""The worked example's small CNN: named stages and their shapes, fx tracing, training, parameter count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kaepipe.nn.cnn import SmallCNN, parameter_count
from kaepipe.nn.train import TrainConfig, train_classifier


def stage_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named stage's output, recorded by forward hooks (as the pipeline records layers)."""
    out: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, o))
             for name in (*model.layers, "out")]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(out["out"], logits)
    return out


def test_named_stages_have_the_documented_shapes():
    torch.manual_seed(0)
    model = SmallCNN()
    assert model.layers == ("block1", "block2", "fc1", "fc2")
    out = stage_outputs(model, torch.randn(5, 784))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "block1": (5, 8, 14, 14), "block2": (5, 16, 7, 7), "fc1": (5, 128), "fc2": (5, 64), "out": (5, 10)}
    assert model.flat_features == 16 * 7 * 7 == 784
    for name in ("block1", "block2", "fc1", "fc2"):  # each stage ends in its nonlinearity or pool
        assert (out[name] >= 0).all()


def test_other_sizes_and_image_shaped_input():
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, image_size=32, channels=(4, 6, 8), hidden=(20,), classes=7)
    assert model.layers == ("block1", "block2", "block3", "fc1")
    x = torch.randn(2, 3 * 32 * 32)
    out = stage_outputs(model, x)
    assert tuple(out["block3"].shape) == (2, 8, 4, 4) and tuple(out["out"].shape) == (2, 7)
    torch.testing.assert_close(model(x.view(2, 3, 32, 32)), model(x), rtol=0, atol=0)
    no_fc = SmallCNN(channels=(4,), hidden=(), classes=3)
    assert tuple(no_fc(torch.randn(2, 784)).shape) == (2, 3)


@pytest.mark.parametrize("kwargs,message", [
    ({"channels": (4, 4, 4, 4, 4)}, "shrink"),
    ({"hidden": (0,)}, "hidden must be positive"),
    ({"classes": 0}, "classes must be positive"),
])
def test_impossible_sizes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmallCNN(**kwargs)


def test_fx_traces_it_and_the_traced_module_gives_the_same_output():
    torch.manual_seed(1)
    model = SmallCNN().eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(7, 784)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    targets = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert {"block1.0", "block2.2", "fc1.1", "fc2.1", "out.0"} <= targets


def test_initialisation_follows_torchs_seed():
    torch.manual_seed(3)
    a = SmallCNN()
    torch.manual_seed(3)
    b = SmallCNN()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("kwargs", [
    {}, {"in_channels": 3, "image_size": 32, "channels": (4, 6, 8), "hidden": (20,), "classes": 7},
    {"channels": (5,), "hidden": (), "classes": 2},
])
def test_parameter_count_matches_the_closed_form(kwargs):
    model = SmallCNN(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == parameter_count(**kwargs)


def test_default_parameter_count_by_hand():
    # conv 1->8 and 8->16 (3x3, biases), then 784->128->64->10
    assert parameter_count() == (9 * 8 + 8) + (8 * 16 * 9 + 16) + (784 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)


def test_the_projects_training_loop_reduces_its_loss():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 4
    x = torch.randn(64, 1, 12, 12, generator=gen) * 0.5
    x[:, 0, :6, :6] += (y == 0).float().view(-1, 1, 1) * 2  # a bright quadrant per class
    x[:, 0, :6, 6:] += (y == 1).float().view(-1, 1, 1) * 2
    x[:, 0, 6:, :6] += (y == 2).float().view(-1, 1, 1) * 2
    x[:, 0, 6:, 6:] += (y == 3).float().view(-1, 1, 1) * 2
    model = SmallCNN(image_size=12, channels=(4, 8), hidden=(16,), classes=4)
    cfg = TrainConfig(epochs=8, batch_size=16, lr=1e-2, optimizer="adamw", schedule="constant")
    curve = train_classifier(model, x.flatten(1), y, cfg)
    assert curve["loss"].iloc[-1] < 0.5 * curve["loss"].iloc[0]
    assert curve["acc"].iloc[-1] > 0.9
