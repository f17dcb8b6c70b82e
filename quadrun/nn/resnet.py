"""CIFAR ResNets (He et al. 2016, basic blocks, option-A shortcut) and quadratic QResNets.

    resnet(20)                                  # ResNet20, 0.270M parameters
    qresnet(20, form="full", init="relinear")   # QResNet20, 0.806M parameters
    qresnet(56, rezero=True)                    # one ReZero scalar per block (init 0)

Depths 20/32/44/56/110 have [3,3,3] / [5,5,5] / [7,7,7] / [9,9,9] / [18,18,18] blocks of
widths 16, 32, 64. In a QResNet every 3x3 conv inside a block is a `QuadraticConv2d` (bias
on all three parts, as in the public ReLinear code); the stem conv stays conventional. That
layout reproduces the reference parameter counts exactly (QResNet20/56/110:
0.806M/2.555M/5.178M; ResNet20/56/110: 0.270M/0.853M/1.728M).

With `init="relinear"` a QResNet whose r weights equal a ResNet's computes the same
function (`load_conventional` copies them), which is the point of ReLinear.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from quadrun.nn.quadratic import QuadraticConv2d

BLOCKS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


class ShortcutA(nn.Module):
    """Option A: subsample spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            half = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra - half))
        return x


def conv3x3(cin: int, cout: int, stride: int, form: Optional[str], init: str) -> nn.Module:
    """A conventional conv (form None, no bias: BN follows) or a quadratic one."""
    if form is None:
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    return QuadraticConv2d(cin, cout, 3, stride, 1, bias=True, form=form, init=init)


class BasicBlock(nn.Module):
    """relu(alpha * bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); alpha only with ReZero."""

    def __init__(self, cin: int, cout: int, stride: int, form: Optional[str] = None,
                 init: str = "relinear", rezero: bool = False):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, form, init)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout, 1, form, init)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = ShortcutA(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()
        self.alpha = nn.Parameter(torch.zeros(())) if rezero else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.alpha is not None:
            out = self.alpha * out
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv -> three stages of basic blocks (widths w, 2w, 4w) -> global pool -> linear.

    `form` None gives the conventional ResNet; "full" / "compact" a QResNet."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 width: int = 16, form: Optional[str] = None, init: str = "relinear",
                 rezero: bool = False, strides: Sequence[int] = (1, 2, 2)):
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"depth must be one of {sorted(BLOCKS)}, got {depth}")
        self.depth, self.form = depth, form
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, stride in enumerate(strides):
            cout = width * 2 ** i
            blocks = []
            for j in range(BLOCKS[depth]):
                blocks.append(BasicBlock(cin, cout, stride if j == 0 else 1, form, init, rezero))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # He init for the conventional parts, as in the CIFAR ResNet
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet(depth: int = 20, **kw) -> CifarResNet:
    return CifarResNet(depth, form=None, **kw)


def qresnet(depth: int = 20, form: str = "full", init: str = "relinear", rezero: bool = False,
            **kw) -> CifarResNet:
    return CifarResNet(depth, form=form, init=init, rezero=rezero, **kw)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def load_conventional(qnet: CifarResNet, net: CifarResNet) -> None:
    """Copy a conventional ResNet's weights into a QResNet of the same depth and width:
    conv weights become the r weights, BN/stem/fc are copied as they are. The quadratic
    parts (g, b) are left as they are (zero/one after a relinear init)."""
    qparams = dict(qnet.named_parameters())
    qbuffers = dict(qnet.named_buffers())
    for name, p in net.named_parameters():
        target = qparams.get(name)
        if target is None:
            target = qparams.get(name.replace(".weight", ".weight_r"))
        if target is None or target.shape != p.shape:
            raise ValueError(f"no matching QResNet parameter for {name}")
        target.copy_(p)
    for name, b in net.named_buffers():
        qbuffers[name].copy_(b)
