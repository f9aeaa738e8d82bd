"""Process lifecycle of the embedded defaults and the CLI, with real processes and real servers.

- :class:`ManagedProcess`: start, readiness, failure reports, stop (escalation, process group),
  and orphans named by a pid file (stopped if still ours, ignored if the pid was recycled).
- :class:`EmbeddedServices`: one owner per data dir, data surviving a restart, long data dir
  paths, published endpoints.
- ``modelci-e demo`` as a subprocess: serves, stops cleanly on SIGINT/SIGTERM, keeps its admin
  token across restarts, leaves nothing running after SIGKILL, refuses a data dir in use.
- ``modelci-e validate-config`` and ``modelci-e token create``.

Every process a test starts is stopped by a ``finally`` or a fixture, even when the test fails
(conftest fails the session if one is left running).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pymongo
import pytest
import redis
import requests

from cl_server.auth import authenticate
from cl_server.embedded import (
    EmbeddedServiceError,
    EmbeddedServices,
    ManagedProcess,
    read_endpoints,
)
from cl_server.embedded.process import stop_orphan
from cl_server.store import MongoStore, Role

ROOT = Path(__file__).resolve().parents[1]
CONFIG_ENV = {"MODELCI_ADMIN_TOKEN": "a" * 32, "LABEL_STUDIO_TOKEN": "b" * 32}
_SCRIPT = Path(sys.executable).with_name("modelci-e")
# The console script users run; the module when the venv has none (e.g. not installed).
MODELCI_E = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "plugin.cli"]
CLI_MODULE = [sys.executable, "-m", "plugin.cli"]
TOKEN_RE = re.compile(r"\bmci_[A-Za-z0-9_-]{20,}")
START_TIMEOUT_S = 60.0
SLEEP_FOREVER = "import time\nwhile True: time.sleep(1)"


# --------------------------------------------------------------------------- helpers


def child_env(**extra: str) -> dict[str, str]:
    """Environment of the CLI subprocesses: one BLAS thread, wide panel, unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300", "PYTHONUNBUFFERED": "1",
            **extra}


def flat(text: str) -> str:
    """Whitespace collapsed, so a message the console wrapped still matches."""
    return " ".join(text.split())


