"""GoogLeNet / InceptionV1 in torchvision's layout, without torchvision.

The module and parameter names are torchvision's (``conv1.conv.weight``,
``inception4c.branch2.1.bn.running_mean``, …), so a ``googlenet`` state dict
saved from torchvision loads as is (its auxiliary classifiers are dropped).
Activations are ``nn.ReLU`` modules, which keeps every site hookable and the
network linearisable for expanded weights. Sites are module paths:
``inception4c`` (a block's concatenated output [batch channel h w]),
``inception4c.branch2`` (one branch), ``fc`` (logits).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

# (in, 1×1, 3×3 reduce, 3×3, "5×5" reduce, "5×5" (a 3×3 in torchvision's weights), pool proj)
BLOCKS: dict[str, tuple[int, ...]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: torchvision's BasicConv2d.

    Example: ``ConvBN(3, 64, 7, 2, 3)(torch.rand(1, 3, 224, 224))`` → [1 64 112 112].
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated along channels.

    Example::

        InceptionBlock(*BLOCKS["inception3a"])(torch.rand(1, 192, 28, 28))    # [1 256 28 28]
    """

    def __init__(self, c_in: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int):
        super().__init__()
        self.branch1 = ConvBN(c_in, c1, 1)
        self.branch2 = nn.Sequential(ConvBN(c_in, r3, 1), ConvBN(r3, c3, 3, padding=1))
        self.branch3 = nn.Sequential(ConvBN(c_in, r5, 1), ConvBN(r5, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     ConvBN(c_in, pool, 1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """InceptionV1 for 1000 ImageNet classes; takes inputs scaled as its weights expect.

    Example::

        GoogLeNet().eval()(torch.rand(1, 3, 224, 224)).shape     # torch.Size([1, 1000])
        model = load_vision("googlenet", weights="googlenet.pth")  # trained, as a Model
    """

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBN(64, 64, 1)
        self.conv3 = ConvBN(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception3a", "inception3b"):
            self.add_module(name, InceptionBlock(*BLOCKS[name]))
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            self.add_module(name, InceptionBlock(*BLOCKS[name]))
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name in ("inception5a", "inception5b"):
            self.add_module(name, InceptionBlock(*BLOCKS[name]))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x: Float[Tensor, "batch 3 h w"]) -> Float[Tensor, "batch classes"]:
        for child in self.children():
            if child is self.fc:
                break
            x = child(x)
        return self.fc(torch.flatten(x, 1))
