"""A replica: a copy of a service's model kept in memory, fresh through the server's weight
patches, answering inference requests (KServe V2 JSON) while it updates.

The agent follows the service's publications (``GET /api/services/{s}/patches?since=S``, polled
every ``poll_s`` seconds, at once on a Redis notice when ``redis_url`` is given) and applies
them strictly in order. What it refuses, and what it does instead:

| it gets | it does |
| --- | --- |
| a publication it holds already (duplicate) | skips it |
| publications out of order | applies them sorted |
| a gap (publication S+2 while at S) | asks again for those after S; after three tries, the snapshot |
| a corrupt patch (its own sha256 fails), a patch for another base, or a result whose checksum differs from the server's | fetches it again; after three failures, the snapshot |

It holds the model twice. A patch is applied in place to the standby copy, whose checksum
(:class:`~plugin.replica.patch.StateDigest`, updated for the blocks the patch wrote) must then
equal the server's; only then do
requests switch to it, and the other copy catches up once the requests still using it have
finished. So a request is only ever answered by a state whose checksum the server published.

Example (the pieces a test drives; ``modelci-e replica`` runs the whole agent):
    >>> agent = ReplicaAgent("http://127.0.0.1:9", "digits", token="t")
    >>> agent.status()["sequence"], agent.ready
    (0, False)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import torch
from torch import nn

from plugin.replica.patch import Patch, PatchError, State, StateDigest, apply, decode

log = logging.getLogger(__name__)
ATTEMPTS = 3


class SyncFailed(RuntimeError):
    """The server could not be read (unreachable, or an error answer); the agent keeps serving
    what it has and tries again at the next poll."""


@dataclass
class _Copy:
    """One in-memory copy of the model and the requests using it."""

    net: nn.Module
    weights: State  # the net's own tensors: writing them changes the net
    digest: StateDigest
    users: int = 0
    idle: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class Serving:
    """What answers requests now."""

    sequence: int
    version: int
    sha256: str
    classes: list[str]
    meta: dict[str, Any]


class ReplicaAgent:
    """See the module doc. ``on_swap`` is called with each state switched to (tests record it)."""

    def __init__(self, server: str, service: str, *, token: str, poll_s: float = 1.0,
                 redis_url: str | None = None, timeout_s: float = 30.0,
                 swap_log: Path | None = None,
                 on_swap: Callable[[Serving], None] | None = None):
        self.server = server.rstrip("/")
        self.service = service
        self.poll_s = poll_s
        self.redis_url = redis_url
        self.timeout_s = timeout_s
        self.swap_log = swap_log
        self.on_swap = on_swap
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._lock = threading.Lock()  # one sync at a time
        self._state_lock = threading.Lock()  # the switch between copies
        self._copies: list[_Copy] = []
        self._active = 0
        self.serving: Serving | None = None
        self.counts = {"applied": 0, "snapshots": 0, "duplicates": 0, "gaps": 0, "corrupt": 0,
                       "mismatched": 0, "server_errors": 0}
        self.apply_ms: list[float] = []
        self._wake = threading.Event()
        self._stop = threading.Event()

    # -- serving ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.serving is not None

    def infer(self, inputs: torch.Tensor) -> tuple[torch.Tensor, Serving]:
        """Class probabilities for a batch, and the state that answered."""
        with self._using() as (copy, serving), torch.inference_mode():
            return torch.softmax(copy.net(inputs.float()), dim=1), serving

    @contextmanager
    def _using(self) -> Iterator[tuple[_Copy, Serving]]:
        """The serving copy, counted as in use until the block ends (it is not written then)."""
        with self._state_lock:
            if self.serving is None:
                raise RuntimeError("the replica holds no model yet")
            copy, serving = self._copies[self._active], self.serving
            with copy.idle:
                copy.users += 1
        try:
            yield copy, serving
        finally:
            with copy.idle:
                copy.users -= 1
                copy.idle.notify_all()

    def status(self) -> dict[str, Any]:
        serving = self.serving
        return {"service": self.service, "sequence": serving.sequence if serving else 0,
                "version": serving.version if serving else None,
                "sha256": serving.sha256 if serving else None, **self.counts,
                "apply_ms_last": self.apply_ms[-1] if self.apply_ms else None}

    # -- following the server --------------------------------------------------------------
    def run(self) -> None:
        """Follow the server until :meth:`stop` (a thread of the agent's process)."""
        if self.redis_url:
            threading.Thread(target=self._listen, daemon=True, name="replica-notices").start()
        while not self._stop.is_set():
            try:
                self.sync()
            except SyncFailed as exc:
                self.counts["server_errors"] += 1
                log.warning("replica %s: %s", self.service, exc)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _listen(self) -> None:
        import redis

        from cl_server.patches import channel

        while not self._stop.is_set():
            try:
                pubsub = redis.Redis.from_url(self.redis_url).pubsub()
                pubsub.subscribe(channel(self.service))
                for message in pubsub.listen():
                    if self._stop.is_set():
                        return
                    if message.get("type") == "message":
                        self._wake.set()
            except redis.RedisError as exc:  # polling goes on meanwhile
                log.warning("replica %s: notices unavailable (%s); polling", self.service, exc)
                self._stop.wait(self.poll_s)

    def sync(self) -> int:
        """Apply every publication after the one held; returns how many were applied."""
        with self._lock:
            if self.serving is None:
                self._load_snapshot()
            applied = 0
            gaps = 0
            while True:
                listing = self._get_json(f"/patches?since={self.serving.sequence}")  # type: ignore[union-attr]
                entries = sorted({e["sequence"]: e for e in listing["patches"]}.values(),
                                 key=lambda e: e["sequence"])
                self.counts["duplicates"] += len(listing["patches"]) - len(entries)
                progressed = False
                for entry in entries:
                    current = self.serving.sequence  # type: ignore[union-attr]
                    if entry["sequence"] <= current:
                        self.counts["duplicates"] += 1
                        continue
                    if entry["sequence"] != current + 1:
                        self.counts["gaps"] += 1
                        break
                    self._apply_publication(entry)
                    applied += 1
                    progressed = True
                latest = listing.get("latest")
                if latest is None or latest["sequence"] <= self.serving.sequence:  # type: ignore[union-attr]
                    return applied
                gaps = 0 if progressed else gaps + 1  # tries in a row that brought nothing
                if gaps >= ATTEMPTS:  # the missing ones do not come: start from the snapshot
                    self._load_snapshot()
                    gaps = 0

    def _apply_publication(self, entry: dict[str, Any]) -> None:
        for _ in range(ATTEMPTS):
            try:
                blob = self._get_bytes(f"/patches/{entry['sequence']}")
                patch = decode(blob)
                if patch.sequence != entry["sequence"] or patch.target_sha256 != entry["sha256"]:
                    raise PatchError(f"the server sent another patch than publication "
                                     f"{entry['sequence']}")
                self._swap_in(patch)
                self.counts["applied"] += 1
                return
            except PatchError as exc:
                self.counts["corrupt" if "corrupt" in str(exc) else "mismatched"] += 1
                log.warning("replica %s: publication %d refused: %s", self.service,
                            entry["sequence"], exc)
        self._load_snapshot()

    def _swap_in(self, patch: Patch) -> None:
        """Apply ``patch`` to the standby copy, check it, switch requests to it, then bring the
        other copy up to date."""
        serving = self.serving
        assert serving is not None
        if patch.base_sha256 != serving.sha256:
            raise PatchError(f"patch {patch.sequence} is for another state than the one held")
        start = time.perf_counter()
        if patch.rebuilds:  # new or reshaped tensors (new classes), fresh weights: rebuild both
            state = apply(self._copies[self._active].weights, patch, check=False)
            digest = StateDigest(state)
            if digest.hexdigest() != patch.target_sha256:
                raise PatchError(f"patch {patch.sequence}: the result's checksum differs "
                                 f"from the server's")
            self._install(state, patch, digest)
        else:
            active, standby = self._copies[self._active], self._copies[1 - self._active]
            self._wait_idle(standby)
            apply(standby.weights, patch, check=False, inplace=True)
            standby.digest.update(standby.weights, patch)
            if standby.digest.hexdigest() != patch.target_sha256:
                self._copy_into(standby, active)  # undo: the standby equals the active again
                raise PatchError(f"patch {patch.sequence}: the result's checksum differs "
                                 f"from the server's")
            self._switch(1 - self._active, patch)
            self._wait_idle(active)
            apply(active.weights, patch, check=False, inplace=True)
            active.digest = standby.digest.copy()
        self.apply_ms.append((time.perf_counter() - start) * 1000)

    def _load_snapshot(self) -> None:
        for _ in range(ATTEMPTS):
            try:
                patch = decode(self._get_bytes("/snapshot"))
                state = apply({}, patch, check=False)
                digest = StateDigest(state)
                if digest.hexdigest() != patch.target_sha256:
                    raise PatchError("snapshot: its state's checksum differs from the server's")
                self._install(state, patch, digest)
                self.counts["snapshots"] += 1
                return
            except PatchError as exc:
                self.counts["corrupt"] += 1
                log.warning("replica %s: snapshot refused: %s", self.service, exc)
        raise SyncFailed("no valid snapshot after three tries")

    def _install(self, state: State, patch: Patch, digest: StateDigest) -> None:
        from model_factory.templates.networks import build_network

        meta = patch.meta
        copies = []
        for _ in range(2):
            net = build_network(meta["template"], meta["input_shape"], len(meta["classes"]),
                                **meta.get("params", {}))
            net.load_state_dict(state)
            net.eval()
            copies.append(_Copy(net, net.state_dict(keep_vars=False), digest.copy()))
        standby = 1 - self._active if self._copies else 0
        if self._copies:
            self._wait_idle(self._copies[standby])
            self._copies[standby] = copies[0]
            self._switch(standby, patch)
            self._wait_idle(self._copies[1 - standby])
            self._copies[1 - standby] = copies[1]
        else:
            self._copies = copies
            self._switch(0, patch)

    def _switch(self, index: int, patch: Patch) -> None:
        serving = Serving(patch.sequence, patch.target_version, patch.target_sha256,
                          list(patch.meta.get("classes", [])), dict(patch.meta))
        with self._state_lock:
            self._active = index
            self.serving = serving
        if self.swap_log is not None:
            with open(self.swap_log, "a") as handle:
                handle.write(json.dumps({"sequence": serving.sequence, "version": serving.version,
                                         "sha256": serving.sha256}) + "\n")
        if self.on_swap is not None:
            self.on_swap(serving)

    @staticmethod
    def _wait_idle(copy: _Copy) -> None:
        with copy.idle:
            copy.idle.wait_for(lambda: copy.users == 0)

    @staticmethod
    def _copy_into(copy: _Copy, source: _Copy) -> None:
        for name, tensor in copy.weights.items():
            tensor.copy_(source.weights[name])
        copy.digest = source.digest.copy()

    # -- HTTP --------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.server}/api/services/{self.service}{path}"

    def _get(self, path: str) -> requests.Response:
        try:
            answer = self._session.get(self._url(path), timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SyncFailed(f"server unreachable: {exc}") from None
        if answer.status_code != 200:
            raise SyncFailed(f"GET {path}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer

    def _get_json(self, path: str) -> dict[str, Any]:
        try:
            return self._get(path).json()
        except ValueError as exc:
            raise SyncFailed(f"GET {path}: not JSON ({exc})") from None

    def _get_bytes(self, path: str) -> bytes:
        return self._get(path).content
