"""The durable record of everything, behind one interface (:class:`Store`)."""

from cl_server.store.base import DuplicateRecord, Store, StoreError
from cl_server.store.entities import (
    ApiToken,
    DataQuery,
    Deployment,
    DriftEvent,
    GateResult,
    Job,
    JobLog,
    LabeledOutcome,
    LabeledSample,
    ModelVersion,
    Role,
    Service,
    User,
    Validation,
    new_id,
    utcnow,
)
from cl_server.store.mongo import MongoStore

__all__ = ["ApiToken", "DataQuery", "Deployment", "DriftEvent", "DuplicateRecord", "GateResult",
           "Job", "JobLog", "LabeledOutcome", "LabeledSample", "ModelVersion", "MongoStore", "Role", "Service",
           "Store", "StoreError", "User", "Validation", "new_id", "utcnow"]
