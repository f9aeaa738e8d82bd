"""Embedded defaults: real local servers (redis-server, a MongoDB wire-protocol server) under a
data dir, started and stopped by the CLI, used through the same URLs as external ones."""

from cl_server.embedded.process import EmbeddedServiceError, ManagedProcess
from cl_server.embedded.services import EmbeddedServices, Endpoints, read_endpoints

__all__ = ["EmbeddedServiceError", "EmbeddedServices", "Endpoints", "ManagedProcess",
           "read_endpoints"]
