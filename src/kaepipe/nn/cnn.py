"""A small convolutional classifier for 28 x 28 images (the worked example's network: Fashion-MNIST).

`SmallCNN` takes the pipeline's flattened features, (n, in_channels * image_size**2) as kaepipe's IDX
sources give them (normalised 784-vectors), and reshapes them inside `forward`. Its stages are named
submodules, each an `nn.Sequential` ending in its nonlinearity (or pool), so that a forward hook on one
gives that layer's representation:

    block1  Conv 3x3 (pad 1) -> ReLU -> MaxPool 2      (n, 8, 14, 14)   for the default sizes
    block2  Conv 3x3 (pad 1) -> ReLU -> MaxPool 2      (n, 16, 7, 7)    784 values
    fc1     Flatten -> Linear -> ReLU                  (n, 128)
    fc2     Linear -> ReLU                             (n, 64)
    out     Linear                                     (n, classes)     the logits

(one `block<i>` per entry of `channels`, one `fc<j>` per entry of `hidden`). `forward` has no data-dependent
control flow, so `torch.fx.symbolic_trace` traces it. The weights are PyTorch's default initialisation,
drawn from torch's global generator (seed it first, e.g. `kaepipe.nn.train.seed_all`). Use it from a config
as `kaepipe.nn.cnn:SmallCNN` with keyword arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Convolution blocks (3x3 conv, ReLU, 2x2 max-pool), fully connected ReLU layers and a linear output."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (8, 16),
                 hidden: Sequence[int] = (128, 64), classes: int = 10) -> None:
        super().__init__()
        channels, hidden = tuple(int(c) for c in channels), tuple(int(h) for h in hidden)
        for name, values in (("in_channels", (in_channels,)), ("image_size", (image_size,)), ("channels", channels),
                             ("hidden", hidden), ("classes", (classes,))):
            if any(v < 1 for v in values):
                raise ValueError(f"SmallCNN: {name} must be positive, got {values if len(values) > 1 else values[0]}")
        side = int(image_size) // 2 ** len(channels)
        if side < 1:
            raise ValueError(f"SmallCNN: {len(channels)} pooling blocks shrink a {image_size} x {image_size} image "
                             "to nothing; use fewer channels entries or larger images")
        self.in_channels, self.image_size, self.classes = int(in_channels), int(image_size), int(classes)
        self.channels, self.hidden = channels, hidden
        self.layers: tuple[str, ...] = ()  # names of the hidden stages, input to output (`out` excluded)
        c_in = self.in_channels
        for i, c_out in enumerate(channels, 1):
            self._add(f"block{i}", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            c_in = c_out
        d_in = c_in * side * side
        for j, d_out in enumerate(hidden, 1):
            head = (nn.Flatten(),) if j == 1 else ()
            self._add(f"fc{j}", *head, nn.Linear(d_in, d_out), nn.ReLU())
            d_in = d_out
        self.out = nn.Sequential(*(() if hidden else (nn.Flatten(),)), nn.Linear(d_in, self.classes))
        self.flat_features = c_in * side * side  # values out of the last convolution block

    def _add(self, name: str, *modules: nn.Module) -> None:
        self.add_module(name, nn.Sequential(*modules))
        self.layers = (*self.layers, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, self.in_channels, self.image_size, self.image_size)
        for name in self.layers:
            h = getattr(self, name)(h)
        return self.out(h)


def parameter_count(in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (8, 16),
                    hidden: Sequence[int] = (128, 64), classes: int = 10) -> int:
    """The number of parameters of a `SmallCNN` of these sizes, in closed form (weights and biases)."""
    total, c_in = 0, in_channels
    for c_out in channels:
        total += c_in * c_out * 9 + c_out
        c_in = c_out
    d_in = c_in * (image_size // 2 ** len(channels)) ** 2
    for d_out in (*hidden, classes):
        total += d_in * d_out + d_out
        d_in = d_out
    return total
