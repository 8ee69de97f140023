"""Fast-SCNN (Poudel et al., 2019, "Fast-SCNN: Fast Semantic Segmentation Network").

Learning to downsample (1/8) -> global feature extractor (bottlenecks to 1/32,
pyramid pooling) -> feature fusion (1/8) -> classifier -> bilinear upsampling to
the input size. About 1.1 M parameters at 19 classes.
"""

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin, cout, kernel=3, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def ds_conv(cin, cout, stride=1):
    """Depthwise-separable convolution: 3x3 depthwise, then 1x1 pointwise."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project."""

    def __init__(self, cin, cout, expansion=6, stride=1):
        super().__init__()
        mid = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_relu(cin, mid, 1),
            conv_bn_relu(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def bottlenecks(cin, cout, n, stride, expansion=6):
    layers = [Bottleneck(cin, cout, expansion, stride)]
    layers += [Bottleneck(cout, cout, expansion, 1) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling over bins 1, 2, 3, 6."""

    def __init__(self, cin, cout, bins=(1, 2, 3, 6)):
        super().__init__()
        self.bins = bins
        # No BatchNorm on the pooled branches: a 1x1 bin has one value per channel
        # per image, so BatchNorm would fail in training with one image per process.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cin // 4, 1), nn.ReLU(inplace=True)) for _ in bins
        )
        self.project = conv_bn_relu(cin * 2, cout, 1)

    def forward(self, x):
        size = x.shape[-2:]
        feats = [x]
        for b, branch in zip(self.bins, self.branches):
            y = branch(F.adaptive_avg_pool2d(x, b))
            feats.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.project(torch.cat(feats, 1))


class FeatureFusion(nn.Module):
    def __init__(self, high_in, low_in, cout):
        super().__init__()
        self.low = nn.Sequential(
            conv_bn_relu(low_in, low_in, 3, groups=low_in),
            nn.Conv2d(low_in, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.high = nn.Sequential(nn.Conv2d(high_in, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, high, low):
        # Upsample to the exact size of the 1/8 branch, so odd input sizes work.
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.high(high) + self.low(low), inplace=True)


class FastSCNN(nn.Module):
    def __init__(self, num_classes, dropout=0.1):
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

    def forward(self, x):
        size = x.shape[-2:]
        high = self.learning_to_downsample(x)
        low = self.global_features(high)
        y = self.classifier(self.fusion(high, low))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def init_weights(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def fastscnn(num_classes):
    return FastSCNN(num_classes)
