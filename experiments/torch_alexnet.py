"""An independent PyTorch implementation of the paper's two-column AlexNet, for speed comparisons.

Written from PAPER.md, not from alexnet_jax: grouped convolutions (groups=2) for the own-column
layers, cuda-convnet conv1 padding (0 top/left, 3 bottom/right), LRN as the paper writes it
(PyTorch divides alpha by n, so it gets alpha * n), dropout 0.5, paper initialisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TorchAlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(9216, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        # LRN per column: normalise each column's maps separately.
        self.lrn = nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5,
                      self.fc6, self.fc7, self.fc8):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)
        for layer in (self.conv2, self.conv4, self.conv5, self.fc6, self.fc7):
            nn.init.ones_(layer.bias)

    def _column_lrn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.lrn(half) for half in x.chunk(2, dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 3, 0, 3))
        x = F.max_pool2d(self._column_lrn(F.relu(self.conv1(x))), 3, 2)
        x = F.max_pool2d(self._column_lrn(F.relu(self.conv2(x))), 3, 2)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)
        x = torch.flatten(x, 1)
        x = F.dropout(F.relu(self.fc6(x)), 0.5, self.training)
        x = F.dropout(F.relu(self.fc7(x)), 0.5, self.training)
        return self.fc8(x)
