"""The collector: served records and labels into the Redis cache (spooled to disk while Redis
is unreachable) and, for labeled samples, durably into the store."""
