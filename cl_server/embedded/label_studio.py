"""A real Label Studio server (``label-studio start``), started on loopback, checked, stopped.

Label Studio pins its own Django, redis, rq and numpy, so it lives in a venv of its own
(``./run test`` installs ``label-studio==1.23.2`` into ``<repo>/.venv-label-studio``) and runs
as a child process: :class:`LabelStudioServer` finds the ``label-studio`` executable
(:func:`find_label_studio`), starts it under a :class:`ManagedProcess` (pid file, log, dies
with its owner) and is ready once the API answers the configured token. Layout of the data dir::

    <data_dir>/label_studio.sqlite3, media/, ...   Label Studio's own data (user, projects, tasks)
    <data_dir>/account.json                        its user and a hash of its token
    <data_dir>/run/label-studio.pid, .log          pid and log of the server

The first start on a new data dir runs Label Studio's migrations (30-100 s on 2 cores); a
restart on the same dir takes 4-10 s. The user and its API token are created on the first
start only: a later start must pass the same username and token (checked before starting).

Webhooks: Label Studio 1.23.2 refuses webhook URLs that resolve to loopback or private networks
(SSRF protection, on by default: ``POST /api/webhooks`` answers 403 "URL resolves to a reserved
network address"). This server keeps the protection but lifts it for loopback only
(:data:`BANNED_SUBNETS`), so that Label Studio may call back a CL server on the same machine.

Example (not run as a doctest: a first start takes 30-100 s)::

    with LabelStudioServer(Path(".modelci/label-studio"), token="modelci-token") as server:
        requests.get(f"{server.url}/api/projects",
                     headers={"Authorization": f"Token {server.token}"}).json()
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil
import requests

from cl_server.embedded.process import EmbeddedServiceError, ManagedProcess

EXECUTABLE_ENV = "MODELCI_LABEL_STUDIO"
"""Environment variable naming the ``label-studio`` executable; wins over the other places."""
VENV_DIR = ".venv-label-studio"
"""Label Studio's own venv, under the repository root (``./run test`` creates it)."""
INSTALL_HINT = (f"run `./run test` (it installs label-studio==1.23.2 into {VENV_DIR}), or set "
                f"{EXECUTABLE_ENV} to a label-studio executable")
DEFAULT_USERNAME = "admin@modelci.local"
MIN_TOKEN_CHARS = 6
"""Label Studio ignores a shorter ``LABEL_STUDIO_USER_TOKEN`` and makes a random one."""

# Label Studio 1.23.2's default banned subnets (core/utils/io.py, validate_ip) without loopback
# (127.0.0.0/8, ::1/128): webhooks may reach this machine, never a private network.
BANNED_SUBNETS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4",
    "255.255.255.255/32", "::/128", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96",
    "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28", "2001:db8::/32",
    "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)
# Label Studio reads many settings from unprefixed variables too (HOST, PORT, DEBUG, REDIS_*,
# DATABASE_*), so the server gets only these from our environment, plus its own settings.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")


@dataclass(frozen=True)
class LabelStudioEndpoint:
    """Where a Label Studio answers (``url``, no trailing slash) and its API token."""

    url: str
    token: str


def find_label_studio() -> str | None:
    """The ``label-studio`` executable, or None: ``$MODELCI_LABEL_STUDIO`` if set (as given,
    even if missing: :class:`LabelStudioServer` then says so), else
    ``<repo root>/.venv-label-studio/bin/label-studio``, else ``label-studio`` on ``PATH``.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"MODELCI_LABEL_STUDIO": "/opt/ls/label-studio"}):
        ...     find_label_studio()
        '/opt/ls/label-studio'
    """
    named = os.environ.get(EXECUTABLE_ENV)
    if named:
        return named
    local = Path(__file__).resolve().parents[2] / VENV_DIR / "bin" / "label-studio"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("label-studio")


def _is_executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def label_studio_installed() -> bool:
    """Whether :func:`find_label_studio` names an executable file (what the demo's ``auto``
    annotator asks).

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"MODELCI_LABEL_STUDIO": "/nonexistent/ls"}):
        ...     label_studio_installed()
        False
    """
    executable = find_label_studio()
    return executable is not None and _is_executable(executable)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    # Bound as Django's runserver binds (SO_REUSEADDR): a socket in TIME_WAIT does not count.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


