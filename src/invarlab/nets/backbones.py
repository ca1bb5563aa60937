"""ResNet backbones whose module and parameter names are torchvision's, so state dicts interchange both ways.

The structure follows He et al. 2016 ("Deep Residual Learning") in torchvision's "v1.5" form: a Bottleneck block
puts its stride on the 3x3 conv (conv2), not on the first 1x1. Two departures, both opt-in, make small CPU runs
cheap and keep the names unchanged:

- ``stem="cifar"``: conv1 is a 3x3 stride-1 conv and ``maxpool`` is an ``nn.Identity`` (the usual stem for
  32-64 px images: the ImageNet stem would shrink a 32 px image to 8 px before layer1).
- ``width``: base channels ``round(64 w), round(128 w), round(256 w), round(512 w)``; ``width=0.25`` gives
  16, 32, 64, 128 (ResNet-18 feature dimension 128; ResNet-50, with expansion 4, 512).

Either makes the network a different shape from torchvision's (``is_torchvision_shaped`` is then false) and its
weights can only be stored in invarlab's own checkpoint layout. Dilation (``replace_stride_with_dilation``) and
a missing classifier (``num_classes=0``) change no parameter shape, so such backbones stay torchvision-shaped.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from invarlab.errors import ConfigError

STEMS = ("imagenet", "cifar")
LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _conv3x3(inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps a stride-1 3x3 conv size-preserving at any dilation.
    return nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` (ResNet-18/34).

    Unlike torchvision's, this block accepts ``dilation > 1`` (both convs dilated), so ResNet-18 can also give
    dense stride-8/16 features; parameter shapes do not depend on dilation.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries stride and dilation), 1x1 expand by 4, plus shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name -> (block, blocks per stage); the torchvision model of the same name has exactly these.
ARCHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """A ResNet with torchvision's module names; see the module docstring for ``stem`` and ``width``.

    ``forward(x)`` returns ``fc(flatten(avgpool(layer4(...))))``: logits ``(B, num_classes)``, or with
    ``num_classes=0`` (``fc`` is then an ``nn.Identity``, so the state dict has no ``fc.*``) the pooled features
    ``(B, feature_dim)``. :meth:`forward_features` always returns the pooled features and :meth:`feature_maps`
    the dense maps of chosen stages.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        stem: str = "imagenet",
        width: float = 1.0,
        zero_init_residual: bool = False,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        in_channels: int = 3,
        arch: str | None = None,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"unknown stem {stem!r}: use one of {', '.join(STEMS)}")
        if not width > 0:
            raise ConfigError(
                f"width must be > 0 (got {width}); 1.0 is torchvision's, 0.25 gives 16-128 channels"
            )
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0 (got {num_classes}); 0 gives a headless backbone")
        dilate = list(replace_stride_with_dilation or (False, False, False))
        if len(dilate) != 3:
            raise ConfigError(
                f"replace_stride_with_dilation needs 3 booleans (layer2, layer3, layer4), got {dilate!r}"
            )
        self.arch = arch
        self.stem = stem
        self.width = float(width)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.replace_stride_with_dilation = tuple(bool(d) for d in dilate)
        planes = [max(1, round(c * width)) for c in (64, 128, 256, 512)]

        self.inplanes = planes[0]
        self.dilation = 1
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, planes[0], 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        # Identity keeps the attribute (and forward code) the same for both stems; it has no parameters.
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, planes[2], layers[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, planes[3], layers[3], 2, dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim: int = planes[3] * block.expansion
        self.channels: dict[str, int] = {n: p * block.expansion for n, p in zip(LAYERS, planes, strict=True)}
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.zero_init_residual = zero_init_residual
        self._init_weights(zero_init_residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        # As torchvision: a dilated stage turns its stride into dilation, and its first block still uses the
        # previous dilation, so the receptive field grows exactly as it would have with the stride.
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialisation: He normal (fan_out) convs, BN gamma 1 / beta 0; Linear keeps its default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # gamma = 0 on each block's last BN makes every residual branch start as the identity
            # (Goyal et al. 2017), which helps large-batch training.
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn.weight)

    @property
    def is_torchvision_shaped(self) -> bool:
        """True when every parameter has the name and shape of ``torchvision.models.<arch>`` (fc aside)."""
        return self.arch in ARCHS and self.stem == "imagenet" and self.width == 1.0 and self.in_channels == 3

    @property
    def output_stride(self) -> int:
        """Input pixels per layer4 pixel: 32 for the ImageNet stem, 8 for CIFAR; halved per dilated stage."""
        stride = 4 if self.stem == "imagenet" else 1
        for d in self.replace_stride_with_dilation:
            stride *= 1 if d else 2
        return stride

    @property
    def arch_config(self) -> dict[str, Any]:
        """Keyword arguments that make :func:`build_backbone` rebuild this architecture (stored in checkpoints)."""
        return {
            "name": self.arch,
            "stem": self.stem,
            "width": self.width,
            "num_classes": self.num_classes,
            "replace_stride_with_dilation": list(self.replace_stride_with_dilation),
            "in_channels": self.in_channels,
        }

    def feature_maps(self, x: Tensor, layers: Sequence[str] = ("layer4",)) -> dict[str, Tensor]:
        """Dense maps ``(B, channels[name], H / s, W / s)`` of the named stages (any of ``stem``, ``layer1``..
        ``layer4``). Stops after the deepest stage asked for, so ``("layer3",)`` never runs layer4."""
        names = ("stem", *LAYERS)
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ConfigError(f"unknown feature layer(s) {unknown}: use any of {', '.join(names)}")
        last = max(names.index(n) for n in layers)
        out: dict[str, Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if "stem" in layers:
            out["stem"] = x
        for name in LAYERS[:last]:
            x = getattr(self, name)(x)
            if name in layers:
                out[name] = x
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, feature_dim)``: global average of layer4, before ``fc``."""
        return torch.flatten(self.avgpool(self.feature_maps(x, ("layer4",))["layer4"]), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def build_backbone(
    name: str,
    stem: str = "imagenet",
    width: float = 1.0,
    *,
    num_classes: int = 0,
    zero_init_residual: bool = False,
    replace_stride_with_dilation: Sequence[bool] | None = None,
    in_channels: int = 3,
) -> ResNet:
    """Build ``resnet18/34/50/101/152``. Headless by default (``num_classes=0``: forward gives ``(B, D)``
    pooled features, ``D = model.feature_dim``), since in this library a backbone feeds projection heads;
    ``num_classes=1000, stem="imagenet", width=1.0`` is exactly ``torchvision.models.<name>()``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ARCHS:
        near = difflib.get_close_matches(key, ARCHS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown backbone {name!r}{hint}: use one of {', '.join(ARCHS)}")
    block, layers = ARCHS[key]
    return ResNet(
        block,
        layers,
        num_classes=num_classes,
        stem=stem,
        width=width,
        zero_init_residual=zero_init_residual,
        replace_stride_with_dilation=replace_stride_with_dilation,
        in_channels=in_channels,
        arch=key,
    )


def resnet18(**kwargs: Any) -> ResNet:
    """``torchvision.models.resnet18`` defaults (1000-class fc); same keywords as :func:`build_backbone`."""
    kwargs.setdefault("num_classes", 1000)
    return build_backbone("resnet18", **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """``torchvision.models.resnet50`` defaults (1000-class fc); same keywords as :func:`build_backbone`."""
    kwargs.setdefault("num_classes", 1000)
    return build_backbone("resnet50", **kwargs)
