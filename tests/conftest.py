"""Shared fixtures: the real embedded servers, started once per test session.

- ``embedded``: a real redis-server and the MongoDB wire-protocol server under a temp data dir.
- ``store``: a :class:`MongoStore` on a fresh database, over a real socket; parametrized to also
  run against ``MODELCI_TEST_MONGO_URI`` when that is set (a real MongoDB, say).
- ``redis_url`` / ``redis_client``: the embedded redis-server, flushed before each test.
- ``triton_server``: the real tritonserver with an empty model repository.
- ``label_studio``: a real Label Studio (``./run test`` installs it in a venv of its own).
- ``tokens``: an API token per role on the test's store.
- ``artifacts``: serving artifacts of a tiny MLP (versions 1-3, 0 a broken file).

At the end of the session no server process started by the tests may still be running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

os.environ.setdefault("OMP_NUM_THREADS", "1")

from cl_server.auth import ensure_admin, issue_token  # noqa: E402
from cl_server.embedded import (EmbeddedServiceError, EmbeddedServices, Endpoints,  # noqa: E402
                                LabelStudioEndpoint, LabelStudioServer)
from cl_server.store import MongoStore, User  # noqa: E402
from plugin.serving.triton_server import TritonServer  # noqa: E402

STORE_BACKENDS = ["embedded"] + (["external"] if os.environ.get("MODELCI_TEST_MONGO_URI") else [])


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    services = EmbeddedServices(tmp_path_factory.mktemp("embedded"), cache=True, store=True)
    services.start()
    try:
        yield services.endpoints
    finally:
        services.stop()


@pytest.fixture(params=STORE_BACKENDS)
def store_uri(request: pytest.FixtureRequest, embedded: Endpoints) -> str:
    if request.param == "external":
        return os.environ["MODELCI_TEST_MONGO_URI"]
    assert embedded.store_uri
    return embedded.store_uri


@pytest.fixture
def store(store_uri: str) -> Iterator[MongoStore]:
    database = f"t_{uuid.uuid4().hex[:12]}"
    store = MongoStore(store_uri, database)
    store.ensure_indexes()
    try:
        yield store
    finally:
        store.client.drop_database(database)
        store.close()


@pytest.fixture
def redis_url(embedded: Endpoints) -> str:
    assert embedded.cache_url
    client = redis.Redis.from_url(embedded.cache_url)
    client.flushall()
    client.close()
    return embedded.cache_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def tokens(store: MongoStore) -> dict[str, str]:
    """An API token per role (the admin's from ``ensure_admin``) on the test's store."""
    out = {"admin": ensure_admin(store) or ""}
    for role in ("viewer", "researcher", "engineer"):
        store.add_user(User(name=role, role=role))
        out[role] = issue_token(store, role, "test")[1]
    return out


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Serving artifacts of a tiny MLP (4 features, classes a/b/c): versions 1-3 with different
    weights, and 0: a file that is not a model."""
    from model_factory.templates import Classifier

    root = tmp_path_factory.mktemp("artifacts")
    paths = {}
    for version in (1, 2, 3):
        paths[version] = root / f"v{version}.pt"
        Classifier("mlp", (4,), ["a", "b", "c"], params={"hidden": [8]},
                   seed=version).export(paths[version])
    paths[0] = root / "broken.pt"
    paths[0].write_bytes(b"not a state dict")
    return paths


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The real tritonserver (nvidia-pytriton wheel), explicit model control, empty repository."""
    root = tmp_path_factory.mktemp("triton")
    server = TritonServer(root, root / "repository")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioEndpoint]:
    """A real Label Studio on loopback, one per session (its first start runs migrations:
    30-100 s); the token is its admin's (:data:`~cl_server.embedded.label_studio.DEFAULT_USERNAME`).
    """
    try:
        server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"),
                                   token=f"test-{uuid.uuid4().hex}")
    except EmbeddedServiceError as exc:  # not installed: a failure, never a skip
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a server process started by the tests outlived them."""
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.is_running()
                 and p.status() != psutil.STATUS_ZOMBIE]
    if leftovers:
        names = ", ".join(f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in leftovers)
        session.config.stash[_LEFTOVERS] = names
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LEFTOVERS = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    names = terminalreporter.config.stash.get(_LEFTOVERS, None)
    if names:
        terminalreporter.write_line(f"FAILED: server processes left running: {names}", red=True)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
