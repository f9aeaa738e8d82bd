"""The one interface every part of the system uses to read and write records.

Handlers and jobs call these methods and never build raw database queries of their own (the
exception is :class:`~cl_server.store.entities.DataQuery`, which *is* a recorded query, replayed
through :meth:`Store.run_data_query`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime

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
    Service,
    User,
    Validation,
)


class StoreError(RuntimeError):
    """The store could not do what was asked (unreachable, or a write conflicted)."""


class DuplicateRecord(StoreError):
    """A record with the same key already exists."""


class Store(ABC):
    """Durable records of services, versions, jobs, validations, deployments, drift, samples,
    users and tokens."""

    # -- lifecycle -------------------------------------------------------------------------
    @abstractmethod
    def ensure_indexes(self) -> None:
        """Create the indexes every query relies on (idempotent)."""

    @abstractmethod
    def ping(self) -> float:
        """Round-trip time to the store in seconds; raises :class:`StoreError` if unreachable."""

    @abstractmethod
    def close(self) -> None: ...

    # -- services --------------------------------------------------------------------------
    @abstractmethod
    def upsert_service(self, service: Service) -> Service:
        """Create the service or replace its definition (champion and status are kept)."""

    @abstractmethod
    def get_service(self, name: str) -> Service | None: ...

    @abstractmethod
    def list_services(self) -> list[Service]: ...

    @abstractmethod
    def update_service(self, name: str, **changes: object) -> Service | None:
        """Change fields of a service; None if it does not exist."""

    # -- model versions --------------------------------------------------------------------
    @abstractmethod
    def add_version(self, version: ModelVersion) -> ModelVersion:
        """Store a version; ``version.version`` 0 or a taken number gets the next free number."""

    @abstractmethod
    def get_version(self, service: str, version: int) -> ModelVersion | None: ...

    @abstractmethod
    def list_versions(self, service: str) -> list[ModelVersion]:
        """All versions of a service, oldest first."""

    @abstractmethod
    def update_version(self, service: str, version: int, **changes: object
                       ) -> ModelVersion | None: ...

    # -- jobs ------------------------------------------------------------------------------
    @abstractmethod
    def add_job(self, job: Job) -> Job: ...

    @abstractmethod
    def get_job(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def list_jobs(self, service: str | None = None, status: JobStatus | None = None,
                  limit: int = 100) -> list[Job]:
        """Newest first."""

    @abstractmethod
    def transition_job(self, job_id: str, to: JobStatus, allowed_from: Sequence[JobStatus],
                       **changes: object) -> Job | None:
        """Atomically move a job to ``to`` if its status is in ``allowed_from``; else None."""

    @abstractmethod
    def update_job(self, job_id: str, **changes: object) -> Job | None: ...

    @abstractmethod
    def append_job_logs(self, job_id: str, lines: Iterable[tuple[str, str]]) -> int:
        """Append ``(level, message)`` lines; returns the number appended."""

    @abstractmethod
    def job_logs(self, job_id: str, after_seq: int = -1, limit: int = 1000) -> list[JobLog]:
        """Lines with ``seq > after_seq``, in order."""

    # -- validations, deployments, drift ---------------------------------------------------
    @abstractmethod
    def add_validation(self, validation: Validation) -> Validation: ...

    @abstractmethod
    def get_validation(self, validation_id: str) -> Validation | None: ...

    @abstractmethod
    def list_validations(self, service: str, limit: int = 100) -> list[Validation]: ...

    @abstractmethod
    def update_validation(self, validation_id: str, **changes: object) -> Validation | None:
        """Change fields of a validation (the live stages add their gates); None if absent."""

    @abstractmethod
    def add_deployment(self, deployment: Deployment) -> Deployment: ...

    @abstractmethod
    def list_deployments(self, service: str, limit: int = 100) -> list[Deployment]: ...

    @abstractmethod
    def add_drift_events(self, events: Sequence[DriftEvent]) -> int: ...

    @abstractmethod
    def list_drift_events(self, service: str, since: datetime | None = None,
                          alarms_only: bool = False, limit: int = 1000,
                          newest: bool = False) -> list[DriftEvent]:
        """Oldest first: the oldest ``limit`` events, or with ``newest`` the newest ones."""

    # -- labeled samples -------------------------------------------------------------------
    @abstractmethod
    def add_labeled_samples(self, samples: Sequence[LabeledSample]) -> int:
        """Insert samples, skipping a ``(service, request_id)`` already stored; returns inserted."""

    @abstractmethod
    def count_labeled_samples(self, service: str) -> dict[str, int]:
        """Samples per label."""

    @abstractmethod
    def labeled_outcomes(self, service: str, since: datetime | None = None,
                         limit: int = 5000) -> list[LabeledOutcome]:
        """The newest ``limit`` labeled samples (since ``since``) without their inputs, oldest
        first."""

    @abstractmethod
    def run_data_query(self, query: DataQuery) -> list[LabeledSample]:
        """Run a recorded query against the labeled samples."""

    @abstractmethod
    def data_query_ids(self, query: DataQuery) -> list[str]:
        """The ids of the samples :meth:`run_data_query` returns, in its order (no inputs read:
        a job fetches those from the cache first)."""

    # -- users and tokens ------------------------------------------------------------------
    @abstractmethod
    def add_user(self, user: User) -> User: ...

    @abstractmethod
    def get_user(self, name: str) -> User | None: ...

    @abstractmethod
    def list_users(self) -> list[User]: ...

    @abstractmethod
    def update_user(self, name: str, **changes: object) -> User | None: ...

    @abstractmethod
    def add_token(self, token: ApiToken) -> ApiToken: ...

    @abstractmethod
    def get_token(self, token_id: str) -> ApiToken | None: ...

    @abstractmethod
    def find_token(self, token_sha256: str) -> ApiToken | None:
        """The token with that hash, revoked or not."""

    @abstractmethod
    def list_tokens(self, user: str | None = None) -> list[ApiToken]: ...

    @abstractmethod
    def update_token(self, token_id: str, **changes: object) -> ApiToken | None: ...
