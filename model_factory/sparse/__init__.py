"""Sparse updates: ship a small share of the weights instead of the whole model.

- :mod:`~model_factory.sparse.selectors`: which entries a step applies (top-k, random-k).
- :mod:`~model_factory.sparse.residual`: :class:`SparseResidualSGD`, sparse training with
  residual memory (Prapas et al. 2021).
- :mod:`~model_factory.sparse.dpu`: :func:`partial_update`, Deep Partial Updating (Qu et al.
  2022), with its re-initialisation rule.
- :mod:`~model_factory.sparse.delta`: :class:`SparseDelta`, what an update ships and its bytes.
"""

from __future__ import annotations

from model_factory.sparse.delta import SparseDelta, dense_nbytes
from model_factory.sparse.dpu import (
    PartialUpdate,
    ReinitRule,
    fresh_weights,
    partial_update,
    partial_update_round,
)
from model_factory.sparse.residual import SparseResidualSGD
from model_factory.sparse.selectors import (
    SELECTORS,
    Selector,
    k_for,
    make_selector,
    topk_indices,
)

__all__ = ["SELECTORS", "PartialUpdate", "ReinitRule", "Selector", "SparseDelta",
           "SparseResidualSGD", "dense_nbytes", "fresh_weights", "k_for", "make_selector",
           "partial_update", "partial_update_round", "topk_indices"]
