"""Read a serving artifact without the training stack (no Lightning import).

Serving backends (the Triton python-backend model, the TF-Serving fake, replica agents) only
need the network and its class names; importing Lightning would add seconds to every model
load. The artifact is the dict :meth:`Classifier.state` writes, read with ``weights_only=True``.

Example:
    >>> import tempfile, torch
    >>> from model_factory.templates import Classifier
    >>> path = tempfile.mktemp(suffix=".pt")
    >>> _ = Classifier("mlp", (4,), ["a", "b"], params={"hidden": [8]}).export(path)
    >>> net, classes = load_for_serving(path)
    >>> classes, tuple(net(torch.zeros(3, 4)).shape)
    (['a', 'b'], (3, 2))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_factory.templates.networks import build_network

FORMAT = "modelci-e/classifier/1"


def read_state(path: str | Path) -> dict[str, Any]:
    """The saved state dict of a classifier file (``weights_only=True``: it cannot run code)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a modelci-e classifier file (format {found!r}, "
                         f"expected {FORMAT!r})")
    return state


def load_for_serving(path: str | Path) -> tuple[nn.Module, list[str]]:
    """The eval-mode network and class names of an exported artifact (what a serving backend
    runs: ``logits = net(batch)``)."""
    state = read_state(path)
    net = build_network(state["template"], state["input_shape"], len(state["classes"]),
                        **state["params"])
    net.load_state_dict(state["weights"])
    net.eval()
    return net, list(state["classes"])
