"""Rehearsal buffers: bounded memories of past samples, replayed next to new data.

Importing this package registers every buffer in :data:`BUFFERS` (config ``cl.rehearsal.kind``);
:func:`make_buffer` builds one by name.
"""

from __future__ import annotations

from model_factory.rehearsal import class_balanced, reservoir  # noqa: F401  (registration)
from model_factory.rehearsal.base import BUFFERS, RehearsalBuffer

__all__ = ["BUFFERS", "RehearsalBuffer", "make_buffer"]


def make_buffer(kind: str, capacity: int, seed: int = 0) -> RehearsalBuffer:
    """The buffer registered as ``kind``, holding at most ``capacity`` samples.

    ``"none"`` (a valid config value) is not a buffer: it means no rehearsal, so the caller
    must not build one.

    Examples:
        >>> make_buffer("reservoir", capacity=100).capacity
        100
        >>> make_buffer("none", capacity=100)
        Traceback (most recent call last):
        ...
        ValueError: rehearsal kind 'none' means no rehearsal: there is no buffer to build
    """
    if kind == "none":
        raise ValueError("rehearsal kind 'none' means no rehearsal: there is no buffer to build")
    if kind not in BUFFERS:
        raise ValueError(f"unknown rehearsal buffer '{kind}'; known: {', '.join(sorted(BUFFERS))}")
    return BUFFERS[kind](capacity=capacity, seed=seed)
