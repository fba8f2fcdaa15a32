"""Small networks shared by the tests of kaepipe.network and kaepipe.api."""

from __future__ import annotations

import torch
from torch import nn


class Skip(nn.Module):
    """out(relu(b(h)) + h) with h = relu(a(x)): the value h goes around module b, so the head after b
    cannot be cut from the graph (it needs h too) and must be given."""

    def __init__(self, n_in: int = 3, width: int = 6, n_out: int = 2) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(n_in, width), nn.Linear(width, width), nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.out(torch.relu(self.b(h)) + h)
