"""Interference-aware scheduling of update jobs beside live inference.

- :mod:`~cl_server.scheduling.signals`: latency, host and GPU utilization, queue depth;
- :mod:`~cl_server.scheduling.policy`: ``immediate``, ``slo-aware``, ``off-peak``;
- :mod:`~cl_server.scheduling.governor`: applies a policy between a job's training steps;
- :mod:`~cl_server.scheduling.placement`: jobs to workers by labels (RQ queues);
- :mod:`~cl_server.scheduling.factory`: the governor of a job from its service's config.
"""

from cl_server.scheduling.governor import Governor, apply_limits
from cl_server.scheduling.placement import labels_of, queue_name, served_queues
from cl_server.scheduling.policy import Decision, Immediate, OffPeak, Policy, SloAware
from cl_server.scheduling.signals import LiveSignals, Signals, SignalSource

__all__ = ["Decision", "Governor", "Immediate", "LiveSignals", "OffPeak", "Policy",
           "SignalSource", "Signals", "SloAware", "apply_limits", "labels_of", "queue_name",
           "served_queues"]
