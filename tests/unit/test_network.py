"""kaepipe.network against independent oracles: submodules called by hand, the model's own logits, files
written here with safetensors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import fx, nn

from kaepipe.network import (
    LayeredNetwork,
    NetworkError,
    build_network,
    check_layers,
    get_module,
    head_after,
    import_object,
    load_weights,
    record,
)
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig
from tests.toy_networks import Skip


class SmallCNN(nn.Module):
    """conv -> relu -> conv -> relu -> pool -> flatten -> linear -> relu -> linear, on 1 x 8 x 8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = self.pool(F.relu(self.conv2(h)))
        h = F.relu(self.fc1(torch.flatten(h, 1)))
        return self.fc2(h)


class Branchy(nn.Module):
    """Data-dependent control flow before the last layer: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if x.sum() > 0:
            h = 2 * h
        return self.out(self.fc2(h))


class Twice(nn.Module):
    """The same module applied twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.f, self.g, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.g(self.f(torch.relu(self.f(x)))))


def trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics (so eval mode differs from the initial identity), eval mode."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, model.cfg.in_features) * 2 + 1)
    return model.eval()


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture
def resmlp() -> ResMLP:
    torch.manual_seed(0)
    return trained_like(ResMLP(ResMLPConfig(in_features=3, width=8, blocks=5, classes=4)))


RESMLP_LAYERS = ["input_layer", *(f"blocks.{i}" for i in range(5))]


def call_modules(head: fx.GraphModule) -> set[str]:
    return {n.target for n in head.graph.nodes if n.op == "call_module"}


# ---------------------------------------------------------------------------------------------------
# record


def test_record_equals_the_submodules_called_by_hand(cnn):
    x = torch.randn(10, 1, 8, 8)
    got = record(cnn, ["conv1", "conv2", "fc1"], x)
    with torch.no_grad():
        c1 = cnn.conv1(x)
        c2 = cnn.conv2(F.relu(c1))
        f1 = cnn.fc1(torch.flatten(cnn.pool(F.relu(c2)), 1))
    assert [tuple(g.shape) for g in got] == [(10, 4 * 64), (10, 8 * 64), (10, 16)]
    for g, want in zip(got, (c1, c2, f1)):
        assert torch.equal(g, want.flatten(1))
    unflat = record(cnn, ["conv1", "conv2"], x, flatten=False)
    assert torch.equal(unflat[1], c2)
    chunked = record(cnn, ["conv1", "conv2", "fc1"], x, batch_size=3)  # four batches, concatenated in order
    for g, want in zip(chunked, (c1, c2, f1)):
        torch.testing.assert_close(g, want.flatten(1), rtol=1e-6, atol=1e-6)  # batched convolutions round apart


def test_record_of_the_resmlp_equals_its_blocks_by_hand(resmlp):
    x = torch.randn(20, 3)
    got = record(resmlp, RESMLP_LAYERS, x)
    with torch.no_grad():
        h = resmlp.input_layer(x)
        want = [h]
        for block in resmlp.blocks:
            h = block(h)
            want.append(h)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert not resmlp.training  # the mode is restored


def test_record_restores_training_mode_and_removes_hooks(cnn):
    cnn.train()
    record(cnn, ["conv1", "fc1"], torch.randn(2, 1, 8, 8))
    assert cnn.training
    assert not cnn.conv1._forward_hooks and not cnn.fc1._forward_hooks


def test_a_module_called_twice_is_refused():
    with pytest.raises(NetworkError, match="'f' ran 2 times in one forward pass"):
        record(Twice(), ["f", "g"], torch.randn(5, 4))


def test_a_module_returning_no_tensor_is_refused():
    lstm_net = nn.Sequential()
    lstm_net.add_module("rnn", nn.RNN(3, 4, batch_first=True))
    lstm_net.add_module("other", nn.Identity())
    with pytest.raises(NetworkError, match="'rnn' returns tuple, not a tensor"):
        record(lstm_net, ["rnn", "other"], torch.randn(2, 5, 3))


