"""The kinds of job a worker can run, each a function of a :class:`JobContext` and parameters.

A job kind declares its parameters as a pydantic model, so a submission with bad parameters is
refused at the API (422) before anything is queued. Later parts register theirs here (the CL
update job of the orchestrator, benchmark jobs) with :func:`job_kind`.

Example:
    >>> sorted(KINDS)  # with the CL update and promotion jobs registered by cl_server.envelope
    ['cl_promote', 'cl_update', 'healthcheck']
    >>> KINDS["healthcheck"].params.model_validate({"hold_s": 0.5}).hold_s
    0.5
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cl_server.store import Store


class JobCancelled(Exception):
    """Raised inside a job when its cancellation was requested."""


class JobContext(Protocol):
    """What a running job may use: the store, the cache, its log and its cancel flag."""

    job_id: str
    store: Store
    cache: redis.Redis

    def log(self, message: str, level: str = "INFO") -> None: ...

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled or is no longer running (the
        server declared it abandoned after its worker died)."""


class KindParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type[KindParams]
    run: Callable[[JobContext, Any], dict[str, JsonValue]]
    description: str
    exclusive: bool = False
    """Update jobs (``cl_update``, ``cl_promote``): at most one job of any exclusive kind
    queued or running per service."""


KINDS: dict[str, JobKind] = {}


def job_kind(name: str, params: type[KindParams], description: str, *, exclusive: bool = False
             ) -> Callable[[Callable[[JobContext, Any], dict[str, JsonValue]]],
                           Callable[[JobContext, Any], dict[str, JsonValue]]]:
    """Register a job kind under ``name``; ``exclusive``: one at a time per service."""

    def register(fn: Callable[[JobContext, Any], dict[str, JsonValue]]
                 ) -> Callable[[JobContext, Any], dict[str, JsonValue]]:
        KINDS[name] = JobKind(name, params, fn, description, exclusive)
        return fn

    return register


class HealthcheckParams(KindParams):
    hold_s: float = Field(0.0, ge=0, le=3600, description="Stay running this many seconds "
                          "(checking for cancellation every 0.1 s).")
    fail: bool = Field(False, description="Fail on purpose, to check failure reporting.")


@job_kind("healthcheck", HealthcheckParams,
          "Checks that a worker reaches the store and the cache; measures both round trips.")
def healthcheck(ctx: JobContext, params: HealthcheckParams) -> dict[str, JsonValue]:
    store_rtt = ctx.store.ping()
    start = time.perf_counter()
    ctx.cache.ping()
    cache_rtt = time.perf_counter() - start
    ctx.log(f"store round trip {store_rtt * 1000:.2f} ms, cache {cache_rtt * 1000:.2f} ms")
    deadline = time.monotonic() + params.hold_s
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.1)
    if params.fail:
        raise RuntimeError("failed on request (fail=true)")
    ctx.log("healthy")
    return {"store_rtt_s": store_rtt, "cache_rtt_s": cache_rtt, "held_s": params.hold_s}
