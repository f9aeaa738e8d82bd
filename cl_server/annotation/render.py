"""What an annotator is shown for a served input: a PNG, a text or the input's numbers.

``model.input.kind`` decides (:func:`task_kind`): ``image`` inputs become a grayscale (one
channel) or RGB (three) PNG data URI, scaled from the input's own range to 0-255 and enlarged
(nearest neighbour) to at least :data:`MIN_SIDE` pixels, so a 28x28 digit is legible;
``text`` inputs are shown as they are; ``tabular`` inputs as their numbers.

Example:
    >>> import numpy as np
    >>> data = render(np.eye(28, dtype=np.float32)[None], "image")
    >>> data["image"].startswith("data:image/png;base64,")
    True
    >>> render(np.array([0.5, 1.25], dtype=np.float32), "values")
    {'values': '0.5 1.25'}
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from cl_server.annotation.backend import TaskKind

MIN_SIDE = 112
MAX_VALUES = 512
"""Numbers shown for a tabular input at most (the rest elided)."""


def task_kind(input_kind: str) -> TaskKind:
    """The task kind of a model input kind (``image``, ``text``, ``tabular``)."""
    return {"image": "image", "text": "text"}.get(input_kind, "values")  # type: ignore[return-value]


def _plane(array: np.ndarray) -> np.ndarray:
    """``array`` as an image: ``[H, W]`` or ``[H, W, 3]``."""
    squeezed = np.squeeze(array)
    if squeezed.ndim == 1:
        side = math.isqrt(squeezed.size)
        if side * side != squeezed.size:
            raise ValueError(f"a flat input of {squeezed.size} values is not a square image")
        return squeezed.reshape(side, side)
    if squeezed.ndim == 3 and squeezed.shape[0] in (3, 4) and squeezed.shape[-1] not in (3, 4):
        squeezed = np.moveaxis(squeezed, 0, -1)  # channels first -> last
    if squeezed.ndim == 3 and squeezed.shape[-1] == 4:
        squeezed = squeezed[..., :3]
    if squeezed.ndim == 2 or (squeezed.ndim == 3 and squeezed.shape[-1] == 3):
        return squeezed
    raise ValueError(f"an input shaped {list(array.shape)} is not an image")


def png_data_uri(array: np.ndarray) -> str:
    """A PNG data URI of an image-like array (see the module doc)."""
    from PIL import Image

    plane = np.nan_to_num(_plane(np.asarray(array, dtype=np.float64)))
    low, high = float(plane.min()), float(plane.max())
    scaled = (plane - low) / (high - low) * 255.0 if high > low else np.zeros_like(plane)
    pixels = scaled.round().astype(np.uint8)
    factor = max(1, math.ceil(MIN_SIDE / max(1, min(pixels.shape[:2]))))
    pixels = pixels.repeat(factor, axis=0).repeat(factor, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def render(inputs: np.ndarray, kind: TaskKind) -> dict[str, str]:
    """The task data of one served input (its tensor without the batch axis)."""
    if kind == "text":
        value = np.asarray(inputs, dtype=object).ravel()[0]
        return {"text": value.decode("utf-8", "replace") if isinstance(value, bytes)
                else str(value)}
    if kind == "image":
        try:
            return {"image": png_data_uri(inputs)}
        except ValueError:
            pass  # not an image after all: show its numbers
    flat = np.asarray(inputs, dtype=np.float64).ravel()
    shown = " ".join(f"{v:g}" for v in flat[:MAX_VALUES])
    if flat.size > MAX_VALUES:
        shown += f" ... ({flat.size - MAX_VALUES} more)"
    return {"values": shown}
