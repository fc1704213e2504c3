"""VGG-9 of the reference zoo: seven 3x3 conv layers (with BN) and two fully connected layers.

Keys follow the reference checkpoints: `features.<i>` (conv, BN, ReLU, pool in one Sequential),
`fc.0` (Linear) + `fc.1` (BatchNorm1d), `classifier`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence, Union

import torch.nn as nn

if TYPE_CHECKING:
    import torch

CFG_VGG9 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]  # channels, or "M" for a 2x2 max pool


class VGG(nn.Module):
    def __init__(self, cfg: Sequence[Union[int, str]], input_size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                input_size = -(-input_size // 2)  # ceil, as ceil_mode pools
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        n_maps = cin
        self.fc = nn.Sequential(nn.Linear(n_maps * input_size * input_size, n_maps),
                                nn.BatchNorm1d(n_maps), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(n_maps, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 32, 32)
        out = self.features(x).flatten(1)        # (B, 256 * 4 * 4)
        return self.classifier(self.fc(out))     # (B, num_classes)


def VGG9() -> VGG:
    """The reference's factory name (models/vgg.py there)."""
    return VGG(CFG_VGG9)


def zoo() -> dict[str, Callable[[], nn.Module]]:
    return {"vgg9": VGG9}
