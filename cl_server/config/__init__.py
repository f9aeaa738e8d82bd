"""The YAML service configuration: typed schema and loader."""

from cl_server.config.loader import ConfigError, FieldProblem, load_config, parse_config
from cl_server.config.schema import ServiceConfig

__all__ = ["ConfigError", "FieldProblem", "ServiceConfig", "load_config", "parse_config"]
