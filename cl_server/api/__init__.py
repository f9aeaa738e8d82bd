"""The HTTP API of the CL server (Flask): one blueprint per resource, one JSON error shape."""

from cl_server.api.app import create_app, service_record

__all__ = ["create_app", "service_record"]