def test_layer_names_are_checked(cnn):
    with pytest.raises(NetworkError, match=r"no module named 'conv3' \(did you mean 'conv2', 'conv1'\?\); its modules are: "
                                           r"conv1, conv2, pool, fc1, fc2"):
        get_module(cnn, "conv3")
    with pytest.raises(NetworkError, match="at least two layer names"):
        check_layers(cnn, ["conv1"])
    with pytest.raises(NetworkError, match=r"repeated: \['conv1'\]"):
        check_layers(cnn, ["conv1", "conv1"])
    with pytest.raises(NetworkError, match="no module named ''"):
        get_module(cnn, "")  # the root is not a layer


# ---------------------------------------------------------------------------------------------------
# head_after


def test_head_after_of_a_cnn_reproduces_the_network_exactly(cnn):
    x = torch.randn(16, 1, 8, 8)
    head = head_after(cnn, "conv2")
    with torch.no_grad():
        c2 = cnn.conv2(F.relu(cnn.conv1(x)))
        assert torch.equal(head(c2), cnn(x))
    assert call_modules(head) == {"pool", "fc1", "fc2"}
    modules = dict(head.named_modules())
    assert "conv1" not in modules and "conv2" not in modules
    assert [n.name for n in head.graph.nodes if n.op == "placeholder"] == ["h"]


def test_head_after_of_the_resmlp_is_its_output_layer(resmlp):
    x = torch.randn(32, 3)
    head = head_after(resmlp, "blocks.4")
    with torch.no_grad():
        assert torch.equal(head(resmlp.hidden(x)), resmlp(x))
        assert torch.equal(head(resmlp.hidden(x)), resmlp.output_layer(resmlp.hidden(x)))
    assert call_modules(head) == {"output_layer"}
    assert set(dict(head.named_modules())) == {"", "output_layer"}
    # a cut inside: after blocks.2 the head holds blocks 3 and 4 and the output layer, nothing before
    head2 = head_after(resmlp, "blocks.2")
    mods = {m.split(".")[0] + ("." + m.split(".")[1] if m.startswith("blocks") else "") for m in call_modules(head2)}
    assert mods == {"blocks.3", "blocks.4", "output_layer"}
    with torch.no_grad():
        h2 = record(resmlp, ["input_layer", "blocks.2"], x)[1]
        assert torch.equal(head2(h2), resmlp(x))


def test_layered_network_of_the_resmlp(resmlp):
    x = torch.randn(50, 3)
    net = LayeredNetwork.from_module(resmlp, RESMLP_LAYERS, example=x[:8])
    assert net.widths == [8] * 6 and net.shapes == [(8,)] * 6
    layers = net.record(x)
    with torch.no_grad():
        assert torch.equal(net.head(layers[-1]), resmlp(x))


def test_a_skip_connection_around_the_cut_is_refused():
    with pytest.raises(NetworkError, match=r"after 'b' also reads relu, computed from the input before it \(a skip "
                                           r"connection around the layer\?\); give the head explicitly"):
        head_after(Skip(), "b")
    # with the skip's source named as the last layer the cut is clean
    model = Skip().eval()
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.allclose(head_after(model, "a")(model.a(x)), model(x))


def test_a_network_fx_cannot_trace_needs_the_head_and_then_works():
    torch.manual_seed(0)
    model = Branchy().eval()
    x = torch.randn(12, 3)
    with pytest.raises(NetworkError, match=r"torch.fx cannot trace Branchy .*give the head after 'fc2' explicitly"):
        head_after(model, "fc2")
    with pytest.raises(NetworkError, match="torch.fx cannot trace Branchy"):
        LayeredNetwork.from_module(model, ["fc1", "fc2"], example=x)
    net = LayeredNetwork.from_module(model, ["fc1", "fc2"], example=x, head=model.out)
    with torch.no_grad():
        assert torch.equal(net.head(net.record(x)[-1]), model(x))
    # a plain function works as a head too
    def head_fn(h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, model.out.weight, model.out.bias)

    net = LayeredNetwork.from_module(model, ["fc1", "fc2"], example=x, head=head_fn)
    assert net.head(net.record(x)[-1]).shape == (12, 2)


