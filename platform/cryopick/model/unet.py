"""The U-Net: micrograph (B, 1, H, W) -> particle probability heatmap (B, 1, H, W).

Encoder: ``depth`` levels of [double 3x3 conv + BatchNorm + ReLU] with 2x2 max-pooling between;
decoder: transposed-conv upsampling, skip concatenation, double conv; a 1x1 conv + sigmoid.
Widths run base, 2*base, ... base * 2**depth (64 -> 1024 by default: 31,042,369 parameters,
the count of the seed design's published U-Net class built layer for layer).
Any input size works: the input is padded to a multiple of 2**depth and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cryopick.config import ModelConfig


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """[3x3 conv -> BatchNorm -> ReLU] x 2.

    The conv keeps its bias (redundant before BatchNorm) so the layout matches the seed design's
    published U-Net parameter for parameter.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base_width`` channels at full resolution."""

    def __init__(self, in_channels: int = 1, base_width: int = 64, depth: int = 4) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for w in widths:
            self.down.append(double_conv(c_prev, w))
            c_prev = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(w * 2, w, 2, stride=2))
            self.up_conv.append(double_conv(w * 2, w))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1, H, W) logits, for any H, W."""
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect keeps image statistics at the border; small inputs fall back to replicate
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.head(x)[..., :h, :w]

    def forward(self, x: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1, H, W) probabilities in [0, 1] (or logits, for the loss).

        Training calls ``model(x, return_logits=True)`` rather than ``forward_logits`` so a
        DistributedDataParallel wrapper sees the call and synchronises gradients.
        """
        logits = self.forward_logits(x)
        return logits if return_logits else torch.sigmoid(logits)


def build_unet(cfg: ModelConfig) -> UNet:
    """A fresh U-Net from its config."""
    return UNet(in_channels=1, base_width=cfg.base_width, depth=cfg.depth)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
