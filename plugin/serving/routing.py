"""Where the proxy sends each request: the champion, a canary share, a shadow mirror.

The table is one small JSON file per service, replaced atomically (write a temporary file,
``rename``) under an ``flock`` so that the adapter (in a CL worker or the CLI) and the proxy (in
its own process) share it without a server between them. Readers re-read it only when its
inode or modification time changes, so :meth:`RoutingTable.read` costs one ``stat`` on the request path.

Example:
    >>> import tempfile, pathlib
    >>> table = RoutingTable(pathlib.Path(tempfile.mkdtemp()) / "routing.json")
    >>> table.update(champion=1)
    Routes(champion=1, canary=None, canary_share=0.0, shadow=None)
    >>> table.update(canary=2, canary_share=0.1).canary
    2
    >>> table.read().pick(0.05), table.read().pick(0.5)
    (2, 1)
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Routes:
    """``champion`` serves; ``canary`` takes ``canary_share`` of the traffic; ``shadow`` gets
    a mirrored copy of every request (its answer is recorded, never returned)."""

    champion: int | None = None
    canary: int | None = None
    canary_share: float = 0.0
    shadow: int | None = None

    def pick(self, draw: float) -> int | None:
        """The version that answers a request, given a uniform draw in [0, 1)."""
        if self.canary is not None and draw < self.canary_share:
            return self.canary
        return self.champion


class RoutingTable:
    """The routing file of one service (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], Routes] | None = None

    def read(self) -> Routes:
        try:
            status = self.path.stat()
            stamp = (status.st_ino, status.st_mtime_ns)
        except FileNotFoundError:
            return Routes()
        with self._lock:
            if self._cached is not None and self._cached[0] == stamp:
                return self._cached[1]
        routes = self._parse(self.path.read_text())
        with self._lock:
            self._cached = (stamp, routes)
        return routes

    def update(self, **changes: Any) -> Routes:
        """Apply ``changes`` (fields of :class:`Routes`) and write the table atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._parse(self.path.read_text()) if self.path.exists() else Routes()
            routes = replace(current, **changes)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(routes)))
            os.replace(tmp, self.path)
        with self._lock:
            self._cached = None
        return routes

    def _parse(self, text: str) -> Routes:
        try:
            return Routes(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"routing table {self.path} is unreadable: {exc}") from exc
