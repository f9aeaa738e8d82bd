"""The CL server: API, collector, cache, drift detection, triggers, orchestrator, store."""
