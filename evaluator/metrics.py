"""Continual-learning metrics as plain functions over plain data, and the record of one run.

The accuracy matrix ``R`` (``T x T``) holds ``R[i][j]``, the test accuracy on experience ``j``
after training on experience ``i`` (experiences counted from 0). From it: ACC, BWT and FWT
(Lopez-Paz & Ranzato 2017) and forgetting (Chaudhry et al. 2018). The efficiency criteria MS,
SSS and CE (Díaz-Rodríguez et al. 2018) take memory sizes and operation counts instead.
Every function accepts a list of lists, a numpy array or an :class:`AccuracyMatrix`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


class AccuracyMatrix:
    """Accuracies measured during a continual-learning run: ``R[i][j]`` is the accuracy on
    experience ``j``'s test set after training on experience ``i``; NaN where not measured.

    Parameters:
        n_experiences: ``T``, the number of experiences (the matrix is ``T x T``).

    Examples:
        >>> R = AccuracyMatrix(2)
        >>> R.record(0, 0, 0.9)
        >>> R.record(1, 0, 0.7)
        >>> R.record(1, 1, 0.8)
        >>> R.to_dict()
        {'accuracy': [[0.9, None], [0.7, 0.8]]}
        >>> round(acc(AccuracyMatrix.from_dict(R.to_dict())), 2)
        0.75

    References:
        Lopez-Paz, D., & Ranzato, M. (2017). Gradient episodic memory for continual learning.
        NeurIPS 2017, section 4 (the matrix R).
    """

    def __init__(self, n_experiences: int):
        if n_experiences < 1:
            raise ValueError(f"an accuracy matrix needs at least 1 experience (got "
                             f"{n_experiences})")
        self.values = np.full((n_experiences, n_experiences), np.nan)

    @property
    def n_experiences(self) -> int:
        return self.values.shape[0]

    def record(self, i: int, j: int, accuracy: float) -> None:
        """Store the accuracy (in ``[0, 1]``) on experience ``j`` after training on ``i``."""
        T = self.n_experiences
        if not (0 <= i < T and 0 <= j < T):
            raise ValueError(f"R[{i}][{j}] is outside a {T} x {T} accuracy matrix")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1] (got {accuracy} for R[{i}][{j}])")
        self.values[i, j] = accuracy

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.values.astype(dtype or float, copy=True)

    def to_dict(self) -> dict[str, list[list[float | None]]]:
        """JSON-safe form: the rows, with ``None`` where not measured."""
        return {"accuracy": [[None if math.isnan(a) else float(a) for a in row]
                             for row in self.values]}

    @classmethod
    def from_dict(cls, data: dict[str, list[list[float | None]]]) -> AccuracyMatrix:
        """Inverse of :meth:`to_dict`."""
        rows = data["accuracy"]
        matrix = cls(len(rows))
        matrix.values = _square([[np.nan if a is None else a for a in row] for row in rows])
        return matrix


def _square(R: ArrayLike) -> np.ndarray:
    """``R`` as a float array, if it is a non-empty square matrix."""
    try:
        values = np.array(R, dtype=float)
    except ValueError:  # ragged rows
        raise ValueError("an accuracy matrix must be square (T x T, T >= 1); its rows differ "
                         "in length") from None
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        raise ValueError(f"an accuracy matrix must be square (T x T, T >= 1); got shape "
                         f"{values.shape}")
    return values


def _at_least_two(values: np.ndarray, metric: str) -> int:
    T = values.shape[0]
    if T < 2:
        raise ValueError(f"{metric} needs at least 2 experiences (got {T})")
    return T


def _entry(values: np.ndarray, i: int, j: int) -> float:
    """``R[i][j]``, or a ValueError naming it if it was not measured."""
    a = values[i, j]
    if math.isnan(a):
        raise ValueError(f"R[{i}][{j}] (accuracy on experience {j} after training on "
                         f"experience {i}) is not measured")
    return float(a)


def acc(R: ArrayLike) -> float:
    """Average accuracy: the mean over all experiences of the accuracy after the last one.

    ``ACC = 1/T * sum_{j=0}^{T-1} R[T-1][j]``

    Examples:
        >>> R = [[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.6, 0.7, 0.85]]
        >>> round(acc(R), 4)
        0.7167

    References:
        Lopez-Paz, D., & Ranzato, M. (2017). Gradient episodic memory for continual learning.
        NeurIPS 2017, eq. 2 (ACC).
    """
    values = _square(R)
    T = values.shape[0]
    return sum(_entry(values, T - 1, j) for j in range(T)) / T


def bwt(R: ArrayLike) -> float:
    """Backward transfer: how learning later experiences changed accuracy on earlier ones
    (negative: forgetting).

    ``BWT = 1/(T-1) * sum_{j=0}^{T-2} (R[T-1][j] - R[j][j])``

    Examples:
        >>> R = [[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.6, 0.7, 0.85]]
        >>> round(bwt(R), 4)
        -0.2

    References:
        Lopez-Paz, D., & Ranzato, M. (2017). Gradient episodic memory for continual learning.
        NeurIPS 2017, eq. 3 (BWT).
    """
    values = _square(R)
    T = _at_least_two(values, "BWT")
    return sum(_entry(values, T - 1, j) - _entry(values, j, j) for j in range(T - 1)) / (T - 1)


def fwt(R: ArrayLike, b: Sequence[float]) -> float:
    """Forward transfer: how learning earlier experiences helps an experience before it is
    learned, compared with a randomly initialised model.

    ``FWT = 1/(T-1) * sum_{j=1}^{T-1} (R[j-1][j] - b[j])``, where ``b[j]`` is the accuracy on
    experience ``j`` of the model at random initialisation (``b[0]`` is not used).

    Examples:
        >>> R = [[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.6, 0.7, 0.85]]
        >>> round(fwt(R, b=[0.1, 0.1, 0.1]), 4)
        0.1

    References:
        Lopez-Paz, D., & Ranzato, M. (2017). Gradient episodic memory for continual learning.
        NeurIPS 2017, eq. 4 (FWT).
    """
    values = _square(R)
    T = _at_least_two(values, "FWT")
    baseline = np.asarray(b, dtype=float)
    if baseline.shape != (T,):
        raise ValueError(f"b must hold one accuracy per experience ({T}); got shape "
                         f"{baseline.shape}")
    missing = [j for j in range(1, T) if math.isnan(baseline[j])]
    if missing:
        raise ValueError(f"b[{missing[0]}] (accuracy of the random model on experience "
                         f"{missing[0]}) is not measured")
    return sum(_entry(values, j - 1, j) - float(baseline[j]) for j in range(1, T)) / (T - 1)


def forgetting(R: ArrayLike) -> float:
    """Average forgetting: how far accuracy on each earlier experience fell from its best.

    ``F = 1/(T-1) * sum_{j=0}^{T-2} (max_{l=0}^{T-2} R[l][j] - R[T-1][j])``

    Entries ``R[l][j]`` with ``j <= l <= T-2`` and ``R[T-1][j]`` are required; entries with
    ``l < j`` (before experience ``j`` was learned) enter the maximum when they were measured.

    Examples:
        >>> R = [[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.6, 0.7, 0.85]]
        >>> round(forgetting(R), 4)
        0.2

    References:
        Chaudhry, A., Dokania, P. K., Ajanthan, T., & Torr, P. H. S. (2018). Riemannian walk
        for incremental learning: understanding forgetting and intransigence. ECCV 2018,
        eqs. 6-7 (forgetting measure).
    """
    values = _square(R)
    T = _at_least_two(values, "forgetting")
    total = 0.0
    for j in range(T - 1):
        learned = [_entry(values, i, j) for i in range(j, T - 1)]
        before = [float(a) for a in values[:j, j] if not math.isnan(a)]
        total += max(learned + before) - _entry(values, T - 1, j)
    return total / (T - 1)


def _positive(values: Iterable[float], what: str, allow_zero: bool) -> list[float]:
    checked = [float(v) for v in values]
    if not checked:
        raise ValueError(f"{what}: needs at least one experience")
    bad = [v for v in checked if not (v > 0 or (allow_zero and v == 0)) or math.isinf(v)]
    if bad:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what}: every value must be finite and {bound} (got {bad[0]})")
    return checked


def model_size_efficiency(model_bytes: Sequence[float]) -> float:
    """MS: how little the model grew over the experiences (1: never grew).

    ``MS = min(1, 1/N * sum_{i=1}^{N} Mem(theta_1) / Mem(theta_i))``, where ``Mem(theta_i)`` is
    the model's size (bytes, or parameter count) after experience ``i``.

    Examples:
        >>> model_size_efficiency([100, 100, 100])
        1.0
        >>> model_size_efficiency([100, 200, 400])
        0.5833333333333334

    References:
        Díaz-Rodríguez, N., Lomonaco, V., Filliat, D., & Maltoni, D. (2018). Don't forget,
        there is more than forgetting: new metrics for continual learning. NeurIPS 2018
        Continual Learning workshop, arXiv:1810.13166 (model size efficiency).
    """
    sizes = _positive(model_bytes, "model size efficiency", allow_zero=False)
    return min(1.0, sum(sizes[0] / size for size in sizes) / len(sizes))


def samples_storage_efficiency(memory_bytes: Sequence[float], dataset_bytes: float) -> float:
    """SSS: how little of the data the method stores (1: stores nothing, 0: everything).

    ``SSS = 1 - min(1, 1/N * sum_{i=1}^{N} Mem(M_i) / Mem(D))``, where ``Mem(M_i)`` is the size
    of the samples stored (rehearsal memory) at experience ``i`` and ``Mem(D)`` the size of the
    whole training data of all experiences, in the same unit (bytes or samples).

    Examples:
        >>> samples_storage_efficiency([0, 0], dataset_bytes=1000)
        1.0
        >>> samples_storage_efficiency([100, 300], dataset_bytes=1000)
        0.8

    References:
        Díaz-Rodríguez, N., Lomonaco, V., Filliat, D., & Maltoni, D. (2018). Don't forget,
        there is more than forgetting: new metrics for continual learning. NeurIPS 2018
        Continual Learning workshop, arXiv:1810.13166 (samples storage size efficiency).
    """
    stored = _positive(memory_bytes, "samples storage size efficiency", allow_zero=True)
    (dataset,) = _positive([dataset_bytes], "samples storage size efficiency", allow_zero=False)
    return 1.0 - min(1.0, sum(size / dataset for size in stored) / len(stored))


def computational_efficiency(pass_ops: Sequence[float], train_ops: Sequence[float],
                             epsilon: float = 1.0) -> float:
    """CE: how close learning each experience came to the cost of a single pass over it.

    ``CE = min(1, 1/N * sum_{i=1}^{N} Ops_fb(Tr_i) * epsilon / (1 + Ops(Tr_i)))``, where
    ``Ops_fb(Tr_i)`` is the number of operations (multiply-adds) of one forward and one
    backward pass over experience ``i``'s training set, ``Ops(Tr_i)`` the operations actually
    spent learning it (all epochs, replay, regularisers), and ``epsilon >= 1`` a rescaling
    (for instance the number of epochs, so that plain training scores close to 1).

    Examples:
        >>> round(computational_efficiency([1e9, 1e9], [5e9, 10e9]), 4)
        0.15
        >>> round(computational_efficiency([1e9, 1e9], [5e9, 10e9], epsilon=10), 4)
        1.0

    References:
        Díaz-Rodríguez, N., Lomonaco, V., Filliat, D., & Maltoni, D. (2018). Don't forget,
        there is more than forgetting: new metrics for continual learning. NeurIPS 2018
        Continual Learning workshop, arXiv:1810.13166 (computational efficiency).
    """
    passes = _positive(pass_ops, "computational efficiency", allow_zero=True)
    spent = _positive(train_ops, "computational efficiency", allow_zero=True)
    if len(passes) != len(spent):
        raise ValueError(f"computational efficiency: {len(passes)} pass counts but "
                         f"{len(spent)} training counts")
    if not epsilon > 0:
        raise ValueError(f"computational efficiency: epsilon must be > 0 (got {epsilon})")
    per_experience = [p * epsilon / (1 + s) for p, s in zip(passes, spent, strict=True)]
    return min(1.0, sum(per_experience) / len(per_experience))


def peak_rss_bytes() -> int:
    """The highest resident memory of this process so far, in bytes (not its children).

    Examples:
        >>> peak_rss_bytes() > 0
        True
    """
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def model_bytes(model: Any) -> int:
    """Size of a ``torch.nn.Module``'s parameters and buffers, in bytes.

    Examples:
        >>> import torch
        >>> model_bytes(torch.nn.Linear(3, 2))
        32
    """
    return sum(t.numel() * t.element_size() for t in chain(model.parameters(), model.buffers()))


@dataclass
class RunMetrics:
    """What one continual-learning run cost and achieved; unmeasured criteria stay None.

    Parameters:
        wall_time_s: wall-clock duration of the run, in seconds.
        peak_rss_bytes: peak resident memory of the process, in bytes (:func:`peak_rss_bytes`).
        model_bytes: size of the final model's parameters and buffers (:func:`model_bytes`).
        acc: :func:`acc`.
        bwt: :func:`bwt`.
        fwt: :func:`fwt`.
        forgetting: :func:`forgetting`.
        model_size_efficiency: MS, :func:`model_size_efficiency`.
        samples_storage_efficiency: SSS, :func:`samples_storage_efficiency`.
        computational_efficiency: CE, :func:`computational_efficiency`.

    Examples:
        >>> RunMetrics(wall_time_s=1.5, peak_rss_bytes=2048, model_bytes=32,
        ...            bwt=float("nan")).to_dict()["bwt"] is None
        True

    References:
        Díaz-Rodríguez, N., Lomonaco, V., Filliat, D., & Maltoni, D. (2018). Don't forget,
        there is more than forgetting: new metrics for continual learning. arXiv:1810.13166.
    """

    wall_time_s: float
    peak_rss_bytes: int
    model_bytes: int
    acc: float | None = None
    bwt: float | None = None
    fwt: float | None = None
    forgetting: float | None = None
    model_size_efficiency: float | None = None
    samples_storage_efficiency: float | None = None
    computational_efficiency: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-safe form: plain Python numbers; NaN and infinities become ``None``."""
        plain = {key: v.item() if isinstance(v, np.generic) else v
                 for key, v in asdict(self).items()}
        return {key: None if isinstance(v, float) and not math.isfinite(v) else v
                for key, v in plain.items()}