class LabelStudioServer:
    """A ``label-studio start`` child process on ``host:port``, its data under ``data_dir``.

    Parameters:
        data_dir: Label Studio's data dir (created if missing); ``run/`` holds its pid and log.
        token: the API token of the user (at least 6 characters), sent as
            ``Authorization: Token <token>`` (Label Studio's legacy tokens, enabled here).
        port: TCP port; None picks a free one. A port in use is an error: Label Studio itself
            would silently move to the next free port.
        host: address to listen on and to reach the server at.
        executable: the ``label-studio`` executable; None: :func:`find_label_studio`.
        username: the user's e-mail address (Label Studio's login name).
        password: the user's password for the web UI; None: the token.
        ready_timeout_s: seconds to wait for the API to accept the token (a first start on a new
            data dir runs migrations: 60-100 s).
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, token: str, port: int | None = None,
                 host: str = "127.0.0.1", executable: str | None = None,
                 username: str = DEFAULT_USERNAME, password: str | None = None,
                 ready_timeout_s: float = 240.0):
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the Label Studio token must have at least {MIN_TOKEN_CHARS} "
                             f"characters (got {len(token)})")
        executable = executable or find_label_studio()
        if executable is None:
            raise EmbeddedServiceError(f"label-studio is not installed: {INSTALL_HINT}")
        if not _is_executable(executable):
            raise EmbeddedServiceError(f"{executable} is not an executable file: {INSTALL_HINT}")
        self.data_dir = Path(data_dir).resolve()
        self.executable = executable
        self.host = host
        self.port = port if port is not None else _free_port(host)
        self.username = username
        self.password = password if password is not None else token
        self.ready_timeout_s = ready_timeout_s
        self._token = token
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def endpoint(self) -> LabelStudioEndpoint:
        return LabelStudioEndpoint(self.url, self._token)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_file(self) -> Path:
        return self.data_dir / "run" / "label-studio.log"

    def start(self) -> str:
        """Start the server and wait until the token works; returns :attr:`url`.

        Raises:
            EmbeddedServiceError: the port is in use, the data dir was made for another user or
                token, or the server did not start (the message ends with its log's end).
        """
        if _port_in_use(self.host, self.port):
            raise EmbeddedServiceError(
                f"Label Studio did not start: port {self.port} on {self.host} is already in use "
                "(pass another port, or port=None for a free one)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._check_account()
        argv = [self.executable, "start", "--port", str(self.port), "--internal-host", self.host,
                "--no-browser", "--data-dir", str(self.data_dir)]
        self._process = ManagedProcess("label-studio", argv, self.data_dir / "run", self._ready,
                                       ready_timeout_s=self.ready_timeout_s, env=self._env())
        try:
            self._process.start()
        except EmbeddedServiceError as exc:
            raise EmbeddedServiceError(f"Label Studio did not start at {self.url}: {exc}") from None
        self._write_account()
        return self.url

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def _env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self._token,
            # Must be set when the data dir is created: the organization keeps the flag.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS": "false",
            "LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS": ",".join(BANNED_SUBNETS),
            "PYTHONUNBUFFERED": "1",  # the log shows where a start got stuck
        })
        return env

    def _ready(self) -> bool:
        assert self._process is not None and self._process.pid is not None
        # Our process must own the port: another server there could answer the same token.
        listening = any(conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port
                        for conn in psutil.Process(self._process.pid).net_connections("tcp"))
        if not listening:
            return False
        answer = requests.get(f"{self.url}/api/current-user/whoami", timeout=5,
                              headers={"Authorization": f"Token {self._token}"})
        return answer.status_code == 200

    def _account(self) -> dict[str, str]:
        return {"username": self.username,
                "token_sha256": hashlib.sha256(self._token.encode()).hexdigest()}

    def _check_account(self) -> None:
        path = self.data_dir / "account.json"
        try:
            made_for = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if made_for != self._account():
            raise EmbeddedServiceError(
                f"Label Studio's data dir {self.data_dir} was made for user "
                f"{made_for.get('username')} with another token; Label Studio creates the user "
                "and token on the first start only: pass those, or use a new data dir")

    def _write_account(self) -> None:
        tmp = self.data_dir / "account.json.tmp"
        tmp.write_text(json.dumps(self._account()))
        tmp.replace(self.data_dir / "account.json")

    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
