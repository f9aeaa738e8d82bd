"""Change a service's champion: promote a validated challenger, or roll back to any earlier
version. Both go through the service's serving adapter when the config names the engine's URL
and model repository (otherwise only the store changes), and both leave a
:class:`~cl_server.store.Deployment` record, failed ones included; the champion changes only
when the engine took the new version. Each new champion is then published as a weight patch
for replicas (:mod:`cl_server.patches`, ``deployment.publish_patches``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cl_server.config.schema import ServiceConfig
from cl_server.store import Deployment, Service, Store

if TYPE_CHECKING:
    from plugin.serving.base import ServingAdapter

ENV_DATA_DIR = "MODELCI_DATA_DIR"
log = logging.getLogger(__name__)


class DeployFailed(RuntimeError):
    """The engine refused the version; the champion is unchanged."""


def data_dir() -> Path:
    """Where artifacts and routing tables live (``MODELCI_DATA_DIR``, default ``.modelci``)."""
    return Path(os.environ.get(ENV_DATA_DIR, ".modelci")).resolve()


def has_engine(config: ServiceConfig) -> bool:
    """Whether versions go to an engine (its URL and model repository are configured)."""
    return config.engine.url is not None and config.engine.model_repository is not None


def adapter_for(config: ServiceConfig) -> ServingAdapter:
    """The serving adapter of the service (see :func:`has_engine`)."""
    from plugin.serving.factory import make_adapter, routing_path
    from plugin.serving.routing import RoutingTable

    return make_adapter(config, RoutingTable(routing_path(data_dir(), config.name)))


def _to_engine(config: ServiceConfig, version: int, artifact: Path, rollback: bool,
               staged: bool) -> str:
    if not has_engine(config):
        return "in the store (no engine repository configured)"
    adapter = adapter_for(config)
    if staged:  # loaded already as the challenger of a shadow or canary stage
        start = time.perf_counter()
        adapter.promote(version)
        return f"on {config.engine.kind}, promoted in {time.perf_counter() - start:.2f} s"
    result = adapter.rollback(version) if rollback else adapter.deploy(version, artifact)
    return f"on {config.engine.kind} in {result.total_s:.2f} s"


def change_champion(store: Store, config: ServiceConfig, service: Service, version: int,
                    artifact: Path, *, actor: str, rollback: bool = False,
                    staged: bool = False, notify: Any = None) -> Deployment:
    """Make ``version`` the champion (see the module doc); raises :class:`DeployFailed`.
    ``staged``: the engine has it loaded as a challenger already; only the switch is left.
    The new champion is then published as a patch for replicas (``notify``: a Redis client
    for the notice)."""
    previous = service.champion_version
    action = "rollback" if rollback else "deploy"
    try:
        where = _to_engine(config, version, artifact, rollback, staged)
    except Exception as exc:  # any engine failure leaves the champion as it is
        store.add_deployment(Deployment(service=service.name, version=version,
                                        previous_version=previous, action=action,
                                        status="failed", detail=str(exc)[:2000], actor=actor))
        raise DeployFailed(f"{action} of version {version} failed, version {previous} stays "
                           f"the champion: {exc}") from exc
    event = store.add_deployment(Deployment(
        service=service.name, version=version, previous_version=previous, action=action,
        bytes_shipped=artifact.stat().st_size, detail=f"version {version} serving {where}",
        actor=actor))
    store.update_service(service.name, champion_version=version)
    store.update_version(service.name, version, status="champion")
    if previous is not None and previous != version:
        store.update_version(service.name, previous,
                             status="rolled_back" if rollback else "retired")
    if config.deployment.publish_patches:
        _publish(config, service.name, version, artifact, notify)
    return event


def _publish(config: ServiceConfig, service: str, version: int, artifact: Path,
             notify: Any) -> None:
    """Publish the champion's weights for replicas. A failure here is logged, not raised: the
    engine serves the new version already, and replicas catch up from the next publication."""
    from cl_server.patches import PatchLog
    from model_factory.templates.artifact import read_state

    try:
        state = read_state(artifact)
        meta = {key: state[key] for key in ("format", "template", "input_shape", "classes",
                                             "params")}
        PatchLog(data_dir(), service).publish(version, dict(state["weights"]), meta=meta,
                                              values=config.deployment.patch_values,
                                              notify=notify)
    except Exception:  # see the docstring: never fail the deployment here
        log.exception("service %s: publishing version %d for replicas failed", service, version)


def rollback(store: Store, config: ServiceConfig, service: Service, version: int, *,
             actor: str, notify: Any = None) -> Deployment:
    """Roll back to ``version``: it must exist, not be the champion, and its artifact must still
    match its recorded sha256 (``ValueError`` naming what is wrong otherwise)."""
    record = store.get_version(service.name, version)
    if record is None:
        raise LookupError(f"version {version} of service '{service.name}' not found")
    if version == service.champion_version:
        raise ValueError(f"version {version} is already the champion")
    path = Path(record.artifact_uri or "")
    if not record.artifact_uri or not path.is_file():
        raise ValueError(f"version {version} has no artifact on disk ({record.artifact_uri})")
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != record.artifact_sha256:
        raise ValueError(f"the artifact of version {version} does not match its recorded "
                         f"sha256: refused")
    return change_champion(store, config, service, version, path, actor=actor, rollback=True,
                           notify=notify)
