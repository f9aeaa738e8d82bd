"""The store over pymongo: MongoDB, or the embedded MongoDB wire-protocol server (nx-27017).

Records are inserted whole and changed by compare-and-swap on a revision counter (``_rev``):
read, apply the change to the typed record, ``replace_one({_id, _rev})``. This is atomic on any
MongoDB-protocol server and keeps every value's type. (The embedded server turns a ``$set`` of a
top-level boolean into 0 and of a datetime into a string; whole-document writes keep both.)

Example:
    >>> import tempfile
    >>> from cl_server.embedded import EmbeddedServices
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=False, store=True) as svc:
    ...     store = MongoStore(svc.endpoints.store_uri, "doctest")
    ...     store.ensure_indexes()
    ...     job = store.add_job(Job(kind="healthcheck"))
    ...     store.transition_job(job.id, "running", ["queued"]).status
    ...     store.transition_job(job.id, "running", ["queued"]) is None
    ...     store.close()
    'running'
    True
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import pymongo
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from cl_server.store.base import DuplicateRecord, Store, StoreError
from cl_server.store.entities import (
    ApiToken,
    DataQuery,
    Deployment,
    DriftEvent,
    Job,
    JobLog,
    JobStatus,
    LabeledOutcome,
    LabeledSample,
    ModelVersion,
    Record,
    Service,
    User,
    Validation,
    utcnow,
)

R = TypeVar("R", bound=Record)
_CAS_ATTEMPTS = 50

INDEXES: dict[str, list[tuple[list[tuple[str, int]], bool]]] = {
    ModelVersion.collection: [([("service", 1), ("version", 1)], True)],
    Job.collection: [([("service", 1), ("created_at", -1)], False),
                     ([("status", 1), ("created_at", -1)], False),
                     ([("created_at", -1)], False)],
    JobLog.collection: [([("job_id", 1), ("seq", 1)], True)],
    Validation.collection: [([("service", 1), ("created_at", -1)], False)],
    Deployment.collection: [([("service", 1), ("created_at", -1)], False)],
    DriftEvent.collection: [([("service", 1), ("created_at", 1)], False),
                            ([("service", 1), ("alarm", 1), ("created_at", 1)], False)],
    LabeledSample.collection: [([("service", 1), ("request_id", 1)], True),
                               ([("service", 1), ("label", 1)], False),
                               ([("service", 1), ("created_at", 1)], False)],
    ApiToken.collection: [([("token_sha256", 1)], True), ([("user", 1)], False)],
}


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except DuplicateKeyError as exc:
        raise DuplicateRecord(str(exc.details.get("errmsg", exc)) if exc.details else str(exc)
                              ) from exc
    except PyMongoError as exc:
        raise StoreError(f"store unavailable or refused the operation: {exc}") from exc


class MongoStore(Store):
    """:class:`Store` on a MongoDB-protocol server.

    Parameters:
        uri: ``mongodb://`` URI.
        database: database name.
        timeout_ms: server selection and connect timeout, milliseconds.
    """

    def __init__(self, uri: str, database: str = "modelci", timeout_ms: int = 3000):
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri, tz_aware=True, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
        self.db = self.client[database]

    # -- generic helpers -------------------------------------------------------------------
    def _col(self, cls: type[Record]) -> pymongo.collection.Collection[dict[str, Any]]:
        return self.db[cls.collection]

    def _insert(self, record: R) -> R:
        doc = record.document()
        doc["_rev"] = 0
        with _store_errors():
            self._col(type(record)).insert_one(doc)
        return record

    def _get(self, cls: type[R], key: str) -> R | None:
        with _store_errors():
            doc = self._col(cls).find_one({"_id": key})
        return cls.model_validate(doc) if doc else None

    def _find(self, cls: type[R], query: dict[str, Any], sort: list[tuple[str, int]] | None = None,
              limit: int = 0) -> list[R]:
        with _store_errors():
            cursor = self._col(cls).find(query)
            if sort:
                cursor = cursor.sort(sort)
            if limit:
                cursor = cursor.limit(limit)
            return [cls.model_validate(doc) for doc in cursor]

    def _update(self, cls: type[R], key: str, changes: dict[str, Any],
                expect: dict[str, Any] | None = None) -> R | None:
        """Compare-and-swap ``changes`` into the record ``key`` if it matches ``expect``."""
        unknown = set(changes) - set(cls.model_fields)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s): {', '.join(sorted(unknown))}")
        col = self._col(cls)
        with _store_errors():
            for _ in range(_CAS_ATTEMPTS):
                doc = col.find_one({"_id": key, **(expect or {})})
                if doc is None:
                    return None
                rev = doc.get("_rev", 0)
                record = cls.model_validate({**doc, **changes})
                new = record.document()
                new.pop("_id")
                new["_rev"] = rev + 1
                if col.replace_one({"_id": key, "_rev": rev}, new).matched_count:
                    return record
        raise StoreError(f"write conflict on {cls.collection}/{key}: gave up after "
                         f"{_CAS_ATTEMPTS} attempts")

    # -- lifecycle -------------------------------------------------------------------------
    def ensure_indexes(self) -> None:
        with _store_errors():
            for collection, indexes in INDEXES.items():
                for keys, unique in indexes:
                    self.db[collection].create_index(keys, unique=unique)

    def ping(self) -> float:
        start = time.perf_counter()
        with _store_errors():
            self.client.admin.command("ping")
        return time.perf_counter() - start

    def close(self) -> None:
        self.client.close()

    # -- services --------------------------------------------------------------------------
    def upsert_service(self, service: Service) -> Service:
        existing = self.get_service(service.name)
        if existing is None:
            try:
                return self._insert(service)
            except DuplicateRecord:
                existing = self.get_service(service.name)
                assert existing is not None
        definition = service.model_dump(exclude={"name", "status", "champion_version",
                                                 "created_at"})
        definition["updated_at"] = utcnow()
        updated = self._update(Service, service.name, definition)
        assert updated is not None
        return updated

    def get_service(self, name: str) -> Service | None:
        return self._get(Service, name)

    def list_services(self) -> list[Service]:
        return self._find(Service, {}, sort=[("_id", 1)])

    def update_service(self, name: str, **changes: object) -> Service | None:
        return self._update(Service, name, {**changes, "updated_at": utcnow()})

    # -- model versions --------------------------------------------------------------------
    def add_version(self, version: ModelVersion) -> ModelVersion:
        record = version
        for _ in range(_CAS_ATTEMPTS):
            if record.version < 1 or self.get_version(record.service, record.version):
                latest = self._find(ModelVersion, {"service": record.service},
                                    sort=[("version", -1)], limit=1)
                number = latest[0].version + 1 if latest else 1
                record = record.model_copy(update={"version": number})
            try:
                return self._insert(record)
            except DuplicateRecord:
                continue
        raise StoreError(f"could not allocate a version number for {version.service}")

    def get_version(self, service: str, version: int) -> ModelVersion | None:
        return self._get(ModelVersion, f"{service}:{version}")

    def list_versions(self, service: str) -> list[ModelVersion]:
        return self._find(ModelVersion, {"service": service}, sort=[("version", 1)])

    def update_version(self, service: str, version: int, **changes: object
                       ) -> ModelVersion | None:
        return self._update(ModelVersion, f"{service}:{version}", changes)

    # -- jobs ------------------------------------------------------------------------------
    def add_job(self, job: Job) -> Job:
        return self._insert(job)

    def get_job(self, job_id: str) -> Job | None:
        return self._get(Job, job_id)

    def list_jobs(self, service: str | None = None, status: JobStatus | None = None,
                  limit: int = 100) -> list[Job]:
        query: dict[str, Any] = {}
        if service is not None:
            query["service"] = service
        if status is not None:
            query["status"] = status
        return self._find(Job, query, sort=[("created_at", -1)], limit=limit)

    def transition_job(self, job_id: str, to: JobStatus, allowed_from: Sequence[JobStatus],
                       **changes: object) -> Job | None:
        return self._update(Job, job_id, {**changes, "status": to},
                            expect={"status": {"$in": list(allowed_from)}})

    def update_job(self, job_id: str, **changes: object) -> Job | None:
        return self._update(Job, job_id, dict(changes))

    def append_job_logs(self, job_id: str, lines: Iterable[tuple[str, str]]) -> int:
        pending = list(lines)
        total = len(pending)
        if not pending:
            return 0
        for _ in range(_CAS_ATTEMPTS):
            last = self._find(JobLog, {"job_id": job_id}, sort=[("seq", -1)], limit=1)
            start = last[0].seq + 1 if last else 0
            docs = []
            for offset, (level, message) in enumerate(pending):
                doc = JobLog(job_id=job_id, seq=start + offset, level=level,
                             message=message).document()
                doc["_rev"] = 0
                docs.append(doc)
            try:
                with _store_errors():
                    self._col(JobLog).insert_many(docs, ordered=True)
                return total
            except StoreError as exc:
                # Another writer (the worker, or the API recording a cancel) took a seq first:
                # keep what went in (ordered inserts stop at the first conflict), retry the rest.
                cause = exc.__cause__
                if isinstance(cause, BulkWriteError) and all(
                        e.get("code") == 11000 for e in cause.details.get("writeErrors", [])):
                    pending = pending[int(cause.details.get("nInserted", 0)):]
                elif not isinstance(exc, DuplicateRecord):
                    raise
        raise StoreError(f"could not append logs of job {job_id}")

    def job_logs(self, job_id: str, after_seq: int = -1, limit: int = 1000) -> list[JobLog]:
        return self._find(JobLog, {"job_id": job_id, "seq": {"$gt": after_seq}},
                          sort=[("seq", 1)], limit=limit)

    # -- validations, deployments, drift ---------------------------------------------------
    def add_validation(self, validation: Validation) -> Validation:
        return self._insert(validation)

    def get_validation(self, validation_id: str) -> Validation | None:
        return self._get(Validation, validation_id)

    def list_validations(self, service: str, limit: int = 100) -> list[Validation]:
        return self._find(Validation, {"service": service}, sort=[("created_at", -1)],
                          limit=limit)

    def update_validation(self, validation_id: str, **changes: object) -> Validation | None:
        return self._update(Validation, validation_id, dict(changes))

    def add_deployment(self, deployment: Deployment) -> Deployment:
        return self._insert(deployment)

    def list_deployments(self, service: str, limit: int = 100) -> list[Deployment]:
        return self._find(Deployment, {"service": service}, sort=[("created_at", -1)],
                          limit=limit)

    def add_drift_events(self, events: Sequence[DriftEvent]) -> int:
        if not events:
            return 0
        docs = [{**event.document(), "_rev": 0} for event in events]
        with _store_errors():
            self._col(DriftEvent).insert_many(docs)
        return len(docs)

    def list_drift_events(self, service: str, since: datetime | None = None,
                          alarms_only: bool = False, limit: int = 1000,
                          newest: bool = False) -> list[DriftEvent]:
        query: dict[str, Any] = {"service": service}
        if since is not None:
            query["created_at"] = {"$gte": since}
        if alarms_only:
            query["alarm"] = True
        if newest:
            return self._find(DriftEvent, query, sort=[("created_at", -1)], limit=limit)[::-1]
        return self._find(DriftEvent, query, sort=[("created_at", 1)], limit=limit)

    # -- labeled samples -------------------------------------------------------------------
    def add_labeled_samples(self, samples: Sequence[LabeledSample]) -> int:
        if not samples:
            return 0
        docs = [{**sample.document(), "_rev": 0} for sample in samples]
        try:
            with _store_errors():
                result = self._col(LabeledSample).insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, BulkWriteError):
                errors = cause.details.get("writeErrors", [])
                if all(e.get("code") == 11000 for e in errors):
                    return int(cause.details.get("nInserted", len(docs) - len(errors)))
            raise

    def count_labeled_samples(self, service: str) -> dict[str, int]:
        with _store_errors():
            rows = self._col(LabeledSample).aggregate([
                {"$match": {"service": service}},
                {"$group": {"_id": "$label", "n": {"$sum": 1}}}])
            return {str(row["_id"]): int(row["n"]) for row in rows}

    def labeled_outcomes(self, service: str, since: datetime | None = None,
                         limit: int = 5000) -> list[LabeledOutcome]:
        query: dict[str, Any] = {"service": service}
        if since is not None:
            query["created_at"] = {"$gte": since}
        fields = {"label": 1, "prediction": 1, "model_version": 1, "created_at": 1}
        with _store_errors():  # ids are time-ordered: newest first by id, then reversed
            rows = list(self._col(LabeledSample).find(query, fields).sort([("_id", -1)])
                        .limit(limit))
        return [LabeledOutcome.model_validate({**row, "id": row["_id"]}) for row in reversed(rows)]

    def run_data_query(self, query: DataQuery) -> list[LabeledSample]:
        return self._find(LabeledSample, dict(query.filter),
                          sort=[(field, direction) for field, direction in query.sort],
                          limit=query.limit)

    def data_query_ids(self, query: DataQuery) -> list[str]:
        with _store_errors():
            cursor = self._col(LabeledSample).find(dict(query.filter), {"_id": 1})
            if query.sort:
                cursor = cursor.sort([(field, direction) for field, direction in query.sort])
            if query.limit:
                cursor = cursor.limit(query.limit)
            return [str(doc["_id"]) for doc in cursor]

    # -- users and tokens ------------------------------------------------------------------
    def add_user(self, user: User) -> User:
        return self._insert(user)

    def get_user(self, name: str) -> User | None:
        return self._get(User, name)

    def list_users(self) -> list[User]:
        return self._find(User, {}, sort=[("_id", 1)])

    def update_user(self, name: str, **changes: object) -> User | None:
        return self._update(User, name, dict(changes))

    def add_token(self, token: ApiToken) -> ApiToken:
        return self._insert(token)

    def get_token(self, token_id: str) -> ApiToken | None:
        return self._get(ApiToken, token_id)

    def find_token(self, token_sha256: str) -> ApiToken | None:
        found = self._find(ApiToken, {"token_sha256": token_sha256}, limit=1)
        return found[0] if found else None

    def list_tokens(self, user: str | None = None) -> list[ApiToken]:
        query = {"user": user} if user is not None else {}
        return self._find(ApiToken, query, sort=[("created_at", 1)])

    def update_token(self, token_id: str, **changes: object) -> ApiToken | None:
        return self._update(ApiToken, token_id, dict(changes))