def test_a_wrong_head_is_refused(cnn):
    x = torch.randn(6, 1, 8, 8)
    wrong = nn.Sequential(nn.ReLU(), cnn.pool, nn.Flatten(), cnn.fc1, cnn.fc2)  # forgets fc1's ReLU
    with pytest.raises(NetworkError, match=r"the head after 'conv2' does not reproduce the network's logits \(shape "
                                           r"\(6, 5\) vs \(6, 5\), largest difference"):
        LayeredNetwork.from_module(cnn, ["conv1", "conv2"], example=x, head=wrong)
    with pytest.raises(NetworkError, match=r"the head \(given\) does not take layer 'conv2''s output of shape "
                                           r"\(8, 8, 8\) per sample"):
        LayeredNetwork.from_module(cnn, ["conv1", "conv2"], example=x, head=nn.Linear(3, 5))
    with pytest.raises(NetworkError, match="shape \\(6, 7\\) vs \\(6, 5\\)"):
        LayeredNetwork.from_module(cnn, ["conv1", "fc1"], example=x, head=nn.Sequential(nn.ReLU(), nn.Linear(16, 7)))


def test_an_empty_example_is_refused(cnn):
    with pytest.raises(NetworkError, match="example batch is empty"):
        LayeredNetwork.from_module(cnn, ["conv1", "conv2"], example=torch.empty(0, 1, 8, 8))


def test_a_network_whose_output_does_not_depend_on_the_layer():
    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.unused, self.out = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            self.unused(x)
            return self.out(self.a(x))

    with pytest.raises(NetworkError, match="does not depend on module 'unused'"):
        head_after(Dead(), "unused")


# ---------------------------------------------------------------------------------------------------
# networks from code, weights from safetensors


def test_import_object_errors():
    assert import_object("kaepipe.nn.resmlp:ResMLP") is ResMLP
    assert import_object("torch.nn:functional.relu") is F.relu  # a dotted attribute
    with pytest.raises(NetworkError, match=r"cannot import module 'no_such_package_xyz.models' \(No module named 'no_such_package_xyz'\); is its package installed"):
        import_object("no_such_package_xyz.models:build")
    with pytest.raises(NetworkError, match=r"kaepipe.nn.resmlp has no attribute 'ResMPL' \(did you mean ResMLP"):
        import_object("kaepipe.nn.resmlp:ResMPL")
    for spec in ("kaepipe.nn.resmlp.ResMLP", "a:b:c", 3):
        with pytest.raises(NetworkError, match=r"expected 'package.module:function' \(one colon\)"):
            import_object(spec)


def test_build_network():
    model = build_network("torch.nn:Linear", {"in_features": 3, "out_features": 2})
    assert isinstance(model, nn.Linear) and model.weight.shape == (2, 3)
    with pytest.raises(NetworkError, match=r"returned OrderedDict, not a torch.nn.Module"):
        build_network("collections:OrderedDict")
    with pytest.raises(NetworkError, match=r"'math:pi' is not callable"):
        build_network("math:pi")
    with pytest.raises(NetworkError, match=r"'torch.nn:Linear' with arguments \{'width': 3\}"):
        build_network("torch.nn:Linear", {"width": 3})


def test_load_weights_checks_names_and_shapes(tmp_path):
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path), metadata={"note": "hi"})
    dst = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert load_weights(dst, path) == {"note": "hi"}
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))

    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2), nn.Linear(2, 2))
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(NetworkError) as err:
        load_weights(other, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: weights do not fit Sequential: ")
    for part in ("missing tensor '3.weight' (shape (2, 2))", "missing tensor '3.bias' (shape (2,))",
                 "tensor '0.weight' has shape (4, 3), the network's is (5, 3)",
                 "tensor '2.weight' has shape (2, 4), the network's is (2, 5)"):
        assert part in msg
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))  # nothing loaded

    smaller = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(NetworkError, match=re.escape("unexpected tensor '2.weight'")):
        load_weights(smaller, path)

    pt = tmp_path / "net.pt"
    torch.save(src.state_dict(), pt)
    with pytest.raises(NetworkError, match=rf"{re.escape(str(pt))}: network weights must be a .safetensors file "
                                           r"\(nothing is unpickled\)"):
        load_weights(dst, pt)


def test_load_weights_lists_at_most_eight_problems(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({f"t{i}": torch.zeros(1) for i in range(12)}, str(path))
    with pytest.raises(NetworkError, match=r"\.\.\. \(14 in all\)"):
        load_weights(nn.Linear(2, 2), path)
