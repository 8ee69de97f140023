"""Fast-SCNN (Poudel et al., 2019, "Fast-SCNN: Fast Semantic Segmentation Network").

Learning to downsample (1/8) -> global feature extractor (bottlenecks to 1/32,
pyramid pooling) -> feature fusion (1/8) -> classifier -> bilinear upsampling to
the input size. About 1.1 M parameters at 19 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def ds_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise-separable convolution: 3x3 depthwise, then 1x1 pointwise."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project."""

    def __init__(self, cin: int, cout: int, expansion: int = 6, stride: int = 1) -> None:
        super().__init__()
        mid = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_relu(cin, mid, 1),
            conv_bn_relu(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def bottlenecks(cin: int, cout: int, n: int, stride: int, expansion: int = 6) -> nn.Sequential:
    layers = [Bottleneck(cin, cout, expansion, stride)]
    layers += [Bottleneck(cout, cout, expansion, 1) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling over bins 1, 2, 3, 6."""

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = bins
        # No BatchNorm on the pooled branches: a 1x1 bin has one value per channel
        # per image, so BatchNorm would fail in training with one image per process.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cin // 4, 1), nn.ReLU(inplace=True)) for _ in bins
        )
        self.project = conv_bn_relu(cin * 2, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = [x]
        for b, branch in zip(self.bins, self.branches):
            y = branch(F.adaptive_avg_pool2d(x, b))
            feats.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.project(torch.cat(feats, 1))


class FeatureFusion(nn.Module):
    """Adds the 1/8 branch and the upsampled global features, each projected to `cout` channels."""

    def __init__(self, high_in: int, low_in: int, cout: int) -> None:
        super().__init__()
        self.low = nn.Sequential(
            conv_bn_relu(low_in, low_in, 3, groups=low_in),
            nn.Conv2d(low_in, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.high = nn.Sequential(nn.Conv2d(high_in, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        # Upsample to the exact size of the 1/8 branch, so odd input sizes work.
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.high(high) + self.low(low), inplace=True)


class FastSCNN(nn.Module):
    """Fast-SCNN: logits (N, C, H, W) at the input size."""

    def __init__(self, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.learning_to_downsample = nn.Sequential(
            conv_bn_relu(3, 32, 3, 2), ds_conv(32, 48, 2), ds_conv(48, 64, 2)
        )
        self.global_features = nn.Sequential(
            bottlenecks(64, 64, 3, 2),
            bottlenecks(64, 96, 3, 2),
            bottlenecks(96, 128, 3, 1),
            PyramidPooling(128, 128),
        )
        self.fusion = FeatureFusion(64, 128, 128)
        self.classifier = nn.Sequential(
            ds_conv(128, 128), ds_conv(128, 128), nn.Dropout(dropout), nn.Conv2d(128, num_classes, 1)
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        high = self.learning_to_downsample(x)
        low = self.global_features(high)
        y = self.classifier(self.fusion(high, low))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (zero bias), unit-scale zero-shift normalisation layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def fastscnn(num_classes: int) -> FastSCNN:
    return FastSCNN(num_classes)
