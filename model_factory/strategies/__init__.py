"""CL losses: strategies that hook into a training loop (EWC, SI, LwF, MAS; naive fine-tuning).

Importing this package registers every strategy in :data:`STRATEGIES` (config
``cl.strategy.name``); :func:`make_strategy` builds one by name with its parameters
(config ``cl.strategy.params``).
"""

from __future__ import annotations

from model_factory.strategies import ewc, lwf, mas, si  # noqa: F401  (registration)
from model_factory.strategies.base import STRATEGIES, CLStrategy, make_strategy, register

__all__ = ["STRATEGIES", "CLStrategy", "make_strategy", "register"]
