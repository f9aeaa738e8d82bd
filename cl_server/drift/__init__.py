"""Drift detection on a served model's signals (inputs, predictions, errors).

Importing this package registers every detector in :data:`DETECTORS` (config
``drift.detectors[].kind``): ``ks`` and ``chi2`` (statistical tests of each window against a
reference, :mod:`.ks`, :mod:`.chi2`) and River's streaming detectors (:mod:`.streaming`).
:func:`make_detector` builds one from its config entry; :class:`DriftMonitor` holds all the
detectors of one service and routes each batch to those watching its signal.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from cl_server.config.schema import SIGNALS, DetectorConfig, DriftConfig
from cl_server.drift import chi2, ks, streaming  # noqa: F401  (registration)
from cl_server.drift.base import DETECTORS, DriftDetector, DriftResult, to_event
from cl_server.store.entities import DriftEvent

__all__ = ["DETECTORS", "DriftDetector", "DriftMonitor", "DriftResult", "make_detector",
           "to_event"]


def make_detector(config: DetectorConfig, reference_size: int) -> DriftDetector:
    """The detector a config entry describes; ``reference_size`` is ``drift.reference_size``.

    Examples:
        >>> config = DetectorConfig(kind="adwin", signal="errors", params={"delta": 0.01})
        >>> detector = make_detector(config, reference_size=200)
        >>> detector.name, detector.window, detector.params["delta"]
        ('adwin', 500, 0.01)
    """
    return DETECTORS[config.kind].from_config(config, reference_size)


class DriftMonitor:
    """The drift detectors of one service, each fed the batches of the signal it watches.

    Parameters:
        config: the service's ``drift`` section (one detector per ``detectors`` entry).
        service: the service name, stamped on the events.

    Examples:
        >>> import numpy as np
        >>> config = DriftConfig(reference_size=100, detectors=[
        ...     {"kind": "chi2", "signal": "predictions", "window": 100},
        ...     {"kind": "ddm", "signal": "errors", "window": 50}])
        >>> monitor = DriftMonitor(config, "digits")
        >>> rng = np.random.default_rng(0)
        >>> [r.detector for r in monitor.update("errors", rng.random(200) < 0.1)]
        ['ddm', 'ddm']
        >>> monitor.update("predictions", rng.choice(3, size=150))
        []
        >>> monitor.update("inputs", rng.normal(size=(10, 4)))
        []
    """

    def __init__(self, config: DriftConfig, service: str):
        self.service = service
        self.detectors: tuple[DriftDetector, ...] = tuple(
            make_detector(entry, config.reference_size) for entry in config.detectors)

    def update(self, signal: str, values: Any) -> list[DriftResult]:
        """Feed ``values`` of ``signal`` to every detector watching it; their results, in
        configuration order. Every detector checks the batch before any is updated, so a batch
        one of them rejects changes none."""
        if signal not in SIGNALS:
            raise ValueError(f"service '{self.service}': unknown signal '{signal}' "
                             f"(expected one of: {', '.join(SIGNALS)})")
        watching = [d for d in self.detectors if d.signal == signal]
        for detector in watching:
            detector.check(values)
        return [result for detector in watching for result in detector.update(values)]

    def to_events(self, results: list[DriftResult]) -> list[DriftEvent]:
        """The stored records of ``results`` for this service."""
        return [to_event(self.service, result) for result in results]

    def reset(self) -> None:
        """Start every detector over (a new model serves: its signals form new references)."""
        for detector in self.detectors:
            detector.reset()

    def state(self) -> list[dict[str, JsonValue]]:
        """Each detector's :meth:`DriftDetector.state`, in configuration order."""
        return [detector.state() for detector in self.detectors]
