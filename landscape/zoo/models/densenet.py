"""DenseNet-121 of the reference zoo (growth rate 32, blocks of 6, 12, 24, 16 bottleneck layers)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4g channels), BN-ReLU-3x3 conv (g channels); output = [new, input] on channels."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv, then a 2x2 average pool: halves resolution and compresses channels."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, nblocks: Sequence[int], growth: int = 32, reduction: float = 0.5,
                 num_classes: int = 10) -> None:
        super().__init__()
        planes = 2 * growth
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        for i, n in enumerate(nblocks):
            self.add_module(f"dense{i + 1}", nn.Sequential(*[DenseLayer(planes + j * growth, growth)
                                                              for j in range(n)]))
            planes += n * growth
            if i < len(nblocks) - 1:
                out = int(math.floor(planes * reduction))
                self.add_module(f"trans{i + 1}", Transition(planes, out))
                planes = out
        self.num_blocks = len(nblocks)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # x: (B, 3, 32, 32)
        out = self.conv1(x)
        for i in range(1, self.num_blocks):
            out = getattr(self, f"trans{i}")(getattr(self, f"dense{i}")(out))
        out = getattr(self, f"dense{self.num_blocks}")(out)      # (B, C, 4, 4)
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(out.flatten(1))


Bottleneck = DenseLayer   # the reference's name for the layer, Bottleneck(in_planes, growth_rate)


def DenseNet121() -> DenseNet:
    """The reference's factory name (models/densenet.py there)."""
    return DenseNet([6, 12, 24, 16], growth=32)


def zoo() -> dict[str, Callable[[], nn.Module]]:
    return {"densenet121": DenseNet121}
