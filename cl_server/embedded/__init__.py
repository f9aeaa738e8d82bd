"""Embedded defaults: real local servers (redis-server, a MongoDB wire-protocol server) under a
data dir, started and stopped by the CLI, used through the same URLs as external ones; and a
real Label Studio (in a venv of its own) for annotation."""

from cl_server.embedded.label_studio import (LabelStudioEndpoint, LabelStudioServer,
                                             find_label_studio, label_studio_installed)
from cl_server.embedded.process import EmbeddedServiceError, ManagedProcess
from cl_server.embedded.services import EmbeddedServices, Endpoints, read_endpoints

__all__ = ["EmbeddedServiceError", "EmbeddedServices", "Endpoints", "LabelStudioEndpoint",
           "LabelStudioServer", "ManagedProcess", "find_label_studio", "label_studio_installed",
           "read_endpoints"]
