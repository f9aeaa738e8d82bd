"""Store contract: every record shape round-trips, over a real socket to a MongoDB-protocol server.

Runs against the embedded server and, when ``MODELCI_TEST_MONGO_URI`` is set, against that too.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from cl_server.store import (
    ApiToken,
    DataQuery,
    Deployment,
    DriftEvent,
    DuplicateRecord,
    GateResult,
    Job,
    LabeledSample,
    ModelVersion,
    MongoStore,
    Service,
    User,
    Validation,
)

T0 = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
NESTED = {"flag": False, "on": True, "none": None, "n": 3, "x": 0.25, "s": "é",
          "list": [True, False, 1, "a", {"deep": [False]}], "obj": {"b": False}}


def service(name: str = "digits") -> Service:
    return Service(name=name, engine_kind="triton", model_name="m", classes=["0", "1"],
                   config={"drift": {"detectors": [{"kind": "ks"}]}, "manual": False},
                   created_at=T0, updated_at=T0)


def test_service_round_trip_and_upsert_keeps_champion(store: MongoStore) -> None:
    svc = store.upsert_service(service())
    assert store.get_service("digits") == svc
    store.update_service("digits", champion_version=3, status="paused")
    redefined = store.upsert_service(service().model_copy(update={"classes": ["0", "1", "2"]}))
    assert redefined.classes == ["0", "1", "2"]
    assert redefined.champion_version == 3 and redefined.status == "paused"
    assert redefined.created_at == T0 and redefined.updated_at > T0
    assert [s.name for s in store.list_services()] == ["digits"]
    assert store.get_service("nope") is None
    assert store.update_service("nope", status="paused") is None


def test_update_rejects_unknown_fields(store: MongoStore) -> None:
    store.upsert_service(service())
    with pytest.raises(ValueError, match="no field"):
        store.update_service("digits", championn=2)


def test_model_version_round_trip_and_numbering(store: MongoStore) -> None:
    query = DataQuery(filter={"service": "digits", "label": {"$in": ["0", "1"]}},
                      sort=[("created_at", 1)], limit=500, sample_count=2, digest="ab" * 32)
    first = store.add_version(ModelVersion(service="digits", version=1, data_query=query,
                                           metrics=NESTED, classes=["0", "1"], created_at=T0,
                                           artifact_sha256="f" * 64, artifact_bytes=2 ** 40))
    second = store.add_version(ModelVersion(service="digits", version=1, parent_version=1,
                                            base_version=1))
    assert (first.version, second.version) == (1, 2)
    assert store.get_version("digits", 1) == first
    store.update_version("digits", 2, status="rejected")
    assert [(v.version, v.status) for v in store.list_versions("digits")] == [
        (1, "candidate"), (2, "rejected")]
    assert store.get_version("digits", 1).metrics == NESTED


def test_concurrent_version_numbers_are_unique(store_uri: str, store: MongoStore) -> None:
    numbers: list[int] = []
    errors: list[BaseException] = []

    def add() -> None:
        other = MongoStore(store_uri, store.db.name)
        try:
            for _ in range(5):
                numbers.append(other.add_version(ModelVersion(service="s")).version)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=add) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers) == list(range(1, 16))


def test_job_round_trip_transitions_and_logs(store: MongoStore) -> None:
    job = store.add_job(Job(service="digits", kind="healthcheck", params=NESTED,
                            trigger={"kind": "drift", "detectors": ["ks"], "manual": False}))
    assert store.get_job(job.id) == job
    running = store.transition_job(job.id, "running", ["queued"], started_at=T0, worker="w1")
    assert running is not None and running.started_at == T0 and running.worker == "w1"
    assert store.transition_job(job.id, "running", ["queued"]) is None
    store.update_job(job.id, cancel_requested=True)
    assert store.get_job(job.id).cancel_requested is True
    done = store.transition_job(job.id, "succeeded", ["running"], result=NESTED,
                                finished_at=T0 + timedelta(seconds=2))
    assert done.result == NESTED and done.status == "succeeded"
    assert store.get_job(job.id).cancel_requested is True
    assert store.append_job_logs(job.id, [("INFO", "one"), ("WARNING", "two")]) == 2
    assert store.append_job_logs(job.id, [("INFO", "three")]) == 1
    assert [(line.seq, line.message) for line in store.job_logs(job.id)] == [
        (0, "one"), (1, "two"), (2, "three")]
    assert [line.seq for line in store.job_logs(job.id, after_seq=0)] == [1, 2]
    store.add_job(Job(service="other", kind="healthcheck"))
    assert [j.id for j in store.list_jobs(service="digits")] == [job.id]
    assert [j.id for j in store.list_jobs(status="succeeded")] == [job.id]
    assert len(store.list_jobs()) == 2


def test_job_ids_are_unique(store: MongoStore) -> None:
    job = store.add_job(Job(kind="healthcheck"))
    with pytest.raises(DuplicateRecord):
        store.add_job(Job(id=job.id, kind="healthcheck"))


def test_validation_deployment_round_trip(store: MongoStore) -> None:
    validation = store.add_validation(Validation(
        service="digits", challenger_version=2, champion_version=1, passed=False,
        gates=[GateResult(name="min_accuracy_gain", value=-0.01, threshold=0.0, passed=False),
               GateResult(name="max_class_drop", value=None, threshold=None, passed=True)],
        report=NESTED, created_at=T0))
    assert store.get_validation(validation.id) == validation
    assert store.list_validations("digits") == [validation]
    deployment = store.add_deployment(Deployment(service="digits", version=2, previous_version=1,
                                                 action="rollback", bytes_shipped=0, actor="ann"))
    assert store.list_deployments("digits") == [deployment]


def test_drift_events_time_queries(store: MongoStore) -> None:
    events = [DriftEvent(service="digits", detector="ks", signal="inputs", statistic=0.1 * i,
                         p_value=1.0 - 0.1 * i, magnitude=0.1 * i, alarm=i >= 3,
                         evidence={"features": [i], "corrected": True},
                         created_at=T0 + timedelta(seconds=i)) for i in range(5)]
    assert store.add_drift_events(events) == 5
    assert store.list_drift_events("digits") == events
    assert store.list_drift_events("digits", since=T0 + timedelta(seconds=2)) == events[2:]
    assert store.list_drift_events("digits", alarms_only=True) == events[3:]


def test_labeled_samples_binary_dedup_and_data_query(store: MongoStore) -> None:
    payload = bytes(range(256)) * 4
    samples = [LabeledSample(service="digits", request_id=f"r{i}", inputs=payload + bytes([i]),
                             label=str(i % 2), prediction="0", confidences=[0.75, 0.25],
                             model_version=1, created_at=T0 + timedelta(seconds=i))
               for i in range(6)]
    assert store.add_labeled_samples(samples) == 6
    again = [samples[0], LabeledSample(service="digits", request_id="r9", inputs=b"\x00",
                                       label="1")]
    assert store.add_labeled_samples(again) == 1
    assert store.count_labeled_samples("digits") == {"0": 3, "1": 4}
    query = DataQuery(filter={"service": "digits", "label": "1"}, sort=[("created_at", -1)],
                      limit=2)
    found = store.run_data_query(query)
    assert [s.request_id for s in found] == ["r9", "r5"]
    by_id = {s.request_id: s for s in store.run_data_query(DataQuery(filter={"service": "digits"}))}
    assert by_id["r3"] == samples[3]
    assert by_id["r3"].inputs == payload + b"\x03"


def test_users_and_tokens(store: MongoStore) -> None:
    user = store.add_user(User(name="ann", role="engineer"))
    assert store.get_user("ann") == user
    with pytest.raises(DuplicateRecord):
        store.add_user(User(name="ann", role="viewer"))
    token = store.add_token(ApiToken(user="ann", token_sha256="a" * 64, label="laptop"))
    assert store.find_token("a" * 64) == token
    with pytest.raises(DuplicateRecord):
        store.add_token(ApiToken(user="bob", token_sha256="a" * 64))
    store.update_token(token.id, revoked_at=T0, last_used_at=T0)
    revoked = store.get_token(token.id)
    assert revoked.revoked_at == T0 and revoked.last_used_at == T0
    assert store.list_tokens("ann") == [revoked]
    assert store.list_users() == [user]
    disabled = store.update_user("ann", disabled=True, role="viewer")
    assert store.get_user("ann") == disabled and disabled.disabled is True


def test_unreachable_store_raises_store_error() -> None:
    from cl_server.store import StoreError

    dead = MongoStore("mongodb://127.0.0.1:9", "x", timeout_ms=200)
    with pytest.raises(StoreError, match="store unavailable"):
        dead.ping()
    dead.close()


def test_concurrent_log_appends_keep_every_line_once_in_order(store: MongoStore) -> None:
    """The worker and the API (recording a cancel) append to one job's log at once: a writer
    that loses a seq retries with the next ones, and no line is lost or written twice."""
    import threading

    def writer(n: int) -> None:
        for i in range(20):
            store.append_job_logs("j1", [("INFO", f"{n}-{i}-a"), ("INFO", f"{n}-{i}-b")])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logs = store.job_logs("j1", limit=5000)
    assert [line.seq for line in logs] == list(range(160))
    assert len({line.message for line in logs}) == 160
    for n in range(4):  # each writer's lines in the order it wrote them
        mine = [line.message for line in logs if line.message.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}-{p}" for i in range(20) for p in "ab"]
