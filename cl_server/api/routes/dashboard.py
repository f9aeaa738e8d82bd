"""The views the dashboard reads: the services overview, a service's timeline, update history
and traffic split, a version's model card (built in :mod:`cl_server.dashboard`)."""

from __future__ import annotations

from flask import Blueprint

from cl_server import dashboard
from cl_server.api.context import ctx
from cl_server.api.errors import not_found
from cl_server.api.schemas import ListQuery, TimelineQuery
from cl_server.api.spec import operation
from cl_server.auth import Principal
from cl_server.store import Role

bp = Blueprint("dashboard", __name__)


def _known(name: str) -> None:
    if ctx().store.get_service(name) is None:
        raise not_found(f"service '{name}'")


@operation(bp, "/api/overview", "GET", summary="Every service at a glance: state, champion, "
           "accuracy, drift, last update", role=Role.viewer,
           response=list[dashboard.ServiceOverview])
def overview(principal: Principal) -> list[dashboard.ServiceOverview]:
    return dashboard.overview(ctx().store)


@operation(bp, "/api/services/{name}/timeline", "GET",
           summary="Accuracy, drift evaluations and deployments over the last minutes",
           role=Role.viewer, query=TimelineQuery, response=dashboard.Timeline)
def timeline(principal: Principal, name: str, query: TimelineQuery) -> dashboard.Timeline:
    _known(name)
    return dashboard.timeline(ctx().store, name, query.minutes)


@operation(bp, "/api/services/{name}/updates", "GET",
           summary="Update jobs, newest first: trigger, scenario, strategy, outcome, gates",
           role=Role.viewer, query=ListQuery, response=list[dashboard.UpdateEntry])
def updates(principal: Principal, name: str, query: ListQuery) -> list[dashboard.UpdateEntry]:
    _known(name)
    return dashboard.updates(ctx().store, name, query.limit)


@operation(bp, "/api/services/{name}/traffic", "GET",
           summary="Traffic split: champion, canary share, shadow", role=Role.viewer,
           response=dashboard.TrafficSplit)
def traffic(principal: Principal, name: str) -> dashboard.TrafficSplit:
    from cl_server.deploy import data_dir
    from plugin.serving.factory import routing_path

    _known(name)
    return dashboard.traffic(ctx().store, name, routing_path(data_dir(), name))


@operation(bp, "/api/services/{name}/versions/{version}/card", "GET",
           summary="A version's model card: CL task, benchmark, training data, validation, "
                   "deployments", role=Role.viewer, response=dashboard.ModelCard)
def model_card(principal: Principal, name: str, version: int) -> dashboard.ModelCard:
    found = ctx().store.get_version(name, version)
    if found is None:
        raise not_found(f"version {version} of service '{name}'")
    return dashboard.model_card(ctx().store, found)
