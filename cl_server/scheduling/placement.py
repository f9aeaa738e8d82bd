"""Job placement by worker labels, through RQ queues.

A job that needs workers labelled ``{gpu, eu}`` goes to the queue ``modelci@eu+gpu`` (the base
name, ``@``, the sorted labels joined by ``+``); a job that needs none to ``modelci``. A worker
started with labels serves the queue of every subset of its labels, most specific first, so
it takes the jobs it alone can run before the ones any worker can.

Example:
    >>> queue_name("modelci", ["gpu"])
    'modelci@gpu'
    >>> served_queues("modelci", ["gpu", "eu"])
    ['modelci@eu+gpu', 'modelci@eu', 'modelci@gpu', 'modelci']
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations


def queue_name(base: str, labels: Iterable[str] = ()) -> str:
    """The RQ queue of jobs that need every one of ``labels``."""
    wanted = sorted(set(labels))
    return f"{base}@{'+'.join(wanted)}" if wanted else base


def served_queues(base: str, labels: Iterable[str] = ()) -> list[str]:
    """The queues a worker with ``labels`` serves, most specific first."""
    have = sorted(set(labels))
    return [queue_name(base, subset) for size in range(len(have), -1, -1)
            for subset in combinations(have, size)]


def labels_of(queue: str) -> list[str]:
    """The labels a queue's jobs need (``modelci@eu+gpu`` -> ``['eu', 'gpu']``)."""
    return queue.split("@", 1)[1].split("+") if "@" in queue else []