def alive(proc: psutil.Process) -> bool:
    """Still running as the same process (a recycled pid or a zombie does not count)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def kill_quietly(procs: list[psutil.Process]) -> None:
    """SIGKILL whatever of ``procs`` still runs (test cleanup only)."""
    for proc in procs:
        if alive(proc):
            try:
                proc.kill()
            except psutil.Error:
                pass
    for proc in procs:
        try:
            proc.wait(5)
        except (psutil.Error, psutil.TimeoutExpired):
            pass


def pid_file_processes(run_dir: Path) -> dict[str, psutil.Process]:
    """The live processes the pid files in ``run_dir`` name (by pid and creation time)."""
    found: dict[str, psutil.Process] = {}
    for pid_file in run_dir.glob("*.pid"):
        try:
            record = json.loads(pid_file.read_text())
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) < 0.01:
                found[pid_file.stem] = proc
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            continue
    return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def python_child(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI_MODULE, *args], cwd=cwd, env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- the demo subprocess


class Demo:
    """One ``modelci-e demo`` subprocess; its output is collected by reader threads.

    While it serves, :meth:`wait_ready` records every descendant (psutil, so a recycled pid is
    never mistaken for one) and the pid files of the data dir, for the checks after it stops.
    """

    def __init__(self, data_dir: Path, cwd: Path):
        self.data_dir = data_dir
        self.run_dir = data_dir / "run"
        self.url: str | None = None
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.descendants: dict[int, psutil.Process] = {}
        self.pid_records: dict[str, dict[str, Any]] = {}
        self._url_seen = threading.Event()
        self.popen = subprocess.Popen(
            [*MODELCI_E, "demo", "--no-traffic", "--data-dir", str(data_dir), "--port", "0"],
            cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.stdout_lines),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr_lines),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: IO[str] | None, sink: list[str]) -> None:
        assert stream is not None
        for line in stream:
            sink.append(line)
            if line.startswith("MODELCI_URL="):
                self.url = line.split("=", 1)[1].strip()
                self._url_seen.set()

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    @property
    def admin_token(self) -> str | None:
        found = TOKEN_RE.search(self.stderr)
        return found.group(0) if found else None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> str:
        """The server's URL once it serves; fails with the CLI's stderr if it never does."""
        deadline = time.monotonic() + timeout
        while not self._url_seen.wait(0.05):
            if self.popen.poll() is not None:
                self._join_readers()
                pytest.fail(f"demo exited with code {self.popen.returncode} before serving:\n"
                            f"{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"demo not serving after {timeout:.0f} s:\n{self.stderr}")
        # stdout and stderr are read by separate threads: the banner (with the admin token)
        # is printed before the URL line but may be read after it.
        banner_deadline = time.monotonic() + 10
        while "Ctrl-C stops" not in flat(self.stderr) and time.monotonic() < banner_deadline:
            time.sleep(0.05)
        self.record_processes()
        assert self.url is not None
        return self.url

    def record_processes(self) -> None:
        for child in psutil.Process(self.popen.pid).children(recursive=True):
            self.descendants[child.pid] = child
        for pid_file in self.run_dir.glob("*.pid"):
            self.pid_records[pid_file.stem] = json.loads(pid_file.read_text())

    def alive_descendants(self) -> list[psutil.Process]:
        return [p for p in self.descendants.values() if alive(p)]

    def wait_exit(self, timeout: float = START_TIMEOUT_S) -> int:
        code = self.popen.wait(timeout)
        self._join_readers()
        return code

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = START_TIMEOUT_S) -> int:
        """Send ``sig`` and return the exit code."""
        self.popen.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        self.popen.kill()
        self.wait_exit(30)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(10)

    def cleanup(self) -> None:
        """Stop whatever of this demo still runs, politely first (test teardown)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._join_readers()
        leftovers = list(self.descendants.values())
        leftovers += pid_file_processes(self.run_dir).values()
        if not wait_until(lambda: not any(alive(p) for p in leftovers), 10):
            kill_quietly(leftovers)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Callable[[Path], Demo]]:
    """Start ``modelci-e demo`` subprocesses; every one (and all it started) is stopped after."""
    started: list[Demo] = []

    def start(data_dir: Path) -> Demo:
        demo = Demo(data_dir, cwd=tmp_path)
        started.append(demo)
        return demo

    try:
        yield start
    finally:
        for demo in reversed(started):
            demo.cleanup()


def assert_serves(url: str, token: str) -> None:
    """Health 200 with store, cache and queue ok and one worker; ``token`` is an admin's."""
    health = requests.get(f"{url}/api/health", timeout=30)
    assert health.status_code == 200, health.text
    components = health.json()["components"]
    for name in ("store", "cache", "queue"):
        assert components[name]["ok"], components
    assert "1 workers" in components["queue"]["detail"], components["queue"]
    whoami = requests.get(f"{url}/api/whoami", headers=bearer(token), timeout=30)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json() == {"user": "admin", "role": "admin"}


def assert_all_stopped(demo: Demo) -> None:
    assert demo.descendants, "no child processes were recorded while the demo ran"
    assert not demo.alive_descendants(), demo.alive_descendants()
    for name, record in demo.pid_records.items():
        try:
            proc = psutil.Process(record["pid"])
        except psutil.NoSuchProcess:
            continue
        same = abs(proc.create_time() - record["create_time"]) < 0.01
        assert not (same and alive(proc)), f"{name} (pid {record['pid']}) still running"


# --------------------------------------------------------------------------- ManagedProcess


