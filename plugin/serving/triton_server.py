"""Start the real ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel (CPU, python backend).

The wheel carries tritonserver 2.51 under ``pytriton/tritonserver`` and its shared libraries in
``nvidia_pytriton.libs``. To run it outside pytriton, :func:`prepare_server_dir` copies
``bin``, ``backends`` and ``caches`` once into the data directory and puts the python-backend
stub for this interpreter's Python version into ``backends/python``. The server runs with
explicit model control (nothing loads until an adapter asks), on loopback, with this venv first
on ``PATH`` so that the stub finds torch and modelci-e.

``nvidia-pytriton`` declares ``numpy<2``; the project installs it with ``--no-deps`` (see
``./run``) because only the binary is used, never pytriton's Python API. Its python-backend stub
was built against NumPy 1.x, though: under NumPy 2 ``as_numpy()`` returns garbage (a BYTES
tensor arrives as its first byte repeated), so only DLPack would cross, and DLPack cannot carry
strings. ``./run`` therefore installs NumPy 1.26 into ``<venv>/triton-stub-site``
(:func:`stub_site`); the server passes that directory to the stub in
:data:`STUB_SITE_ENV`, and the served ``model.py`` puts it first on ``sys.path`` before
anything imports NumPy. Text models (BYTES inputs) need it.

Example (not run as a doctest: it starts a server)::

    server = TritonServer(Path(".modelci"), Path(".modelci/triton-repo"))
    server.start()      # ready in about 0.5 s
    print(server.url)   # http://127.0.0.1:PORT (KServe V2 REST)
    server.stop()
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

import requests

from cl_server.embedded.process import EmbeddedServiceError, ManagedProcess


def pytriton_root() -> Path:
    """The ``pytriton`` package directory (without importing pytriton)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "tritonserver is not installed: `pip install --no-deps nvidia-pytriton==0.7.0` "
            "(./run does this)")
    return Path(next(iter(spec.submodule_search_locations)))


STUB_SITE_ENV = "MODELCI_TRITON_STUB_SITE"
"""The environment variable naming the stub's NumPy 1.x directory (read by ``triton_model.py``)."""


def stub_site() -> Path | None:
    """``<venv>/triton-stub-site`` (NumPy 1.x for the python-backend stub) if installed."""
    path = Path(sys.prefix) / "triton-stub-site"
    return path if (path / "numpy").is_dir() else None


def prepare_server_dir(target: Path) -> Path:
    """Copy the server tree into ``target`` once; returns the ``tritonserver`` binary path."""
    source = pytriton_root() / "tritonserver"
    binary = target / "bin" / "tritonserver"
    stamp = target / ".prepared"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if stamp.exists() and stamp.read_text() == f"{source}|{version}":
        return binary
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for part in ("bin", "backends", "caches"):
        shutil.copytree(source / part, target / part, symlinks=True)
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise EmbeddedServiceError(f"no python-backend stub for Python {version} in {source}")
    shutil.copy2(stub, target / "backends" / "python" / stub.name)
    stamp.write_text(f"{source}|{version}")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """A ``tritonserver`` child process serving ``repository`` with explicit model control.

    Parameters:
        data_dir: where the server tree, pid file and log live (``<data_dir>/triton``).
        repository: the model repository (created if missing).
        http_port, grpc_port, metrics_port: 0 picks free ports.
        ready_timeout_s: seconds to wait for ``/v2/health/live``.
    """

    def __init__(self, data_dir: Path, repository: Path, *, http_port: int = 0,
                 grpc_port: int = 0, metrics_port: int = 0, ready_timeout_s: float = 60.0):
        self.data_dir = Path(data_dir)
        self.repository = Path(repository).resolve()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _live(self) -> bool:
        try:
            return requests.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> None:
        home = self.data_dir / "triton"
        binary = prepare_server_dir(home / "server")
        self.repository.mkdir(parents=True, exist_ok=True)
        libs = pytriton_root().parent / "nvidia_pytriton.libs"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(libs), sysconfig.get_config_var("LIBDIR") or "",
                        env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # see TritonAdapter._write: no writes in versions
        site = stub_site()
        if site is not None:
            env[STUB_SITE_ENV] = str(site)
        else:
            env.pop(STUB_SITE_ENV, None)
        argv = [str(binary), f"--model-repository={self.repository}",
                "--model-control-mode=explicit",
                f"--backend-directory={binary.parent.parent / 'backends'}",
                f"--cache-directory={binary.parent.parent / 'caches'}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
                "--allow-gpu-metrics=false", "--allow-cpu-metrics=true", "--log-verbose=0",
                "--exit-timeout-secs=5"]
        self._process = ManagedProcess("tritonserver", argv, home, self._live,
                                       ready_timeout_s=self.ready_timeout_s, env=env,
                                       stop_timeout_s=15.0)
        self._process.start()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_file(self) -> Path:
        return self.data_dir / "triton" / "tritonserver.log"
