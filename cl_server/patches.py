"""The patches a service publishes for its replicas: one per new replica version, each from the
version before, plus a snapshot of the newest state for replicas that start or fall behind.

Full versions go to Triton / TF-Serving through the serving adapters; patches are for replicas
(``modelci-e replica``), which may sit behind thin links. On disk, under
``{data_dir}/services/{service}/patches/``:

- ``p{S:08d}.mcip``: publication ``S`` (1, 2, ...): the patch from the state of publication
  ``S - 1`` to the model version published (a rollback publishes an older version as a new
  publication, so replicas order by ``S``);
- ``snapshot-p{S:08d}.mcip``: the state replicas hold after publication ``S`` (the newest
  :data:`KEEP_SNAPSHOTS` are kept);
- ``index.json``: one entry per publication, in order (replaced atomically).

Each publication is announced on the Redis channel ``modelci:{service}:patches`` (a JSON
notice with the versions and checksum), so replicas that can reach Redis fetch it at once;
the others poll ``GET /api/services/{name}/patches?since=S``. Publications of one service are
serialised by an ``flock``.

Example:
    >>> import tempfile, torch
    >>> log = PatchLog(Path(tempfile.mkdtemp()), "digits")
    >>> first = log.publish(1, {"w": torch.zeros(100)}, meta={"classes": ["a", "b"]})
    >>> state = {"w": torch.zeros(100)}; state["w"][7] = 1.0
    >>> entry = log.publish(2, state)
    >>> rollback = log.publish(1, {"w": torch.zeros(100)})
    >>> [(e.sequence, e.base_version, e.version, e.changed) for e in log.since(0)]
    [(1, 0, 1, 100), (2, 1, 2, 1), (3, 2, 1, 1)]
    >>> from plugin.replica.patch import state_sha256
    >>> decode(log.patch_bytes(2)).target_sha256 == state_sha256(state)
    True
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from plugin.replica.patch import (
    State,
    Values,
    apply,
    decode,
    diff,
    encode,
    paper_bits,
    snapshot,
)

KEEP_SNAPSHOTS = 3


def channel(service: str) -> str:
    """The Redis pub/sub channel of a service's patch notices."""
    return f"modelci:{service}:patches"


class PatchEntry(BaseModel):
    """One publication."""

    sequence: int = Field(description="1, 2, ...: the order replicas apply patches in.")
    base_version: int = Field(description="Model version of the state the patch applies to "
                              "(0: a snapshot, the first publication).")
    version: int = Field(description="Model version the patch makes.")
    sha256: str = Field(description="Checksum of the state the patch produces.")
    bytes: int = Field(description="Encoded size.")
    changed: int = Field(description="Weights the patch writes.")
    paper_bits: float = Field(description="Size as the DPU paper counts it: value bits per "
                              "changed weight plus log2 C(I, kI) bits of positions.")
    values: str
    created_at: float = Field(description="Unix time, seconds.")


class PatchLog:
    """A service's published patches (see the module doc)."""

    def __init__(self, data_dir: Path, service: str):
        self.service = service
        self.root = Path(data_dir) / "services" / service / "patches"

    # -- reading ---------------------------------------------------------------------------
    def entries(self) -> list[PatchEntry]:
        try:
            raw = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return []
        return [PatchEntry.model_validate(item) for item in raw]

    def since(self, sequence: int) -> list[PatchEntry]:
        """The publications after ``sequence``, in order (all of them for 0)."""
        return [e for e in self.entries() if e.sequence > sequence]

    def latest(self) -> PatchEntry | None:
        entries = self.entries()
        return entries[-1] if entries else None

    def patch_bytes(self, sequence: int) -> bytes:
        """The encoded patch of publication ``sequence``; ``FileNotFoundError`` if none."""
        return (self.root / f"p{sequence:08d}.mcip").read_bytes()

    def snapshot_bytes(self, sequence: int | None = None) -> bytes:
        """The encoded snapshot after publication ``sequence`` (default: the newest);
        ``FileNotFoundError`` if there was none or it is no longer kept."""
        if sequence is None:
            latest = self.latest()
            if latest is None:
                raise FileNotFoundError(f"service '{self.service}' has published no version")
            sequence = latest.sequence
        return (self.root / f"snapshot-p{sequence:08d}.mcip").read_bytes()

    # -- publishing ------------------------------------------------------------------------
    def publish(self, version: int, state: State, *, meta: dict[str, Any] | None = None,
                values: Values = "fp32", notify: Any = None) -> PatchEntry:
        """Publish model ``version`` with weights ``state``: the patch from the newest published
        state (a snapshot for the first), the new snapshot, the index entry, then the notice
        on ``notify`` (a Redis client) if given."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            entries = self.entries()
            latest = entries[-1] if entries else None
            sequence = 1 if latest is None else latest.sequence + 1
            if latest is None:
                patch = snapshot(state, version, meta)
                result = state
            else:
                previous = decode(self.snapshot_bytes(latest.sequence))
                base = apply({}, previous, check=False)
                patch = diff(base, state, base_version=latest.version, target_version=version,
                             meta=meta or previous.meta, values=values)
                result = apply(base, patch, check=False) if values != "fp32" else state
            patch.sequence = sequence
            blob = encode(patch)
            self._write(f"p{sequence:08d}.mcip", blob)
            last = snapshot(result, version, patch.meta)
            last.sequence = sequence
            self._write(f"snapshot-p{sequence:08d}.mcip", encode(last))
            entry = PatchEntry(sequence=sequence, base_version=patch.base_version,
                               version=version, sha256=patch.target_sha256, bytes=len(blob),
                               changed=patch.changed_weights(),
                               paper_bits=paper_bits(patch),
                               values=values, created_at=time.time())
            self._write("index.json", json.dumps(
                [e.model_dump() for e in [*entries, entry]]).encode())
            self._prune()
        if notify is not None:
            notify.publish(channel(self.service), json.dumps(
                {"service": self.service, "sequence": sequence, "version": version,
                 "sha256": entry.sha256}))
        return entry

    def _write(self, name: str, data: bytes) -> None:
        temporary = self.root / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.root / name)

    def _prune(self) -> None:
        snapshots = sorted(self.root.glob("snapshot-p*.mcip"))
        for old in snapshots[:-KEEP_SNAPSHOTS]:
            old.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
