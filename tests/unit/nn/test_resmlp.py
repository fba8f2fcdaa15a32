"""The ResMLP: shapes, residual ReLU placement, initialisation and layer hooks."""

from __future__ import annotations

import torch

from kaepipe.nn.resmlp import ResidualBlock, ResMLP, ResMLPConfig, record_layers


def small(blocks: int = 3) -> ResMLP:
    torch.manual_seed(0)
    return ResMLP(ResMLPConfig(in_features=2, width=8, blocks=blocks, classes=3))


def test_shapes_and_logits():
    m = small()
    assert m(torch.randn(16, 2)).shape == (16, 3)
    assert m.hidden(torch.randn(16, 2)).shape == (16, 8)


def test_hooks_return_one_plus_blocks_layers():
    m = small(blocks=5)
    x = torch.randn(50, 2)
    layers = record_layers(m, x, batch_size=16)
    assert len(layers) == 6
    assert all(l.shape == (50, 8) for l in layers)
    assert all((l >= 0).all() for l in layers)  # every recorded layer is after a ReLU
    m.eval()
    torch.testing.assert_close(layers[-1], m.hidden(x))


def test_relu_after_residual_sum():
    torch.manual_seed(1)
    block = ResidualBlock(6).eval()
    with torch.no_grad():
        block.bn2.running_mean.fill_(3.0)  # makes h strongly negative
    x = torch.rand(20, 6)
    with torch.no_grad():
        h = torch.relu(block.bn1(block.fc1(x)))
        h = block.bn2(block.fc2(h))
        expected = torch.relu(x + h)
        assert (h < 0).any()  # h alone has negatives that the sum's ReLU must clip
        torch.testing.assert_close(block(x), expected)
        assert not torch.allclose(block(x), x + torch.relu(h))


def test_initialisation():
    m = small()
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(linears) == 1 + 2 * 3 + 1
    assert all(torch.all(l.bias == 0.01) for l in linears)
    big = ResMLP(ResMLPConfig(in_features=784, width=784, blocks=1, classes=10))
    std = big.blocks[0].fc1.weight.std().item()
    assert abs(std - (2 / 784) ** 0.5) < 0.003  # kaiming normal, relu gain


def test_input_layer_standardises_the_batch_and_the_output_layer_is_plain_linear():
    """In training mode L0 = ReLU((a - mean) / sqrt(var + eps)) of a = x W^T + b over the batch (BatchNorm
    starts at scale 1, shift 0); the logits are an affine map of the last layer, with no normalisation."""
    m = small().train()
    x = torch.randn(64, 2) * 5 + 3
    W, b = m.input_layer.linear.weight, m.input_layer.linear.bias
    with torch.no_grad():
        a = x @ W.T + b
        expected = torch.relu((a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5))
        torch.testing.assert_close(m.input_layer(x), expected, atol=1e-5, rtol=1e-5)
        m.eval()
        h = m.hidden(x)
        torch.testing.assert_close(m(x), h @ m.output_layer.weight.T + m.output_layer.bias)
        torch.testing.assert_close(m(2 * x[:1]), m(torch.cat([2 * x[:1], x]))[:1])  # eval: no batch dependence
