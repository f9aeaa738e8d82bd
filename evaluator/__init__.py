"""The CL profiler (benchmarks) and the service validator (challenger vs champion)."""
