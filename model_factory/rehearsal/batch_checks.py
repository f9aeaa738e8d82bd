"""Checks every buffer applies to what it is offered or restored from: one clear error each."""

from __future__ import annotations

from torch import Tensor


def check_batch(inputs: Tensor, targets: Tensor) -> None:
    """Reject a batch whose inputs and targets do not pair up one to one."""
    if inputs.dim() == 0 or targets.dim() == 0:
        raise ValueError("inputs and targets must have a first (sample) dimension")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets differ in length: {inputs.shape[0]} inputs, "
                         f"{targets.shape[0]} targets")


def check_like(held: Tensor, offered: Tensor, what: str) -> None:
    """Reject a batch whose per-sample shape or dtype differs from what the buffer holds."""
    if held.shape[1:] != offered.shape[1:] or held.dtype != offered.dtype:
        raise ValueError(f"{what} of shape {tuple(offered.shape[1:])} and dtype {offered.dtype} "
                         f"do not match the held {what} ({tuple(held.shape[1:])}, {held.dtype})")
