"""The base classifier: a residual MLP (ResMLP) with BatchNorm, and hooks that record its layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kaepipe.config import DictConfig
from kaepipe.network import record


@dataclass(frozen=True)
class ResMLPConfig(DictConfig):
    """Architecture of a ResMLP: input size, width, number of residual blocks and classes."""

    in_features: int
    width: int
    blocks: int
    classes: int
    bn_eps: float = 1e-5


def init_linear(layer: nn.Linear) -> None:
    """Kaiming-normal (ReLU) weights and biases of 0.01, as in the paper's code."""
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    if layer.bias is not None:
        nn.init.constant_(layer.bias, 0.01)


class InputLayer(nn.Module):
    """Linear -> BatchNorm -> ReLU: lifts the input to the network's width."""

    def __init__(self, in_features: int, width: int, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, width)
        self.bn = nn.BatchNorm1d(width, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.linear(x)))


class ResidualBlock(nn.Module):
    """h = ReLU(BN(Linear(x))); h = BN(Linear(h)); out = ReLU(x + h)."""

    def __init__(self, width: int, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.bn1 = nn.BatchNorm1d(width, eps=bn_eps)
        self.fc2 = nn.Linear(width, width)
        self.bn2 = nn.BatchNorm1d(width, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.fc1(x)))
        h = self.bn2(self.fc2(h))
        return torch.relu(x + h)


class ResMLP(nn.Module):
    """Input layer, `blocks` residual blocks of constant width, and a linear output layer."""

    def __init__(self, cfg: ResMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_layer = InputLayer(cfg.in_features, cfg.width, cfg.bn_eps)
        self.blocks = nn.ModuleList(ResidualBlock(cfg.width, cfg.bn_eps) for _ in range(cfg.blocks))
        self.output_layer = nn.Linear(cfg.width, cfg.classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_linear(m)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden representation (output of the last residual block)."""
        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.hidden(x))

    @property
    def layer_names(self) -> list[str]:
        """The qualified names of the modules whose outputs are L0..LB (kaepipe.network.record takes them)."""
        return ["input_layer", *(f"blocks.{i}" for i in range(len(self.blocks)))]

    @property
    def layer_modules(self) -> list[nn.Module]:
        """The modules whose outputs are the representations L0..LB."""
        return [self.input_layer, *self.blocks]


def record_layers(model: ResMLP, x: torch.Tensor, batch_size: int = 4096) -> list[torch.Tensor]:
    """Run the network in eval mode with forward hooks and return the representations L0..LB."""
    return record(model, model.layer_names, x, batch_size)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Predicted classes (argmax of the logits) in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = torch.cat([model(x[s:s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    return out


