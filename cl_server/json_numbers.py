"""JSON numbers for integer fields: JSON (and JSON Schema) counts ``3.0`` as an integer, strict
pydantic validation does not. Top-level fields of a model only (bodies and job parameters are
flat).

Example:
    >>> from pydantic import BaseModel
    >>> class Body(BaseModel):
    ...     version: int
    ...     share: float
    >>> integral_floats_as_ints({"version": 3.0, "share": 1.0}, Body)
    {'version': 3, 'share': 1.0}
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel


def integral_floats_as_ints(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``data`` with whole-number floats given to integer fields turned into ints."""
    out = dict(data)
    for name, field in model.model_fields.items():
        value = out.get(name)
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        if isinstance(value, float) and value.is_integer() and int in kinds \
                and float not in kinds:
            out[name] = int(value)
    return out
