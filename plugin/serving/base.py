"""The one interface every serving engine is driven through: :class:`ServingAdapter`.

An adapter owns one model inside one engine. It writes model versions where the engine reads
them, loads a version *beside* the champion, checks it is ready and warms it up, and only then
moves traffic to it (the routing table the proxy reads), unloading the old champion last, so a
switch never fails a request. Rollback is the same move towards an older version still on disk.

Version directories are written to a temporary sibling and renamed into place, so an engine
scanning its repository never sees a half-written version.

Implementations: :class:`plugin.serving.triton.TritonAdapter` (real tritonserver, KServe V2)
and :class:`plugin.serving.tfserving.TFServingAdapter` (TF-Serving REST, version labels).
``tests/test_serving_contract.py`` runs both through the same checks.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cl_server.config.schema import ModelConfig
from plugin.serving.routing import RoutingTable

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
MAX_VERSION = 2**63 - 1


class ServingError(RuntimeError):
    """An engine call failed; the message names the engine, the model and the step."""


def check_model_name(name: str) -> str:
    """``name`` if it is a safe model name (letters, digits, ``_ . -``; no path separators).

    Examples:
        >>> check_model_name("mnist-v2")
        'mnist-v2'
        >>> check_model_name("../etc")
        Traceback (most recent call last):
        ...
        ValueError: invalid model name '../etc': use 1-63 letters, digits, '_', '.' or '-', not starting with '.' or '-'
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in {".", ".."}:
        raise ValueError(f"invalid model name {name!r}: use 1-63 letters, digits, '_', '.' or "
                         f"'-', not starting with '.' or '-'")
    return name


def check_version(version: object) -> int:
    """``version`` as an int if it is a valid engine version number (1 to 2**63 - 1).

    Examples:
        >>> check_version(3)
        3
        >>> check_version("3/../../x")
        Traceback (most recent call last):
        ...
        ValueError: invalid version '3/../../x': a whole number from 1 to 9223372036854775807
    """
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= \
            MAX_VERSION:
        raise ValueError(f"invalid version {version!r}: a whole number from 1 to {MAX_VERSION}")
    return version


