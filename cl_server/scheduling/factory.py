"""The governor of an update job, built from the service's ``scheduling`` section."""

from __future__ import annotations

import os
from typing import Any

import redis

from cl_server.config.schema import SchedulingConfig, ServiceConfig
from cl_server.scheduling.governor import Governor, apply_limits
from cl_server.scheduling.policy import Immediate, OffPeak, Policy, SloAware
from cl_server.scheduling.signals import LiveSignals
from plugin.proxy.metrics import latency_key

SLO_AWARE_NICE = 19


def make_policy(scheduling: SchedulingConfig) -> Policy:
    """The policy ``scheduling.policy`` names, with its settings."""
    if scheduling.policy == "slo-aware":
        return SloAware(scheduling.slo.p95_ms, min_duty=scheduling.min_duty,
                        max_wait_s=scheduling.max_pause_s)
    if scheduling.policy == "off-peak":
        return OffPeak(scheduling.off_peak_windows)
    return Immediate()


def max_slowdown(scheduling: SchedulingConfig) -> float | None:
    """The job's slowdown budget: ``slo.max_slowdown`` under ``slo-aware`` (the only policy
    that paces); None for the others."""
    return scheduling.slo.max_slowdown if scheduling.policy == "slo-aware" else None


def process_limits(scheduling: SchedulingConfig) -> tuple[int | None, int | None, bool]:
    """Torch threads, niceness (None: leave as is) and whether to run at idle CPU priority for
    a job; see the schema's defaults."""
    import torch

    threads, nice, idle = scheduling.threads, scheduling.nice, scheduling.idle_priority
    if scheduling.policy == "slo-aware":
        if threads is None:
            threads = min(torch.get_num_threads(), max(1, (os.cpu_count() or 2) // 2))
        if nice is None:
            nice = SLO_AWARE_NICE
    return threads, nice, bool(idle)


def champion_p95(cache: redis.Redis, service: str, version: int | None) -> float | None:
    """The p95 the proxy last published for ``version`` over its last 5,000 requests (the
    longer-window figure), or None."""
    if version is None:
        return None
    try:
        value = cache.hget(latency_key(service, version), "p95_ms")
    except redis.RedisError:
        return None
    return float(value) if value is not None else None


def job_governor(ctx: Any, config: ServiceConfig, champion_version: int | None = None
                 ) -> Governor:
    """The governor of the running job ``ctx`` (a :class:`~cl_server.queue.kinds.JobContext`)
    of ``config``'s service: its policy, live signals (with the depth of the job's queue),
    limits applied to this process, and its schedule recorded on the job. With no traffic
    before training, a relative SLO starts from the champion's longer-window p95."""
    scheduling = config.scheduling
    limits = apply_limits(*process_limits(scheduling))
    job = ctx.store.get_job(ctx.job_id)
    signals = LiveSignals(ctx.cache, config.name, max_age_s=scheduling.slo.signal_max_age_s,
                          queues=[job.queue] if job is not None and job.queue else [])

    def record(summary: dict[str, Any]) -> None:
        ctx.store.update_job(ctx.job_id, schedule=summary)

    return Governor(make_policy(scheduling), signals, log=ctx.log,
                    check_cancelled=ctx.check_cancelled, record=record,
                    max_pause_s=scheduling.max_pause_s, baseline_s=scheduling.slo.baseline_s,
                    slo_ratio=scheduling.slo.p95_ratio, max_slowdown=max_slowdown(scheduling),
                    fallback_baseline=lambda: champion_p95(ctx.cache, config.name,
                                                           champion_version),
                    limits=limits)