def test_managed_process_start_ready_and_stop(tmp_path: Path) -> None:
    marker = tmp_path / "ready.txt"
    code = ("import pathlib, sys, time\ntime.sleep(0.2)\n"
            "pathlib.Path(sys.argv[1]).write_text('up')\n" + SLEEP_FOREVER)
    proc = ManagedProcess("sleeper", python_child(code, str(marker)), tmp_path / "run",
                          ready=marker.exists, ready_timeout_s=30)
    try:
        proc.start()
        assert marker.exists(), "start() returned before the readiness probe passed"
        assert proc.running and proc.pid is not None
        record = json.loads(proc.pid_file.read_text())
        child = psutil.Process(record["pid"])
        assert record["pid"] == proc.pid
        assert abs(child.create_time() - record["create_time"]) < 0.01
        # Its own session: a Ctrl-C in the owner's terminal does not reach it directly.
        assert os.getsid(proc.pid) == proc.pid
    finally:
        proc.stop()
    assert not proc.running and proc.pid is None
    assert not alive(child)
    assert not proc.pid_file.exists()
    proc.stop()  # stopping twice is harmless


def test_managed_process_exit_before_ready_reports_log_tail(tmp_path: Path) -> None:
    code = "import sys\nprint('boom: cannot bind port 1234', flush=True)\nsys.exit(3)"
    proc = ManagedProcess("crasher", python_child(code), tmp_path / "run",
                          ready=lambda: False, ready_timeout_s=30)
    with pytest.raises(EmbeddedServiceError) as failure:
        proc.start()
    message = str(failure.value)
    assert "embedded crasher exited with code 3 before it was ready" in message
    assert "boom: cannot bind port 1234" in message
    assert str(proc.log_file) in message
    assert not proc.running
    assert not proc.pid_file.exists()


def test_managed_process_readiness_timeout_stops_the_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    seen: list[psutil.Process] = []

    def probe() -> bool:  # records the child, then fails like a refused connection
        if not seen:
            seen.append(psutil.Process(json.loads((run_dir / "slow.pid").read_text())["pid"]))
        raise ConnectionRefusedError("not listening")

    code = "print('still warming up', flush=True)\n" + SLEEP_FOREVER
    proc = ManagedProcess("slow", python_child(code), run_dir, ready=probe, ready_timeout_s=1.0)
    start = time.monotonic()
    try:
        with pytest.raises(EmbeddedServiceError, match="embedded slow not ready after") as failure:
            proc.start()
    finally:
        proc.stop()
        kill_quietly(seen)
    assert time.monotonic() - start < 20
    assert "still warming up" in str(failure.value)
    assert seen, "the readiness probe never ran"
    assert not alive(seen[0]), "the process that never became ready was left running"
    assert not proc.pid_file.exists()


