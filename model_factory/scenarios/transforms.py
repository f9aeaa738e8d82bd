"""Input shifts that turn one image data set into the domains of an NI/NIC scenario.

Each shift is a small frozen object: called on a float32 batch ``[N, C, H, W]`` it returns a new
batch of the same shape, and its ``name`` is the experience's ``domain``. Experience ``k`` of a
scenario uses level ``k`` (:func:`domain_shift`); level 0 is always the identity, so the first
experience sees the original data.

- :class:`Rotation`: rotation by a fixed angle, with ``affine_grid``/``grid_sample`` (bilinear,
  zeros outside the image), as in Rotated MNIST.
- :class:`GaussianNoise`: additive N(0, std^2) noise, clipped back to [0, 1].
- :class:`PixelPermutation`: one fixed shuffle of the pixel positions, as in Permuted MNIST
  (Goodfellow et al., 2013).

References:
    I. Goodfellow et al. An Empirical Investigation of Catastrophic Forgetting in Gradient-Based
    Neural Networks. arXiv:1312.6211, 2013.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ShiftKind = Literal["rotation", "noise", "permutation"]
SHIFT_KINDS: tuple[str, ...] = get_args(ShiftKind)


class InputShift(Protocol):
    """What every shift offers: a name (the domain) and a call on an image batch."""

    @property
    def name(self) -> str: ...

    def __call__(self, images: Tensor) -> Tensor: ...


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.dtype != torch.float32:
        raise ValueError(
            f"expected float32 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )


@dataclass(frozen=True)
class Rotation:
    """Rotate every image by ``degrees`` counter-clockwise (as displayed) about its centre.

    Parameters:
        degrees: the angle; multiples of 360 return an exact copy.

    Examples:
        >>> import torch
        >>> image = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)
        >>> Rotation(90.0)(image)[0, 0].round()
        tensor([[2., 5., 8.],
                [1., 4., 7.],
                [0., 3., 6.]])
        >>> torch.equal(Rotation(0.0)(image), image), Rotation(30.0).name
        (True, 'rotation=30deg')
    """

    degrees: float

    @property
    def name(self) -> str:
        return f"rotation={self.degrees:g}deg"

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        if images.shape[-1] != images.shape[-2]:
            # affine_grid works in coordinates normalised per axis: on a non-square image a
            # rotation there is a shear in pixels.
            raise ValueError(f"Rotation needs square images, got {tuple(images.shape[-2:])}")
        if self.degrees % 360 == 0:
            # Bilinear resampling at the pixel centres is exact only up to rounding.
            return images.clone()
        angle = math.radians(self.degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        # theta maps output to input coordinates (x right, y down): sampling the input at the
        # output position rotated clockwise turns the picture counter-clockwise.
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype)
        grid = F.affine_grid(
            theta.expand(len(images), 2, 3), list(images.shape), align_corners=False
        )
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )


@dataclass(frozen=True)
class GaussianNoise:
    """Add independent N(0, ``std``^2) noise to every pixel, then clip to [0, 1].

    Parameters:
        std: noise standard deviation in pixel units ([0, 1] scale); 0 returns a copy.
        seed: seed of the noise; the same seed on the same batch gives the same output.

    Examples:
        >>> import torch
        >>> images = torch.full((2, 1, 4, 4), 0.5)
        >>> noisy = GaussianNoise(0.1, seed=0)(images)
        >>> bool(noisy.ne(images).all()), bool(noisy.min() >= 0), bool(noisy.max() <= 1)
        (True, True, True)
        >>> torch.equal(noisy, GaussianNoise(0.1, seed=0)(images)), GaussianNoise(0.1, 0).name
        (True, 'noise-std=0.1')
    """

    std: float
    seed: int

    @property
    def name(self) -> str:
        return f"noise-std={self.std:g}"

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        if self.std == 0:
            return images.clone()
        rng = np.random.default_rng(self.seed)
        noise = torch.from_numpy(rng.standard_normal(tuple(images.shape), dtype=np.float32))
        return (images + self.std * noise).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class PixelPermutation:
    """Move every pixel to a new position, the same shuffle for every image and channel.

    Parameters:
        index: which permutation; 0 is the identity, ``k > 0`` a random permutation drawn from
            ``(seed, k)``.
        seed: seed of the permutations.

    Examples:
        >>> import torch
        >>> images = torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2)
        >>> shuffled = PixelPermutation(1, seed=0)(images)
        >>> sorted(shuffled[0].flatten().tolist()) == images[0].flatten().tolist()
        True
        >>> torch.equal(PixelPermutation(0, seed=0)(images), images)
        True
    """

    index: int
    seed: int

    @property
    def name(self) -> str:
        return f"permutation-{self.index}"

    def permutation(self, n_pixels: int) -> Tensor:
        """The pixel order, int64 ``[n_pixels]``: output pixel ``i`` is input pixel ``p[i]``."""
        if self.index == 0:
            return torch.arange(n_pixels)
        rng = np.random.default_rng((self.seed, self.index))
        return torch.from_numpy(rng.permutation(n_pixels))

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        n, c, h, w = images.shape
        order = self.permutation(h * w)
        return images.reshape(n, c, h * w)[:, :, order].reshape(n, c, h, w)


def domain_shift(
    kind: ShiftKind,
    level: int,
    *,
    seed: int,
    rotation_step_deg: float = 30.0,
    noise_step_std: float = 0.1,
) -> InputShift:
    """The shift of experience ``level``: ``level * rotation_step_deg`` degrees of rotation,
    noise of std ``level * noise_step_std``, or the ``level``-th pixel permutation.

    Parameters:
        kind: ``"rotation"``, ``"noise"`` or ``"permutation"``.
        level: 0-based experience position; level 0 is the identity.
        seed: seed of the noise and of the permutations.
        rotation_step_deg: rotation added per level, degrees.
        noise_step_std: noise standard deviation added per level (pixels in [0, 1]).

    Examples:
        >>> [domain_shift("rotation", k, seed=0).name for k in range(3)]
        ['rotation=0deg', 'rotation=30deg', 'rotation=60deg']
        >>> domain_shift("noise", 2, seed=0, noise_step_std=0.05).name
        'noise-std=0.1'
        >>> domain_shift("blur", 1, seed=0)
        Traceback (most recent call last):
        ...
        ValueError: transform must be one of ('rotation', 'noise', 'permutation'), got 'blur'
    """
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    if kind == "rotation":
        return Rotation(level * rotation_step_deg)
    if kind == "noise":
        if noise_step_std < 0:
            raise ValueError(f"noise_step_std must be >= 0, got {noise_step_std}")
        noise_seed = int(np.random.SeedSequence((seed, level)).generate_state(1)[0])
        return GaussianNoise(round(level * noise_step_std, 12), seed=noise_seed)
    if kind == "permutation":
        return PixelPermutation(level, seed=seed)
    raise ValueError(f"transform must be one of {SHIFT_KINDS}, got {kind!r}")
