"""ResNets of the reference zoo, with and without shortcut connections.

Two families share one block design:
- `ResNet`: four stages of 64..512 channels (the ImageNet layout run on 32x32 CIFAR images),
  pooled 4x4 at the end: resnet18/34/50/101/152.
- `ResNetCifar`: three stages of 16k, 32k, 64k channels (k = width factor), pooled 8x8:
  resnet20..110 (k=1) and the wide wrn56_k / wrn110_k.
State_dict keys follow the reference checkpoints exactly (conv1, bn1, layerS.B.convN, .shortcut.0/1, linear).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    import torch


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def projection_shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    """1x1 conv + BN that matches shape when a block changes width or resolution."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs; with `shortcut`, the input (projected if needed) is added before the last ReLU."""
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.use_shortcut = shortcut
        if shortcut and (stride != 1 or cin != planes):
            self.shortcut = projection_shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.use_shortcut:
            out = out + (self.shortcut(x) if hasattr(self, "shortcut") else x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4). Without `shortcut` the reference applies no final ReLU."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.use_shortcut = shortcut
        if shortcut and (stride != 1 or cin != cout):
            self.shortcut = projection_shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if not self.use_shortcut:
            return out  # the reference's Bottleneck_noshortcut ends here, without a ReLU
        out = out + (self.shortcut(x) if hasattr(self, "shortcut") else x)
        return F.relu(out)


def make_stage(block: type[Union[BasicBlock, Bottleneck]], cin: int, planes: int, num_blocks: int,
               stride: int, shortcut: bool) -> tuple[nn.Sequential, int]:
    """A stage of `num_blocks` blocks; only the first one strides. Returns (stage, out_channels)."""
    layers = []
    for s in [stride] + [1] * (num_blocks - 1):
        layers.append(block(cin, planes, s, shortcut))
        cin = planes * block.expansion
    return nn.Sequential(*layers), cin


class ResNet(nn.Module):
    """Stages of `widths` channels; the first stage keeps resolution, later ones halve it."""

    def __init__(self, block: type[Union[BasicBlock, Bottleneck]], num_blocks: Sequence[int],
                 widths: Sequence[int], pool: int, shortcut: bool = True, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = pool  # kernel of the final average pool (4 for 4 stages, 8 for 3, on 32x32 inputs)
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (n, w) in enumerate(zip(num_blocks, widths)):
            stage, cin = make_stage(block, cin, w, n, 1 if i == 0 else 2, shortcut)
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(num_blocks)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:    # x: (B, 3, 32, 32)
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.avg_pool2d(out, self.pool)                  # (B, C, 1, 1)
        return self.linear(out.flatten(1))                  # (B, num_classes)


def resnet_imagenet_layout(block: type[Union[BasicBlock, Bottleneck]], num_blocks: Sequence[int],
                           shortcut: bool) -> ResNet:
    return ResNet(block, num_blocks, widths=(64, 128, 256, 512), pool=4, shortcut=shortcut)


def resnet_cifar_layout(depth: int, k: int = 1, shortcut: bool = True) -> ResNet:
    """The 6n+2-layer CIFAR ResNet of He et al.: n basic blocks per stage, widths 16k, 32k, 64k."""
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n, n, n], widths=(16 * k, 32 * k, 64 * k), pool=8, shortcut=shortcut)


IMAGENET_BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
                   50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]),
                   152: (Bottleneck, [3, 8, 36, 3])}


# The reference's factory names (models/resnet.py there), which users' scripts call; `--model` is the
# name in lower case (ResNet56 -> resnet56, WRN56_2 -> wrn56_2).
def ResNet18() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[18], True)
def ResNet18_noshort() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[18], False)
def ResNet34() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[34], True)
def ResNet34_noshort() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[34], False)
def ResNet50() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[50], True)
def ResNet50_noshort() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[50], False)
def ResNet101() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[101], True)
def ResNet101_noshort() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[101], False)
def ResNet152() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[152], True)
def ResNet152_noshort() -> ResNet: return resnet_imagenet_layout(*IMAGENET_BLOCKS[152], False)
def ResNet20() -> ResNet: return resnet_cifar_layout(20)
def ResNet56() -> ResNet: return resnet_cifar_layout(56)
def ResNet110() -> ResNet: return resnet_cifar_layout(110)
def ResNet20_noshort() -> ResNet: return resnet_cifar_layout(20, shortcut=False)
def ResNet32_noshort() -> ResNet: return resnet_cifar_layout(32, shortcut=False)
def ResNet44_noshort() -> ResNet: return resnet_cifar_layout(44, shortcut=False)
def ResNet50_16_noshort() -> ResNet: return resnet_cifar_layout(50, shortcut=False)
def ResNet56_noshort() -> ResNet: return resnet_cifar_layout(56, shortcut=False)
def ResNet110_noshort() -> ResNet: return resnet_cifar_layout(110, shortcut=False)
def WRN56_2() -> ResNet: return resnet_cifar_layout(56, 2)
def WRN56_2_noshort() -> ResNet: return resnet_cifar_layout(56, 2, shortcut=False)
def WRN56_4() -> ResNet: return resnet_cifar_layout(56, 4)
def WRN56_4_noshort() -> ResNet: return resnet_cifar_layout(56, 4, shortcut=False)
def WRN56_8() -> ResNet: return resnet_cifar_layout(56, 8)
def WRN56_8_noshort() -> ResNet: return resnet_cifar_layout(56, 8, shortcut=False)
def WRN110_2_noshort() -> ResNet: return resnet_cifar_layout(110, 2, shortcut=False)
def WRN110_4_noshort() -> ResNet: return resnet_cifar_layout(110, 4, shortcut=False)


FACTORIES = (ResNet18, ResNet18_noshort, ResNet34, ResNet34_noshort, ResNet50, ResNet50_noshort, ResNet101,
             ResNet101_noshort, ResNet152, ResNet152_noshort, ResNet20, ResNet56, ResNet110, ResNet20_noshort,
             ResNet32_noshort, ResNet44_noshort, ResNet50_16_noshort, ResNet56_noshort, ResNet110_noshort, WRN56_2,
             WRN56_2_noshort, WRN56_4, WRN56_4_noshort, WRN56_8, WRN56_8_noshort, WRN110_2_noshort, WRN110_4_noshort)


def zoo() -> dict[str, Callable[[], nn.Module]]:
    """Model name -> factory, for every ResNet name of the reference zoo."""
    return {f.__name__.lower(): f for f in FACTORIES}
