"""Build the serving adapter a service config names, and find the service's routing table.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from cl_server.config.schema import ServiceConfig
    >>> config = ServiceConfig.model_validate({
    ...     "name": "digits", "engine": {"kind": "triton", "model_name": "digits",
    ...     "url": "http://127.0.0.1:8000", "model_repository": "/models"},
    ...     "model": {"template": "mlp", "input": {"shape": [64]}, "classes": ["0", "1"]}})
    >>> data_dir = Path(tempfile.mkdtemp())
    >>> adapter = make_adapter(config, RoutingTable(routing_path(data_dir, config.name)))
    >>> adapter.kind, adapter.model_dir
    ('triton', PosixPath('/models/digits'))
"""

from __future__ import annotations

from pathlib import Path

from cl_server.config.schema import ServiceConfig
from plugin.serving.base import ServingAdapter, check_model_name
from plugin.serving.routing import RoutingTable


def routing_path(data_dir: Path, service: str) -> Path:
    """Where a service's routing table lives under the server's data directory."""
    return Path(data_dir) / "services" / check_model_name(service) / "routing.json"


def make_adapter(config: ServiceConfig, routing: RoutingTable, *,
                 engine_url: str | None = None) -> ServingAdapter:
    """The adapter for ``config.engine``. ``engine_url`` overrides ``engine.url`` (an embedded
    tritonserver's address). Missing settings raise ``ValueError`` naming the config field."""
    engine = config.engine
    url = engine_url or engine.url
    if url is None:
        raise ValueError("engine.url: required to deploy (no embedded engine is running)")
    if engine.model_repository is None:
        raise ValueError(f"engine.model_repository: required to deploy to {engine.kind} (the "
                         f"directory the engine reads model versions from)")
    common = {"timeout_s": engine.timeout_s}
    if engine.kind == "triton":
        from plugin.serving.triton import TritonAdapter

        return TritonAdapter(config.model, engine.model_name, routing, url=url,
                             repository=engine.model_repository, **common)
    from plugin.serving.tfserving import TFServingAdapter

    if engine.model_config_file is None:
        raise ValueError("engine.model_config_file: required for tfserving (the config file "
                         "TF-Serving polls for versions and labels)")
    return TFServingAdapter(config.model, engine.model_name, routing, url=url,
                            base_path=engine.model_repository,
                            model_config_file=engine.model_config_file, **common)
