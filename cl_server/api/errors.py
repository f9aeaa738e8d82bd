"""One JSON error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Client mistakes get their 4xx with a message naming what is wrong; an unexpected exception gets a
500 with an opaque message (the traceback goes to the server log, never to the client); an
unreachable store or cache gets a 503.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from pydantic import BaseModel, Field, JsonValue
from werkzeug.exceptions import HTTPException

from cl_server.auth import AuthError
from cl_server.queue import JobConflict, JobRejected
from cl_server.store import DuplicateRecord, StoreError

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "validation_failed", 500: "internal_error",
          503: "unavailable"}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'not_found'.")
    message: str = Field(description="What is wrong, for a person.")
    details: list[JsonValue] | dict[str, JsonValue] = Field(
        default_factory=list, description="e.g. one {path, message} per invalid field.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by handlers and domain code to answer with an error of the JSON shape."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[Any] | dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else []


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(status: int, message: str, code: str | None = None,
                   details: list[Any] | dict[str, Any] | None = None) -> tuple[Response, int]:
    body = ErrorBody(error=ErrorDetail(code=code or _CODES.get(status, "error"), message=message,
                                       details=details if details is not None else []))
    response = jsonify(body.model_dump(mode="json"))
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="modelci-e"'
    return response, status


def register_error_handlers(app: Flask) -> None:
    """Turn every exception into the JSON error shape."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.message, exc.code, exc.details)

    @app.errorhandler(AuthError)
    def _auth_error(exc: AuthError) -> tuple[Response, int]:
        return error_response(exc.status, exc.message)

    @app.errorhandler(JobRejected)
    def _job_rejected(exc: JobRejected) -> tuple[Response, int]:
        return error_response(422, str(exc), details=exc.details)

    @app.errorhandler(JobConflict)
    @app.errorhandler(DuplicateRecord)
    def _conflict(exc: Exception) -> tuple[Response, int]:
        return error_response(409, str(exc))

    @app.errorhandler(StoreError)
    @app.errorhandler(redis.RedisError)
    def _unavailable(exc: Exception) -> tuple[Response, int]:
        log.error("backing service failed: %s", exc)
        return error_response(503, "the store or the cache is unreachable; try again shortly")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        messages = {404: "no such endpoint", 405: "method not allowed for this endpoint",
                    413: f"request body too large (limit "
                         f"{app.config.get('MAX_CONTENT_LENGTH')} bytes)"}
        response, code = error_response(status, messages.get(status, exc.description or exc.name))
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value  # e.g. Allow on 405
        return response, code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal error; the server log has the details")
