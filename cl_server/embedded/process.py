"""A local server process the CLI owns: started, checked ready, stopped, and found again if orphaned.

Each process writes ``<run_dir>/<name>.pid`` holding its pid and creation time (so a recycled pid
is never mistaken for ours). On Linux the child also gets ``PR_SET_PDEATHSIG`` so that it is
terminated when its owner dies, even by SIGKILL. Should one survive anyway (the pdeath signal
ignored, a wedged shutdown), the next :meth:`ManagedProcess.start` finds it through the pid file
and stops it before starting afresh.

Example:
    >>> import sys, tempfile
    >>> proc = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
    ...                       run_dir=tempfile.mkdtemp(), ready=lambda: True)
    >>> proc.start(); proc.running
    True
    >>> proc.stop(); proc.running
    False
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded server did not start; the message includes the end of its log."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One child server process with a pid file, a log file and a readiness probe.

    Parameters:
        name: short identifier, used for the pid and log file names (``redis``, ``store``).
        argv: the command line.
        run_dir: directory for ``<name>.pid`` and ``<name>.log``.
        ready: returns True once the server accepts work; polled every 50 ms.
        ready_timeout_s: seconds to wait for ``ready`` before giving up.
        stop_timeout_s: seconds between SIGTERM and SIGKILL.
        env: environment of the child (default: inherited).
        die_with_parent: ask the kernel to SIGTERM the child when its owner dies.
        stop_signals: SIGTERMs sent on stop, one second apart (RQ workers take a second one as
            "stop now" instead of "finish the current job").
    """

    def __init__(self, name: str, argv: list[str], run_dir: str | os.PathLike[str],
                 ready: Callable[[], bool], *, ready_timeout_s: float = 30.0,
                 stop_timeout_s: float = 10.0, env: Mapping[str, str] | None = None,
                 die_with_parent: bool = True, stop_signals: int = 1):
        self.name = name
        self.argv = argv
        self.run_dir = Path(run_dir)
        self.ready = ready
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.env = dict(env) if env is not None else None
        self.die_with_parent = die_with_parent
        self.stop_signals = stop_signals
        self.pid_file = self.run_dir / f"{name}.pid"
        self.log_file = self.run_dir / f"{name}.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        """Stop an orphan left by an earlier owner, start the process and wait until ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stop_orphan(self.pid_file, self.stop_timeout_s)
        with open(self.log_file, "ab") as log_fh:
            self._popen = subprocess.Popen(
                self.argv, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
        proc = psutil.Process(self._popen.pid)
        tmp = self.pid_file.with_suffix(".pid.tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time(),
                                   "argv": self.argv}))
        tmp.replace(self.pid_file)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                self._fail(f"exited with code {self._popen.returncode} before it was ready")
            try:
                if self.ready():
                    log.info("%s ready (pid %d)", self.name, self._popen.pid)
                    return
            except Exception:  # noqa: BLE001 - not ready yet, whatever the probe raised
                pass
            time.sleep(0.05)
        self._fail(f"not ready after {self.ready_timeout_s:.0f} s")

    def _fail(self, why: str) -> None:
        self.stop()
        tail = ""
        if self.log_file.exists():
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
        raise EmbeddedServiceError(f"embedded {self.name} {why}; log {self.log_file}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL; remove the pid file.

        Whatever the process left in its process group (e.g. a forked work horse) is killed too.
        """
        if self._popen is not None:
            pending = self.stop_signals
            deadline = time.monotonic() + self.stop_timeout_s
            while self._popen.poll() is None and time.monotonic() < deadline:
                if pending:
                    self._popen.send_signal(signal.SIGTERM)
                    pending -= 1
                try:
                    self._popen.wait(1.0 if pending else max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    continue
            if self._popen.poll() is None:
                log.warning("%s did not stop in %.0f s; killing it", self.name,
                            self.stop_timeout_s)
                self._popen.kill()
                self._popen.wait()
            try:
                os.killpg(self._popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._popen = None
        self.pid_file.unlink(missing_ok=True)


def stop_orphan(pid_file: Path, timeout_s: float = 10.0) -> bool:
    """Stop the process a stale pid file names, if it is still that process. True if one ran."""
    try:
        record = json.loads(pid_file.read_text())
        proc = psutil.Process(int(record["pid"]))
        same = abs(proc.create_time() - float(record["create_time"])) < 0.01
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        pid_file.unlink(missing_ok=True)
        return False
    if not same:
        pid_file.unlink(missing_ok=True)
        return False
    log.warning("stopping orphaned %s (pid %d) left by an earlier run", pid_file.stem, proc.pid)
    try:
        proc.terminate()
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    pid_file.unlink(missing_ok=True)
    return True
