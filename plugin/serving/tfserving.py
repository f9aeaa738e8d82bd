"""TensorFlow Serving adapter: version directories, a polled model config file with version
labels, and TF-Serving's REST API.

What the adapter writes::

    <base_path>/3/            one directory per version, filled by ``exporter`` (atomically)
    <model_config_file>       the ModelServerConfig TF-Serving re-reads every
                              --model_config_file_poll_wait_seconds

TF-Serving serves the versions the config file's ``model_version_policy`` names and resolves the
labels ``stable`` (the champion) and ``canary`` (the canary, while one runs) for clients that
address ``/v1/models/{m}/labels/{label}:predict``. It refuses a whole config in which a label
points at a version that is not AVAILABLE, so :meth:`TFServingAdapter._load` loads first and
labels second:

1. write the config with ``specific { versions ... }`` set to exactly the wanted versions,
   keeping only the labels whose versions are AVAILABLE already;
2. poll ``GET /v1/models/{m}`` until exactly those versions are AVAILABLE (a version that ends
   with an error fails the load at once);
3. write the config again with every label: ``stable`` is the routing champion, or the highest
   wanted version when the champion is not among them; ``canary`` the routing canary when it
   is among them;
4. poll ``GET /v1/models/{m}/labels/{label}`` until TF-Serving resolves each label as written.

Reloading by polling needs nothing but a file; the gRPC ``HandleReloadConfigRequest`` would
apply a config at once, but its client (``tensorflow-serving-api``) requires full TensorFlow.
The adapter owns ``model_config_file``: every write replaces the whole file with this one
model, so give each adapter its own TF-Serving config file.

A version directory holds what ``exporter(artifact, directory)`` writes. With a real TF-Serving
that is a SavedModel (``saved_model.pb`` + ``variables/``); the default, :func:`copy_artifact`,
writes ``model.pt`` for the protocol fake the tests run against
(:mod:`plugin.serving.tfserving_fake`). See ``docs/tfserving.md``.

Example (not run as a doctest: it needs a running TF-Serving)::

    adapter = TFServingAdapter(config.model, "mnist", RoutingTable(path),
                               url="http://127.0.0.1:8501", base_path=Path("/models/mnist"),
                               model_config_file=Path("/models/models.config"),
                               exporter=write_saved_model)
    adapter.deploy(1, "model.pt")      # write, load, label stable=1, warm up, route
    adapter.deploy(2, "model-2.pt")    # v2 loads beside v1, stable moves to 2, v1 unloads
    adapter.rollback(1)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from cl_server.config.schema import ModelConfig
from plugin.serving.base import (
    EngineHealth,
    ServingAdapter,
    ServingError,
    check_version,
    discard_version_dir,
    write_version_dir,
)
from plugin.serving.routing import RoutingTable

STABLE, CANARY = "stable", "canary"
AVAILABLE = "AVAILABLE"
POLL_INTERVAL_S = 0.05
"""Seconds between status requests while waiting for versions or labels."""

_VERSION_DIR = re.compile(r"[0-9]+")

Exporter = Callable[[Path, Path], None]
"""``exporter(artifact, version_dir)`` writes the version TF-Serving loads into ``version_dir``."""


def copy_artifact(artifact: Path, version_dir: Path) -> None:
    """The default exporter: the artifact as ``<version_dir>/model.pt``, the file the protocol
    fake loads. A real TF-Serving needs an exporter that writes a SavedModel."""
    shutil.copyfile(artifact, version_dir / "model.pt")


def _quote(text: str) -> str:
    """A text-format string literal: printable ASCII as is, every other byte escaped."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def render_model_config(model_name: str, base_path: Path, versions: Sequence[int],
                        labels: Mapping[str, int]) -> str:
    """The text-format ModelServerConfig serving exactly ``versions`` of one model, with
    ``labels`` (label -> version).

    Example:
        >>> print(render_model_config("m", Path("/srv/m"), [1, 2], {"stable": 1}), end="")
        # Written by modelci-e's TFServingAdapter; replaced on every load.
        model_config_list {
          config {
            name: "m"
            base_path: "/srv/m"
            model_platform: "tensorflow"
            model_version_policy {
              specific {
                versions: 1
                versions: 2
              }
            }
            version_labels {
              key: "stable"
              value: 1
            }
          }
        }
    """
    lines = ["# Written by modelci-e's TFServingAdapter; replaced on every load.",
             "model_config_list {", "  config {", f"    name: {_quote(model_name)}",
             f"    base_path: {_quote(str(base_path))}", '    model_platform: "tensorflow"',
             "    model_version_policy {", "      specific {"]
    lines += [f"        versions: {check_version(v)}" for v in versions]
    lines += ["      }", "    }"]
    for label, version in labels.items():
        lines += ["    version_labels {", f"      key: {_quote(label)}",
                  f"      value: {check_version(version)}", "    }"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VersionStatus:
    """One entry of TF-Serving's ``model_version_status``."""

    state: str
    error_code: str = "OK"
    error_message: str = ""

    @property
    def failed(self) -> bool:
        """The version ended with an error (a failed load)."""
        return self.state == "END" and self.error_code != "OK"

    def __str__(self) -> str:
        if self.error_code == "OK":
            return self.state
        return f"{self.state} ({self.error_code}: {self.error_message})"


class TFServingAdapter(ServingAdapter):
    """See the module doc.

    Parameters (besides :class:`~plugin.serving.base.ServingAdapter`'s):
        url: TF-Serving's REST endpoint (``http://host:8501``).
        base_path: the model's base path as TF-Serving sees it (made absolute).
        model_config_file: the file TF-Serving was started with (``--model_config_file``).
        exporter: writes a version directory from an artifact (default :func:`copy_artifact`).
        poll_s: TF-Serving's ``--model_config_file_poll_wait_seconds``, seconds; a failed load
            reported before two polls may be a stale status from an earlier load.
    """

    kind = "tfserving"

    def __init__(self, model: ModelConfig, model_name: str, routing: RoutingTable, *, url: str,
                 base_path: Path, model_config_file: Path, exporter: Exporter | None = None,
                 poll_s: float = 0.2, **kwargs: Any):
        super().__init__(model, model_name, routing, **kwargs)
        self.url = url.rstrip("/")
        self.base_path = Path(base_path).resolve()
        self.model_config_file = Path(model_config_file)
        self.exporter = exporter or copy_artifact
        self.poll_s = poll_s
        self._session = requests.Session()

    # -- engine primitives -----------------------------------------------------------------

    def _write(self, version: int, artifact: Path) -> None:
        write_version_dir(self.base_path, version,
                          lambda directory: self.exporter(artifact, directory))

    def _discard(self, version: int) -> None:
        """Remove the failed version and wait (a few polls at most) until TF-Serving has seen it
        gone: it does not retry a version that failed while it stays aspired, so a redeploy of
        the same number within one poll period would find the old failure."""
        discard_version_dir(self.base_path, version)
        deadline = time.monotonic() + 5 * self.poll_s + 1.0
        while time.monotonic() < deadline:
            try:
                status = self._statuses().get(version)
            except ServingError:
                return
            if status is None or not status.failed:
                return
            time.sleep(POLL_INTERVAL_S)

    def _on_disk(self) -> list[int]:
        if not self.base_path.is_dir():
            return []
        return sorted(int(p.name) for p in self.base_path.iterdir()
                      if p.is_dir() and _VERSION_DIR.fullmatch(p.name))

    def _load(self, versions: Sequence[int]) -> None:
        wanted = sorted({check_version(v) for v in versions})
        before = self._statuses()
        labels = self._labels_for(wanted)
        ready = {label: v for label, v in labels.items()
                 if v in before and before[v].state == AVAILABLE}
        written_at = time.monotonic()
        deadline = written_at + self.load_timeout_s
        self._write_config(wanted, ready)
        self._await_versions(wanted, before, written_at, deadline)
        if labels != ready:
            self._write_config(wanted, labels)
        self._await_labels(labels, deadline)

    def loaded(self) -> list[int]:
        return sorted(v for v, s in self._statuses().items() if s.state == AVAILABLE)

    def health(self) -> EngineHealth:
        step = f"read the status of {self.model_name}"
        try:
            response = self._request("GET", "", step)
        except ServingError as exc:
            return EngineHealth(False, False, str(exc))
        try:
            statuses = self._parse_statuses(response, step)
        except ServingError as exc:
            return EngineHealth(True, False, str(exc))
        champion = self.current()
        if champion is None:
            return EngineHealth(True, False, "no version deployed yet")
        status = statuses.get(champion)
        if status is None or status.state != AVAILABLE:
            return EngineHealth(True, False, f"champion version {champion} of {self.model_name} "
                                f"is {status or 'not loaded'}")
        return EngineHealth(True, True)

    def infer(self, inputs: np.ndarray, version: int | None = None) -> np.ndarray:
        version = version if version is not None else self.current()
        if version is None:
            raise ServingError(f"{self.model_name}: no version deployed, nothing to predict with")
        check_version(version)
        data = inputs.astype(str) if self.model.input.dtype == "bytes" else inputs
        step = f"predict with {self.model_name} version {version}"
        response = self._request("POST", f"/versions/{version}:predict", step,
                                 json={"instances": data.tolist()})
        if response.status_code != 200:
            raise ServingError(f"TF-Serving at {self.url} refused to {step} (HTTP "
                               f"{response.status_code}): {_error_text(response)}")
        predictions = _json(response, step).get("predictions")
        if predictions is None:
            raise ServingError(f"TF-Serving at {self.url}: {step} answered without "
                               f"'predictions': {response.text[:200]}")
        return np.asarray(predictions, dtype=np.float32)

    # -- labels and the config file -------------------------------------------------------

    def _labels_for(self, versions: Sequence[int]) -> dict[str, int]:
        """The labels a config serving ``versions`` carries: ``stable`` -> the champion (the
        highest version when the champion is not among them), ``canary`` -> the canary."""
        if not versions:
            return {}
        routes = self.routing.read()
        labels = {STABLE: routes.champion if routes.champion in versions else max(versions)}
        if routes.canary in versions:
            labels[CANARY] = routes.canary
        return labels

    def start_canary(self, version: int, share: float) -> None:
        """As the base class, and point the ``canary`` label at ``version``."""
        super().start_canary(version, share)
        routes = self.routing.read()
        self._load([v for v in (routes.champion, routes.canary, routes.shadow) if v])

    def _write_config(self, versions: Sequence[int], labels: Mapping[str, int]) -> None:
        """Replace the config file atomically (TF-Serving never reads half a file)."""
        text = render_model_config(self.model_name, self.base_path, versions, labels)
        self.model_config_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.model_config_file.name}.",
                                   dir=self.model_config_file.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.model_config_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- waiting for the engine -----------------------------------------------------------

    def _await_versions(self, wanted: list[int], before: dict[int, VersionStatus],
                        written_at: float, deadline: float) -> None:
        """Return once exactly ``wanted`` are AVAILABLE; raise on a failed load or at
        ``deadline`` (``time.monotonic()``).

        A failed status already reported before the config was written counts only after two
        polls of the config file (TF-Serving may not have re-read it yet)."""
        settled_at = written_at + 2 * self.poll_s
        while True:
            statuses = self._statuses()
            if sorted(v for v, s in statuses.items() if s.state == AVAILABLE) == wanted:
                return
            now = time.monotonic()
            for version in wanted:
                status = statuses.get(version)
                if status is not None and status.failed and (
                        now > settled_at or status != before.get(version)):
                    raise ServingError(f"TF-Serving at {self.url} failed to load "
                                       f"{self.model_name} version {version}: {status}")
            if now > deadline:
                shown = sorted(set(wanted) | {v for v, s in statuses.items()
                                              if s.state == AVAILABLE})
                states = ", ".join(f"{v}: {statuses.get(v) or 'not reported'}" for v in shown)
                raise ServingError(
                    f"TF-Serving at {self.url}: {self.model_name} did not serve exactly versions "
                    f"{wanted} within {self.load_timeout_s:g} s (it reports {states}; a version "
                    f"not reported has no directory under {self.base_path}, or TF-Serving did "
                    f"not re-read {self.model_config_file})")
            time.sleep(POLL_INTERVAL_S)

    def _await_labels(self, labels: Mapping[str, int], deadline: float) -> None:
        """Return once TF-Serving resolves ``stable`` and ``canary`` as in ``labels`` (an
        absent label must be unknown to it); raise at ``deadline`` (``time.monotonic()``)."""
        while True:
            seen = {label: self._label_target(label) for label in (STABLE, CANARY)}
            if all(seen[label] == labels.get(label) for label in seen):
                return
            if time.monotonic() > deadline:
                raise ServingError(
                    f"TF-Serving at {self.url} did not apply the labels of {self.model_name} "
                    f"within {self.load_timeout_s:g} s: wanted {dict(labels) or 'none'}, it "
                    f"resolves {seen}; its log says why (a label may only point at an "
                    f"AVAILABLE version)")
            time.sleep(POLL_INTERVAL_S)

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, suffix: str, step: str, **kwargs: Any
                 ) -> requests.Response:
        """``method`` on ``/v1/models/{model}{suffix}``; a transport failure is a
        :class:`ServingError` naming ``step``."""
        url = f"{self.url}/v1/models/{self.model_name}{suffix}"
        try:
            return self._session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.ConnectionError as exc:
            raise ServingError(f"TF-Serving at {self.url} is unreachable ({step}): {exc}"
                               ) from exc
        except requests.Timeout as exc:
            raise ServingError(f"TF-Serving at {self.url} did not answer {method} {url} "
                               f"within {self.timeout_s:g} s ({step})") from exc
        except requests.RequestException as exc:
            raise ServingError(f"TF-Serving at {self.url}: {method} {url} failed ({step}): "
                               f"{exc}") from exc

    def _statuses(self) -> dict[int, VersionStatus]:
        """``model_version_status`` by version; empty when TF-Serving knows no version."""
        step = f"read the status of {self.model_name}"
        return self._parse_statuses(self._request("GET", "", step), step)

    def _parse_statuses(self, response: requests.Response, step: str
                        ) -> dict[int, VersionStatus]:
        if response.status_code == 404:
            return {}
        if response.status_code != 200:
            raise ServingError(f"TF-Serving at {self.url} refused to {step} (HTTP "
                               f"{response.status_code}): {_error_text(response)}")
        return {int(entry["version"]): VersionStatus(
                    entry["state"], entry.get("status", {}).get("error_code", "OK"),
                    entry.get("status", {}).get("error_message", ""))
                for entry in _json(response, step).get("model_version_status", [])}

    def _label_target(self, label: str) -> int | None:
        """The version TF-Serving resolves ``label`` to, or None if it does not know it."""
        response = self._request("GET", f"/labels/{label}", f"resolve label {label!r}")
        if response.status_code != 200:
            return None
        entries = _json(response, f"resolve label {label!r}").get("model_version_status", [])
        return int(entries[0]["version"]) if entries else None


def _json(response: requests.Response, step: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ServingError(f"TF-Serving at {response.url} answered {step} with something that "
                           f"is not a JSON object: {response.text[:200]!r}")
    return body


def _error_text(response: requests.Response) -> str:
    """TF-Serving's ``{"error": ...}`` message, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return response.text[:300]
