"""Declared API operations: routing, auth, request parsing and the OpenAPI document, from one place.

Each handler is declared with :func:`operation`, naming its path, method, required role, body
and query models and response model. The decorator wires the Flask route, checks the token and
role, parses and validates the body and query with pydantic (400 for malformed JSON, 422 naming
each invalid field), serialises the return value with the response model, and records the
operation so that :func:`openapi_document` generates the OpenAPI 3.1 document from the same
pydantic schemas that validate requests. Nothing in the document is written by hand.

Example:
    >>> from flask import Blueprint
    >>> bp = Blueprint("example", __name__)
    >>> class Echo(BaseModel):
    ...     text: str
    >>> @operation(bp, "/api/echo", "POST", summary="Echo", role=None, body=Echo, response=Echo)
    ... def echo(body: Echo) -> Echo:
    ...     return body
    >>> OPERATIONS[-1].path, OPERATIONS[-1].method
    ('/api/echo', 'post')
    >>> del OPERATIONS[-1]
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema

from cl_server.api.errors import ApiError, ErrorBody
from cl_server.auth import authenticate, require
from cl_server.json_numbers import integral_floats_as_ints
from cl_server.store import Role


@dataclass(frozen=True)
class PathParam:
    """A path parameter: Flask converter and its JSON schema."""

    converter: str
    schema: dict[str, Any]
    description: str


PATH_PARAMS: dict[str, PathParam] = {
    "name": PathParam("string", {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,62}$"},
                      "Service name."),
    "version": PathParam("int", {"type": "integer", "minimum": 1}, "Model version number."),
    "job_id": PathParam("string", {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "Job id."),
    "sequence": PathParam("int", {"type": "integer", "minimum": 1},
                          "Publication number of a replica patch."),
    "token_id": PathParam("string", {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                          "Token id."),
    "user": PathParam("string", {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.@-]{0,62}$"},
                      "User name."),
}
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass
class Operation:
    path: str
    method: str
    summary: str
    tag: str
    role: Role | None
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    description: str = ""
    path_params: list[str] = field(default_factory=list)


OPERATIONS: list[Operation] = []


def _parse_body(model: type[BaseModel]) -> BaseModel:
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise ApiError(400, "bad_request", "request body required: a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(
            exc, json.JSONDecodeError) else ""
        raise ApiError(400, "bad_request", f"malformed JSON{where}: "
                       f"{getattr(exc, 'msg', None) or exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request",
                       f"request body must be a JSON object (got {type(data).__name__})")
    # Strict JSON validation: 0 is not false and "1" is not 1, while ISO dates stay valid.
    normalized = integral_floats_as_ints(data, model)
    changed = any(type(normalized[key]) is not type(value) for key, value in data.items())
    return _validate(model, json.dumps(normalized).encode() if changed else raw, "body")


def _parse_query(model: type[BaseModel]) -> BaseModel:
    data: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        data[key] = values if len(values) > 1 else values[0]
    return _validate(model, data, "query")


def _validate(model: type[BaseModel], data: dict[str, Any] | bytes, where: str) -> BaseModel:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data, strict=True)
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"path": ".".join(str(p) for p in e["loc"]) or where,
                    "message": "unknown field" if e["type"] == "extra_forbidden" else e["msg"]}
                   for e in exc.errors(include_url=False)]
        fields = ", ".join(d["path"] for d in details)
        raise ApiError(422, "validation_failed", f"invalid {where}: {fields}", details) from None


def operation(bp: Blueprint, path: str, method: str, *, summary: str, role: Role | None,
              response: Any, body: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, status: int = 200, description: str = ""
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare and route an API operation.

    ``path`` uses OpenAPI ``{param}`` syntax with parameters from :data:`PATH_PARAMS`; ``role``
    None makes it public. The handler receives path parameters, ``principal`` (if authenticated),
    ``body`` and ``query`` as keyword arguments and returns data of type ``response`` (a pydantic
    model or any type TypeAdapter accepts; None for 204; ``bytes`` for a binary body).
    """
    params = _PARAM.findall(path)
    rule = _PARAM.sub(lambda m: f"<{PATH_PARAMS[m.group(1)].converter}:{m.group(1)}>", path)
    adapter = TypeAdapter(response) if response is not None else None
    op = Operation(path, method.lower(), summary, bp.name, role, body, query, response, status,
                   description, params)
    OPERATIONS.append(op)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def view(**kwargs: Any) -> Response | tuple[Response, int]:
            if role is not None:
                principal = authenticate(current_app.extensions["modelci"].store,
                                         request.headers.get("Authorization"))
                require(principal, role)
                g.principal = principal
                kwargs["principal"] = principal
            if body is not None:
                kwargs["body"] = _parse_body(body)
            if query is not None:
                kwargs["query"] = _parse_query(query)
            result = fn(**kwargs)
            if isinstance(result, (Response, tuple)):
                return result
            if response is bytes:
                return Response(result, status=status, mimetype="application/octet-stream")
            if adapter is None:
                return Response(status=status)
            return jsonify(adapter.dump_python(result, mode="json", by_alias=True)), status

        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=[method.upper()])
        return fn

    return decorate


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def openapi_document(title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared operation."""
    models: list[tuple[Any, str]] = [(ErrorBody, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            models.append((op.body, "validation"))
    keyed, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {
            "operationId": f"{op.tag}_{op.method}_{op.path.strip('/').replace('/', '_')}"
                           .replace("{", "").replace("}", ""),
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {},
        }
        if op.description:
            item["description"] = op.description
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "schema": PATH_PARAMS[name].schema, "description": PATH_PARAMS[name].description}
            for name in op.path_params]
        if op.query is not None:
            query_schema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required,
                                   "schema": {k: v for k, v in prop.items()
                                              if k not in ("title", "description")},
                                   "description": prop.get("description", "")})
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            item["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": keyed[(op.body, "validation")]}}}
        if op.response is None:
            item["responses"][str(op.status)] = {"description": "Done."}
        elif op.response is bytes:
            item["responses"][str(op.status)] = {"description": op.summary, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "contentMediaType":
                                                            "application/octet-stream"}}}}
        else:
            response_schema = TypeAdapter(op.response).json_schema(
                mode="serialization", ref_template="#/components/schemas/{model}")
            for name, schema in response_schema.pop("$defs", {}).items():
                schemas.setdefault(name, schema)
            item["responses"][str(op.status)] = {"description": op.summary, "content": {
                "application/json": {"schema": response_schema}}}
        if op.body is not None or op.query is not None:
            item["responses"]["400"] = _error_response("Malformed request (e.g. invalid JSON).")
            item["responses"]["422"] = _error_response("A field is invalid; details name each.")
        if op.body is not None:
            item["responses"]["413"] = _error_response("Request body too large.")
        if op.role is not None:
            item["security"] = [{"bearer": []}]
            item["responses"]["401"] = _error_response("Missing, unknown or revoked token.")
            item["responses"]["403"] = _error_response(f"Needs the '{op.role.name}' role.")
        if op.path_params or op.role is not None:
            item["responses"]["404"] = _error_response("No such resource (in the path or a "
                                                       "resource the body names).")
        if op.method in ("post", "patch", "delete", "put"):
            item["responses"]["409"] = _error_response("Conflicts with the resource's state.")
        item["responses"]["503"] = _error_response("The store or cache is unreachable.")
        paths.setdefault(op.path, {})[op.method] = item
    schemas["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}")
    for name, schema in schemas["ErrorBody"].pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "ModelCI-e CL server API. Send `Authorization: Bearer <token>`; "
                                "roles: viewer < researcher < engineer < admin."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