def test_managed_process_stop_escalates_to_sigkill_and_kills_its_group(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is killed after stop_timeout_s, with what it forked."""
    marker = tmp_path / "grandchild.pid"
    code = ("import pathlib, signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)'])\n"
            "pathlib.Path(sys.argv[1]).write_text(str(g.pid))\n" + SLEEP_FOREVER)
    proc = ManagedProcess("stubborn", python_child(code, str(marker)), tmp_path / "run",
                          ready=marker.exists, stop_timeout_s=1.0)
    tracked: list[psutil.Process] = []
    try:
        proc.start()
        assert proc.pid is not None
        tracked = [psutil.Process(proc.pid), psutil.Process(int(marker.read_text()))]
        start = time.monotonic()
        proc.stop()
        took = time.monotonic() - start
        assert took < 10, f"stop took {took:.1f} s with stop_timeout_s=1"
        assert not alive(tracked[0]), "SIGTERM-ignoring child survived stop()"
        assert wait_until(lambda: not alive(tracked[1]), 5), "grandchild in its group survived"
    finally:
        proc.stop()
        kill_quietly(tracked)


def test_start_stops_an_orphan_named_by_the_pid_file(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    argv = python_child(SLEEP_FOREVER)
    forgotten = ManagedProcess("svc", argv, run_dir, ready=lambda: True, die_with_parent=False)
    replacement = ManagedProcess("svc", argv, run_dir, ready=lambda: True)
    old: list[psutil.Process] = []
    try:
        forgotten.start()
        assert forgotten.pid is not None
        old.append(psutil.Process(forgotten.pid))
        # The owner is gone as far as the new one knows: only the pid file tells of the orphan.
        with caplog.at_level(logging.WARNING, logger="cl_server.embedded.process"):
            replacement.start()
        assert not alive(old[0]), "the orphan was not stopped before starting afresh"
        assert "stopping orphaned svc" in caplog.text
        assert replacement.pid is not None and replacement.pid != old[0].pid
        assert json.loads(replacement.pid_file.read_text())["pid"] == replacement.pid
        assert replacement.running
    finally:
        replacement.stop()
        kill_quietly(old)
        del forgotten


def test_stop_orphan_ignores_a_recycled_pid(tmp_path: Path) -> None:
    """A pid file naming a live process that started at another time is not ours: left alone."""
    bystander = subprocess.Popen(python_child(SLEEP_FOREVER), stdin=subprocess.DEVNULL)
    try:
        created = psutil.Process(bystander.pid).create_time()
        pid_file = tmp_path / "run" / "svc.pid"
        pid_file.parent.mkdir()
        pid_file.write_text(json.dumps({"pid": bystander.pid, "create_time": created - 3600}))
        assert stop_orphan(pid_file, timeout_s=5) is False
        assert not pid_file.exists()
        assert bystander.poll() is None, "stop_orphan killed a process that was not ours"

        # The same through start(): the bystander survives, the new process starts.
        pid_file.write_text(json.dumps({"pid": bystander.pid, "create_time": created - 3600}))
        proc = ManagedProcess("svc", python_child(SLEEP_FOREVER), pid_file.parent,
                              ready=lambda: True)
        try:
            proc.start()
            assert proc.running and proc.pid != bystander.pid
            assert bystander.poll() is None
        finally:
            proc.stop()
    finally:
        bystander.kill()
        bystander.wait(10)


@pytest.mark.parametrize("content", [
    "", "not json {", "[1, 2]", "{}", '{"pid": "abc", "create_time": 1}',
    '{"pid": 12345678, "create_time": 1}',  # no such pid (above pid_max)
    '{"pid": 1}',
], ids=["empty", "broken-json", "list", "no-fields", "pid-not-int", "no-such-pid",
        "no-create-time"])
def test_stop_orphan_ignores_garbage_pid_files(tmp_path: Path, content: str) -> None:
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text(content)
    assert stop_orphan(pid_file, timeout_s=1) is False
    assert not pid_file.exists()
    assert stop_orphan(tmp_path / "missing.pid", timeout_s=1) is False


# --------------------------------------------------------------------------- EmbeddedServices


def test_second_owner_of_a_data_dir_is_refused(tmp_path: Path) -> None:
    first = EmbeddedServices(tmp_path / "data", cache=True, store=True)
    second = EmbeddedServices(tmp_path / "data", cache=True, store=True)
    try:
        endpoints = first.start()
        first_pids = list(first.pids)
        with pytest.raises(EmbeddedServiceError, match="in use"):
            second.start()
        second.stop()  # must not release or clean up what the first owner holds
        assert read_endpoints(tmp_path / "data") == endpoints
        assert first.pids == first_pids
        assert all(alive(psutil.Process(pid)) for pid in first_pids)
        assert redis.Redis.from_url(endpoints.cache_url).ping()
        client = pymongo.MongoClient(endpoints.store_uri, serverSelectionTimeoutMS=5000)
        try:
            assert client.admin.command("ping")["ok"] == 1
        finally:
            client.close()
    finally:
        second.stop()
        first.stop()


def test_store_and_cache_data_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedServices(data_dir, cache=True, store=True) as services:
        first_pids = set(services.pids)
        first_procs = [psutil.Process(pid) for pid in first_pids]
        cache = redis.Redis.from_url(services.endpoints.cache_url)
        cache.set("counter", 41)
        cache.incr("counter")
        cache.rpush("queue", "job-1", "job-2")
        cache.close()
        client = pymongo.MongoClient(services.endpoints.store_uri)
        client["persist"]["things"].insert_one({"_id": "a", "n": 7, "tags": ["x", "y"]})
        client.close()
    assert not any(alive(p) for p in first_procs)
    assert (data_dir / "redis" / "appendonly.aof").stat().st_size > 0, "redis wrote no AOF"
    assert not (data_dir / "redis" / "dump.rdb").exists(), "redis took a full snapshot"

    with EmbeddedServices(data_dir, cache=True, store=True) as services:
        assert not first_pids & set(services.pids)
        cache = redis.Redis.from_url(services.endpoints.cache_url)
        try:
            assert cache.get("counter") == b"42"
            assert cache.lrange("queue", 0, -1) == [b"job-1", b"job-2"]
        finally:
            cache.close()
        client = pymongo.MongoClient(services.endpoints.store_uri)
        try:
            assert client["persist"]["things"].find_one({"_id": "a"}) == {
                "_id": "a", "n": 7, "tags": ["x", "y"]}
        finally:
            client.close()


def test_a_snapshot_only_data_dir_is_carried_into_the_append_only_file(tmp_path: Path) -> None:
    """A data dir from a version that persisted Redis by snapshots only (dump.rdb, no AOF)
    keeps its cache: loaded from the snapshot once, then persisted by the AOF alone."""
    data_dir = tmp_path / "data"
    redis_dir = data_dir / "redis"
    with EmbeddedServices(data_dir, cache=True, store=False) as services:
        cache = redis.Redis.from_url(services.endpoints.cache_url)
        cache.rpush("queue", "job-1", "job-2")
        cache.save()  # the snapshot an earlier version left behind
        cache.close()
    (redis_dir / "appendonly.aof").unlink()
    assert (redis_dir / "dump.rdb").exists()

    with EmbeddedServices(data_dir, cache=True, store=False) as services:
        assert (redis_dir / "appendonly.aof").stat().st_size > 0  # written before start returned
        cache = redis.Redis.from_url(services.endpoints.cache_url)
        try:
            assert cache.lrange("queue", 0, -1) == [b"job-1", b"job-2"]
            assert cache.info("persistence")["aof_enabled"] == 1
            cache.rpush("queue", "job-3")
        finally:
            cache.close()
    (redis_dir / "dump.rdb").unlink()  # from here the AOF alone carries the cache

    with EmbeddedServices(data_dir, cache=True, store=False) as services:
        cache = redis.Redis.from_url(services.endpoints.cache_url)
        try:
            assert cache.lrange("queue", 0, -1) == [b"job-1", b"job-2", b"job-3"]
        finally:
            cache.close()


@pytest.mark.parametrize("leaf", ["long-data-dir-" + "x" * 100, "é" * 40, 'my data "dir"'],
                         ids=["long", "non-ascii", "spaces-quotes"])
def test_long_data_dir_path_uses_a_short_socket_path(tmp_path: Path, leaf: str) -> None:
    data_dir = tmp_path / leaf / "nested"
    socket_path: Path | None = None
    try:
        with EmbeddedServices(data_dir, cache=True, store=True) as services:
            url = services.endpoints.cache_url
            assert url is not None and url.startswith("unix://")
            socket_path = Path(url.removeprefix("unix://"))
            assert len(str(socket_path).encode()) <= 107
            assert socket_path.exists()
            cache = redis.Redis.from_url(url)
            try:
                assert cache.ping()
                cache.set("k", "v")
                assert cache.get("k") == b"v"
            finally:
                cache.close()
            store = MongoStore(services.endpoints.store_uri, "longpath")
            try:
                store.ping()
            finally:
                store.close()
        assert not socket_path.exists(), "redis left its socket behind"
        if socket_path.parent != data_dir / "redis":
            assert not socket_path.parent.exists(), "the socket's dir under the temp dir stayed"
        assert (data_dir / "redis" / "appendonly.aof").exists()
    finally:
        if socket_path is not None and socket_path.parent != data_dir / "redis":
            try:
                socket_path.parent.rmdir()  # the fallback dir under the temp dir
            except OSError:
                pass


def test_read_endpoints_only_while_an_owner_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert read_endpoints(data_dir) is None
    services = EmbeddedServices(data_dir, cache=True, store=False)
    try:
        endpoints = services.start()
        assert endpoints.cache_url and endpoints.store_uri is None
        assert read_endpoints(data_dir) == endpoints
    finally:
        services.stop()
    assert read_endpoints(data_dir) is None
    assert not (data_dir / "run" / "endpoints.json").exists()
    assert not list((data_dir / "run").glob("*.pid"))


# --------------------------------------------------------------------------- modelci-e demo


def test_demo_lifecycle_refuses_a_second_owner_stops_on_signals_and_survives_sigkill(
        demos: Callable[[Path], Demo], tmp_path: Path) -> None:
    """One data dir through a demo's whole life (one sequence: each demo start costs ~20 s).

    First start: serves, prints an admin token; a second demo on the same dir is refused and
    the first is untouched; SIGINT stops everything and removes the pid files. Second start:
    no new token, the first still works; SIGKILL leaves no child running but stale pid files.
    Third start: serves with new processes; SIGTERM stops everything.
    """
    data_dir = tmp_path / "data"
    first = demos(data_dir)
    url = first.wait_ready()
    token = first.admin_token
    assert token, f"no admin token printed on first start:\n{first.stderr}"
    assert_serves(url, token)
    assert requests.get(f"{url}/api/whoami", timeout=30).status_code == 401
    assert set(first.pid_records) == {"redis", "store", "worker-1"}, first.pid_records
    assert {r["pid"] for r in first.pid_records.values()} <= set(first.descendants)
    endpoints = read_endpoints(data_dir)
    assert endpoints is not None

    # a second owner of the data dir is refused and changes nothing
    intruder = demos(data_dir)
    assert intruder.wait_exit() != 0
    assert "in use" in flat(intruder.stderr), intruder.stderr
    assert "MODELCI_URL" not in intruder.stdout
    assert intruder.admin_token is None
    assert first.popen.poll() is None
    assert not [p for p in first.descendants.values() if not alive(p)]
    assert {name: r["pid"] for name, r in first.pid_records.items()} == {
        name: p.pid for name, p in pid_file_processes(data_dir / "run").items()}
    assert read_endpoints(data_dir) == endpoints
    assert_serves(url, token)

    # SIGINT: a clean stop
    assert first.stop(signal.SIGINT) == 0, first.stderr
    assert "stopped." in first.stderr
    assert_all_stopped(first)
    assert not list((data_dir / "run").glob("*.pid"))
    assert read_endpoints(data_dir) is None

    # restart: the admin token is kept, not printed again; then SIGKILL the owner
    second = demos(data_dir)
    url = second.wait_ready()
    assert second.admin_token is None and "admin token" not in second.stderr, second.stderr
    assert_serves(url, token)
    children = list(second.descendants.values())
    assert len(children) >= 3, children
    second.kill()
    assert wait_until(lambda: not any(alive(p) for p in children), 15), (
        "children outlived a SIGKILLed owner: "
        + ", ".join(f"{p.pid} {p.cmdline()[:4]}" for p in children if alive(p)))
    stale = sorted(p.stem for p in (data_dir / "run").glob("*.pid"))
    assert stale, "expected stale pid files after SIGKILL"
    assert read_endpoints(data_dir) is None  # endpoints.json remains, but nobody owns the dir

    # restart after SIGKILL: new processes, same token; SIGTERM: a clean stop
    third = demos(data_dir)
    url = third.wait_ready()
    assert_serves(url, token)
    old_pids = {r["pid"] for r in second.pid_records.values()}
    assert not old_pids & {r["pid"] for r in third.pid_records.values()}
    assert third.stop(signal.SIGTERM) == 0, third.stderr
    assert "stopped." in third.stderr
    assert_all_stopped(third)


# --------------------------------------------------------------------------- validate-config


def test_validate_config_accepts_every_example(tmp_path: Path) -> None:
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(files) >= 4
    result = run_cli("validate-config", *map(str, files), cwd=tmp_path,
                     env=child_env(**CONFIG_ENV))
    assert result.returncode == 0, result.stdout + result.stderr
    for file in files:
        assert f"{file}: ok" in result.stdout


def test_validate_config_lists_every_invalid_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: svc\n"
        "engine: {kuind: triton, model_name: m}\n"
        "model: {template: mlp, input: {shape: [4]}, classes: [a, b, a]}\n"
        "collector: {sampling_ratio: 1.5}\n"
        "triggers:\n  rules:\n    - {kind: time, interval_s: -5}\n")
    good = ROOT / "cl_server" / "config" / "demo.yaml"
    result = run_cli("validate-config", str(broken), str(good), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    paths = ["engine.kind", "engine.kuind", "model.classes", "collector.sampling_ratio",
             "triggers.rules[0].interval_s"]
    for path in paths:
        assert f"  {path}: " in output, f"{path} not reported:\n{output}"
    assert str(broken) in output
    assert f"{good}: ok" in result.stdout  # the other file is still checked


def test_validate_config_reports_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli("validate-config", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    output = flat(result.stdout + result.stderr)
    assert str(missing) in output
    assert "cannot read the file" in output and "No such file" in output
    assert "Traceback" not in output


# --------------------------------------------------------------------------- token create


def test_token_create_without_a_running_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = run_cli("token", "create", "--user", "alice", "--role", "engineer",
                      "--data-dir", str(data_dir), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert TOKEN_RE.fullmatch(token), created.stdout

    missing = run_cli("token", "create", "--user", "bob", "--data-dir", str(data_dir),
                      cwd=tmp_path)
    assert missing.returncode == 1
    assert "user 'bob' does not exist; pass --role" in flat(missing.stderr), missing.stderr
    assert not TOKEN_RE.search(missing.stdout)
    # The temporary store is gone again and the data dir is free.
    assert read_endpoints(data_dir) is None
    assert not list((data_dir / "run").glob("*.pid"))

    services = EmbeddedServices(data_dir, cache=False, store=True)
    try:
        endpoints = services.start()
        # With an owner running, the CLI uses its store instead of starting one.
        again = run_cli("token", "create", "--user", "alice", "--label", "second",
                        "--data-dir", str(data_dir), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        second_token = again.stdout.strip()
        assert TOKEN_RE.fullmatch(second_token) and second_token != token
        store = MongoStore(endpoints.store_uri, "modelci")
        try:
            for clear in (token, second_token):
                principal = authenticate(store, f"Bearer {clear}")
                assert principal.user == "alice"
                assert principal.role == Role.engineer
            assert store.get_user("bob") is None
            assert sorted(t.label for t in store.list_tokens("alice")) == ["cli", "second"]
        finally:
            store.close()
    finally:
        services.stop()


# --------------------------------------------------------------------------- unreachable services


@pytest.mark.parametrize(("section", "expected"), [
    ("cache: {url: 'redis://:pw@127.0.0.1:9/0'}", "cache (Redis) unreachable"),
    ("store: {uri: 'mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300'}", "store unavailable"),
], ids=["redis", "mongodb"])
def test_start_with_unreachable_external_service_fails_clearly(tmp_path: Path, section: str,
                                                                expected: str) -> None:
    config = tmp_path / "svc.yaml"
    config.write_text("name: svc\nengine: {kind: triton, model_name: m}\n"
                      "model: {template: mlp, input: {shape: [4]}, classes: [a, b]}\n"
                      f"{section}\nqueue: {{embedded_workers: 0}}\n")
    result = run_cli("start", str(config), "--data-dir", str(tmp_path / "data"), "--port", "0",
                     cwd=tmp_path)
    output = flat(result.stdout + result.stderr)
    assert result.returncode == 1, output
    assert expected in output
    assert "Traceback" not in output and ":pw@" not in output
    assert pid_file_processes(tmp_path / "data" / "run") == {}
