"""The networks behind the model templates; each ends in a linear ``head`` that NC updates grow.

Every builder takes ``input_shape`` (without the batch axis) and ``num_classes`` and returns a
:class:`Network`: ``features`` (input -> feature vector) followed by ``head`` (an ``nn.Linear``
from the feature width to the classes).

Example:
    >>> import torch
    >>> net = build_network("lenet5", (1, 28, 28), 10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape, net.head.out_features
    (torch.Size([2, 10]), 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


class Network(nn.Module):
    """``features`` then a linear ``head``; ``head`` is replaced when classes are added."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _mlp_layers(in_dim: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers), width


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0) -> Network:
    """A fully connected network on the flattened input (van de Ven & Tolias use 400-400)."""
    features, width = _mlp_layers(math.prod(input_shape), hidden, dropout)
    return Network(features, width, num_classes)


def tabular_mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64, 64),
                dropout: float = 0.0) -> Network:
    """An MLP for feature vectors, with the inputs batch-normalised (features differ in scale)."""
    features, width = _mlp_layers(math.prod(input_shape), hidden, dropout)
    return Network(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(math.prod(input_shape)),
                                 *list(features)[1:]), width, num_classes)


def lenet5(input_shape: Sequence[int], num_classes: int) -> Network:
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs; a 3x3-kernel variant for 8x8 digits."""
    channels, height, width = input_shape
    if (height, width) == (28, 28):
        features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
    elif (height, width) == (8, 8):
        features = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 2 * 2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
    else:
        raise ValueError(f"lenet5 takes 28x28 or 8x8 inputs (got {height}x{width})")
    return Network(features, 84, num_classes)


MINILM_DIM = 384
"""Width of an all-MiniLM-L6-v2 sentence embedding (the input of ``text-minilm``)."""


def text_minilm(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (),
                dropout: float = 0.0) -> Network:
    """A head over MiniLM sentence embeddings [N, 384]: linear (a probe), or an MLP of ``hidden``.

    The encoder is frozen and lives outside the network (``templates.text.SentenceEncoder``).
    """
    if tuple(input_shape) != (MINILM_DIM,):
        raise ValueError(f"text-minilm takes ({MINILM_DIM},) sentence embeddings "
                         f"(got {tuple(input_shape)})")
    return mlp(input_shape, num_classes, hidden=hidden, dropout=dropout)


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True), nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(input_shape: Sequence[int], num_classes: int) -> Network:
    """ResNet-18 (He et al. 2016) for 32x32x3 inputs, CIFAR-style stem: ~11.2M parameters."""
    channels = input_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True)]
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)]
        in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Network(nn.Sequential(*layers), 512, num_classes)


NETWORKS: dict[str, Callable[..., Network]] = {
    "mlp": mlp, "tabular-mlp": tabular_mlp, "lenet5": lenet5, "resnet18": resnet18,
    "text-minilm": text_minilm}


def build_network(template: str, input_shape: Sequence[int], num_classes: int,
                  **params: Any) -> Network:
    """Build the network of a template; clear errors name an unknown template or parameter."""
    try:
        builder = NETWORKS[template]
    except KeyError:
        raise ValueError(f"unknown model template '{template}' (expected one of: "
                         f"{', '.join(sorted(NETWORKS))})") from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1 (got {num_classes})")
    try:
        return builder(tuple(input_shape), num_classes, **params)
    except TypeError as exc:
        raise ValueError(f"template '{template}': {exc}") from None
