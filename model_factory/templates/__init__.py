"""Model templates: networks ending in a growable head, wrapped in a Lightning-trained
:class:`Classifier`.

Names are imported on first use, so that serving code reading an artifact
(:func:`load_for_serving`) does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Classifier": "classifier", "Prediction": "classifier", "prebatched": "classifier",
    "load_for_serving": "artifact", "read_state": "artifact",
    "NETWORKS": "networks", "Network": "networks", "build_network": "networks",
    "SentenceEncoder": "text", "TextClassifier": "text",
}

__all__ = ["NETWORKS", "Classifier", "Network", "Prediction", "SentenceEncoder",
           "TextClassifier", "build_network", "load_for_serving", "prebatched", "read_state"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
