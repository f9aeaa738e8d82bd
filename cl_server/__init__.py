"""The CL server: API, collector, cache, drift detection, triggers, orchestrator, store."""
__version__ = "0.1.0"
