"""Small models for the 8x8 digits set that ships inside scikit-learn (input (B, 1, 8, 8), 10 classes).

- `digits_mlp`: 64 -> 32 -> 10, no BatchNorm; cheap enough to plot a 101x101 surface in seconds.
- `digits_cnn`: two conv layers with BatchNorm, so `--dir_type states` and `biasbn` matter for it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch.nn as nn

if TYPE_CHECKING:
    import torch


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 8, 8)
        return self.fc2(self.fc1(x.flatten(1)).relu())


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # x: (B, 1, 8, 8)
        out = self.bn1(self.conv1(x)).relu()                  # (B, 16, 8, 8)
        out = self.pool(self.bn2(self.conv2(out)).relu())     # (B, 32, 4, 4)
        return self.fc2(self.fc1(out.flatten(1)).relu())      # (B, 10)


def zoo() -> dict[str, Callable[[], nn.Module]]:
    return {"digits_mlp": DigitsMLP, "digits_cnn": DigitsCNN}