def write_version_dir(parent: Path, version: int, fill: Callable[[Path], None]) -> Path:
    """Create ``parent/<version>`` atomically: ``fill`` writes into a temporary sibling directory
    that is renamed into place only when complete. An existing version directory is an error
    (versions are immutable once written)."""
    check_version(version)
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / str(version)
    if target.exists():
        raise ServingError(f"version {version} already exists in {parent}; versions are "
                           f"immutable, deploy a new number")
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.staging-", dir=parent))
    try:
        fill(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def discard_version_dir(parent: Path, version: int) -> None:
    """Remove ``parent/<version>``: renamed away first (one atomic step for a scanning engine),
    then deleted."""
    target = parent / str(check_version(version))
    if target.exists():
        doomed = Path(tempfile.mkdtemp(prefix=f".{version}.discarded-", dir=parent))
        target.rename(doomed / "v")
        shutil.rmtree(doomed, ignore_errors=True)


@dataclass(frozen=True)
class EngineHealth:
    """``live``: the engine answers; ``ready``: the champion can serve; ``detail``: why not."""

    live: bool
    ready: bool
    detail: str = ""


@dataclass(frozen=True)
class DeployResult:
    """What a deploy or rollback did, with its phases in seconds."""

    version: int
    previous: int | None
    write_s: float
    load_s: float
    warmup_s: float
    total_s: float


@dataclass(frozen=True)
class VersionInfo:
    """A version on disk: whether the engine has it loaded and whether it is the champion."""

    version: int
    loaded: bool
    champion: bool


class ServingAdapter(ABC):
    """Deploy, roll back and inspect the versions of one model in one serving engine.

    Parameters (common to implementations):
        model: the served model's config (input tensor spec, output name, classes).
        model_name: the model's name inside the engine.
        routing: the routing table the proxy reads (champion, canary, shadow).
        warmup_requests: inference calls made on a new version before it takes traffic.
        timeout_s: seconds one engine call may take; loading waits ``load_timeout_s``.
    """

    kind: ClassVar[str]

    def __init__(self, model: ModelConfig, model_name: str, routing: RoutingTable, *,
                 warmup_requests: int = 3, timeout_s: float = 10.0,
                 load_timeout_s: float = 120.0):
        self.model = model
        self.model_name = check_model_name(model_name)
        self.routing = routing
        self.warmup_requests = warmup_requests
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s

    # -- engine primitives each implementation provides -------------------------------------

    @abstractmethod
    def _write(self, version: int, artifact: Path) -> None:
        """Put the artifact where the engine reads ``version`` (atomically, see
        :func:`write_version_dir`)."""

    @abstractmethod
    def _discard(self, version: int) -> None:
        """Remove a version that failed to come up (it never served), so the number can be
        deployed again."""

    @abstractmethod
    def _on_disk(self) -> list[int]:
        """Versions written so far, ascending."""

    @abstractmethod
    def _load(self, versions: Sequence[int]) -> None:
        """Make the engine hold exactly ``versions`` loaded; return once each is ready.
        Raises :class:`ServingError` if one does not become ready."""

    @abstractmethod
    def loaded(self) -> list[int]:
        """Versions the engine has loaded and ready, ascending."""

    @abstractmethod
    def health(self) -> EngineHealth:
        """Liveness of the engine and readiness of the champion."""

    @abstractmethod
    def infer(self, inputs: np.ndarray, version: int | None = None) -> np.ndarray:
        """Run a batch ``inputs`` (shape ``(n, *input.shape)``) through the engine's own
        protocol on ``version`` (the champion if None); returns the outputs ``(n, classes)``."""

    # -- the deployment protocol, shared by every engine ------------------------------------

    def current(self) -> int | None:
        """The champion version (the one the proxy sends traffic to), or None before the first
        deploy."""
        return self.routing.read().champion

    def versions(self) -> list[VersionInfo]:
        loaded, champion = set(self.loaded()), self.current()
        return [VersionInfo(v, v in loaded, v == champion) for v in self._on_disk()]

    def deploy(self, version: int, artifact: str | Path, *, promote: bool = True
               ) -> DeployResult:
        """Write ``artifact`` as ``version``, load it beside the champion, warm it up and (when
        ``promote``) make it the champion. With ``promote=False`` the version stays loaded as a
        challenger for :meth:`start_canary` / :meth:`start_shadow`. On any failure the champion
        keeps serving and the new version is unloaded."""
        check_version(version)
        artifact = Path(artifact)
        if not artifact.is_file():
            raise ServingError(f"artifact {artifact} does not exist or is not a file")
        start = time.perf_counter()
        self._write(version, artifact)
        written = time.perf_counter()
        try:
            return self._bring_up(version, start, written, promote)
        except ServingError:
            self._discard(version)
            raise

    def stage(self, version: int) -> DeployResult:
        """Load a version already on disk beside the champion and warm it up, without giving
        it traffic (a challenger for :meth:`start_canary` / :meth:`start_shadow`)."""
        self._require_on_disk(version, "stage")
        start = time.perf_counter()
        return self._bring_up(version, start, start, promote=False)

    def rollback(self, to: int) -> DeployResult:
        """Make ``to`` (a version still on disk) the champion again, with the same
        load-warm-switch-unload sequence as a deploy."""
        self._require_on_disk(to, "roll back to")
        start = time.perf_counter()
        return self._bring_up(to, start, start, promote=True)

    def promote(self, version: int) -> None:
        """Make an already loaded challenger the champion; unload everything else."""
        if version not in self.loaded():
            raise ServingError(f"version {version} of {self.model_name} is not loaded; deploy "
                               f"it first")
        self.routing.update(champion=version, canary=None, canary_share=0.0, shadow=None)
        self._load([version])

    def start_canary(self, version: int, share: float) -> None:
        """Send ``share`` (0 < share < 1) of the traffic to a loaded challenger."""
        if not 0 < share < 1:
            raise ValueError(f"canary share must be between 0 and 1 (got {share})")
        self._require_challenger(version)
        self.routing.update(canary=version, canary_share=share)

    def start_shadow(self, version: int) -> None:
        """Mirror every request to a loaded challenger; its answers are recorded, not
        returned."""
        self._require_challenger(version)
        self.routing.update(shadow=version)

    def stop_shadow(self) -> None:
        """Stop mirroring; the challenger stays loaded (for a canary or a promotion)."""
        self.routing.update(shadow=None)

    def stop_challenger(self) -> None:
        """End a canary or shadow: all traffic back to the champion; the challenger unloads."""
        self.routing.update(canary=None, canary_share=0.0, shadow=None)
        champion = self.current()
        self._load([champion] if champion is not None else [])

    def restore(self) -> None:
        """After an engine restart: load the versions the routing table names."""
        table = self.routing.read()
        wanted = sorted({v for v in (table.champion, table.canary, table.shadow) if v})
        if wanted:
            self._load(wanted)

    # -- internals ------------------------------------------------------------------------

    def _require_on_disk(self, version: int, step: str) -> None:
        check_version(version)
        if version not in self._on_disk():
            raise ServingError(f"cannot {step} version {version} of {self.model_name}: not in "
                               f"the repository (have {self._on_disk()})")

    def _require_challenger(self, version: int) -> None:
        if version == self.current():
            raise ServingError(f"version {version} is the champion, not a challenger")
        if version not in self.loaded():
            raise ServingError(f"version {version} of {self.model_name} is not loaded; deploy "
                               f"it with promote=False first")

    def _bring_up(self, version: int, start: float, written: float, promote: bool
                  ) -> DeployResult:
        table = self.routing.read()
        keep = {v for v in (table.champion, table.canary, table.shadow) if v}
        try:
            self._load(sorted(keep | {version}))
        except ServingError:
            self._load_quietly(sorted(keep))
            raise
        loaded_at = time.perf_counter()
        try:
            self.warm_up(version)
        except ServingError:
            self._load_quietly(sorted(keep))
            raise
        warmed = time.perf_counter()
        if promote:
            self.routing.update(champion=version, canary=None, canary_share=0.0, shadow=None)
            self._load_quietly([version])
        return DeployResult(version, table.champion, written - start, loaded_at - written,
                            warmed - loaded_at, time.perf_counter() - start)

    def _load_quietly(self, versions: list[int]) -> None:
        """Best effort (used on the way out of a failure): the champion must stay routed even
        when the engine refuses to unload something."""
        try:
            self._load(versions)
        except ServingError:
            pass

    def warm_up(self, version: int) -> None:
        """Send ``warmup_requests`` batches of zeros to ``version``; each must answer with one
        row per input row."""
        shape = [1 if axis == -1 else axis for axis in self.model.input.shape]
        batch = np.zeros((2, *shape), dtype=np.dtype(self.model.input.dtype))
        for _ in range(self.warmup_requests):
            out = self.infer(batch, version)
            if out.shape[0] != batch.shape[0]:
                raise ServingError(f"warm-up of {self.model_name} version {version}: "
                                   f"{out.shape[0]} output rows for {batch.shape[0]} inputs")
