"""How the demo's inputs (images or texts) go to each of their consumers.

A demo input is a row of :attr:`plugin.demo.data.Phase.x`: a float32 image, or a ``str`` for
the text demo. It travels three ways:

- to the ingest endpoint, as a record's ``inputs`` (:func:`record_inputs`): nested numbers, or
  the text itself;
- to the engine, as the one tensor of a ``tritonclient`` request (:func:`infer_input`): an FP32
  batch of one image, or a BYTES batch ``[1, 1]`` holding the UTF-8 text;
- to a model evaluated offline by the report (:func:`model_features`): the images as a tensor,
  the texts as their MiniLM sentence embeddings (what a ``text-minilm`` network reads).

Example:
    >>> import numpy as np
    >>> record_inputs(np.zeros((1, 2, 2), dtype=np.float32)), record_inputs("a fine film")
    ([[[0.0, 0.0], [0.0, 0.0]]], 'a fine film')
    >>> tensor = infer_input("TEXT", "a fine film")
    >>> tensor.datatype(), tensor.shape()
    ('BYTES', [1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import tritonclient.http as triton_http


def record_inputs(x: Any) -> Any:
    """A record's ``inputs`` for the ingest endpoint."""
    return x if isinstance(x, str) else np.asarray(x).tolist()


def infer_input(name: str, x: Any) -> triton_http.InferInput:
    """The request tensor of one input (binary on the wire)."""
    if isinstance(x, str):
        tensor = triton_http.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.asarray([[x.encode()]], dtype=object), binary_data=True)
        return tensor
    batch = np.ascontiguousarray(np.asarray(x, dtype=np.float32)[None])
    tensor = triton_http.InferInput(name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    return tensor


def model_features(x: np.ndarray | Sequence[Any]) -> torch.Tensor:
    """What a model of the demo's service reads for the inputs ``x``: the image tensor, or
    the texts' sentence embeddings ``[N, 384]`` (as the service's update jobs embed them)."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    from cl_server.envelope.embeddings import embed_texts

    return embed_texts([str(row) for row in x])


def feature_shape(x: np.ndarray) -> tuple[int, ...]:
    """The input shape (without the batch axis) of a model reading ``model_features(x)``."""
    if x.dtype == object:
        from model_factory.templates.networks import MINILM_DIM

        return (MINILM_DIM,)
    return tuple(x.shape[1:])
