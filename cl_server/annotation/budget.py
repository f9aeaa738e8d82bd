"""The labeling budget of a service: how many samples may go to annotators, per hour and day.

Every sample sent is kept in the Redis sorted set ``modelci:{service}:annotation:sent``
(member: the request id, score: when it was sent, Unix ms), so every process of a deployment
spends one budget, and a sample sent twice is paid for once. The windows slide: at most
``per_hour`` samples in any 60 minutes and ``per_day`` in any 24 hours. Spending is one Lua
script, atomic in Redis: two selectors racing for the last slots cannot overspend.

Example:
    >>> import tempfile, redis
    >>> from cl_server.embedded import EmbeddedServices
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=False) as svc:
    ...     budget = LabelingBudget(redis.Redis.from_url(svc.endpoints.cache_url), "demo",
    ...                             per_hour=3)
    ...     budget.spend(["r1", "r2"]), budget.spend(["r2", "r3", "r4"]), budget.available()
    (['r1', 'r2'], ['r3'], 0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# KEYS[1]: the sent set. ARGV: now ms, per hour, per day (-1: none), ids... Returns the ids
# granted (new ones only, oldest first, as many as both windows allow).
_SPEND = """
local key, now = KEYS[1], tonumber(ARGV[1])
local per_hour, per_day = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 86400000)
local left = per_hour - redis.call('ZCOUNT', key, now - 3600000, '+inf')
if per_day >= 0 then
  left = math.min(left, per_day - redis.call('ZCARD', key))
end
local granted = {}
for i = 4, #ARGV do
  if left <= 0 then break end
  if not redis.call('ZSCORE', key, ARGV[i]) then
    redis.call('ZADD', key, now, ARGV[i])
    table.insert(granted, ARGV[i])
    left = left - 1
  end
end
return granted
"""


class LabelingBudget:
    """See the module doc. ``per_day``: None for no daily cap."""

    def __init__(self, cache: redis.Redis, service: str, per_hour: int,
                 per_day: int | None = None, clock: Callable[[], float] = time.time):
        if per_hour < 0 or (per_day is not None and per_day < 0):
            raise ValueError("a labeling budget cannot be negative")
        self.cache = cache
        self.key = f"modelci:{service}:annotation:sent"
        self.per_hour = per_hour
        self.per_day = per_day
        self.clock = clock
        self._spend = cache.register_script(_SPEND)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def available(self) -> int:
        """Samples that may still be sent now."""
        now = self._now_ms()
        left = self.per_hour - int(self.cache.zcount(self.key, now - HOUR_MS, "+inf"))
        if self.per_day is not None:
            left = min(left, self.per_day - int(self.cache.zcount(self.key, now - DAY_MS,
                                                                  "+inf")))
        return max(0, left)

    def spend(self, request_ids: Sequence[str]) -> list[str]:
        """Pay for ``request_ids`` in order while the budget lasts; returns those granted
        (ids sent before are neither granted again nor paid for)."""
        if not request_ids:
            return []
        granted = self._spend(keys=[self.key], args=[
            self._now_ms(), self.per_hour, -1 if self.per_day is None else self.per_day,
            *request_ids])
        return [g.decode() if isinstance(g, bytes) else str(g) for g in granted]

    def sent(self, request_id: str) -> bool:
        """Whether ``request_id`` was sent in the last day."""
        return self.cache.zscore(self.key, request_id) is not None

    def sent_many(self, request_ids: Sequence[str]) -> list[bool]:
        """:meth:`sent` for each of ``request_ids``, in one round trip."""
        if not request_ids:
            return []
        return [score is not None for score in self.cache.zmscore(self.key, list(request_ids))]
