"""A fake TensorFlow Serving: its REST API and model-config-file polling, for tests.

No ``tensorflow_model_server`` binary installs on the machines this project is tested on, so
:class:`plugin.serving.tfserving.TFServingAdapter` is tested against this protocol fake. It
follows TF-Serving where the adapter depends on it:

- **Command line.** ``python -m plugin.serving.tfserving_fake --rest_api_port P
  --model_config_file F --model_config_file_poll_wait_seconds S`` with the flag names of
  ``tensorflow_model_server`` (also ``--file_system_poll_wait_seconds`` and
  ``--allow_version_labels_for_unavailable_models``). Fake-only: ``--rest_api_port 0
  --port_file PATH`` binds a free port and writes it to PATH; the intervals may be fractions of
  a second; the server binds 127.0.0.1 and serves REST only (no gRPC).
- **Config file.** The text-format ``ModelServerConfig`` subset the adapter writes (see
  :func:`parse_model_server_config`). It is read at startup (a missing or bad file stops the
  server, as it stops TF-Serving) and again every poll interval; a file that does not parse, or
  that TF-Serving would refuse, is logged and ignored: the last good config keeps serving.
- **Version labels.** A label may only point at a version that is ``AVAILABLE`` when the config
  is applied; otherwise the whole new config is refused with TF-Serving's message
  (``Request to assign label to version 2 of model m, which is not currently available for
  inference``) and the previous versions and labels stay. So a client loads first and labels
  second. With ``--allow_version_labels_for_unavailable_models`` a *new* label may point at any
  version (needed to restart a server whose config file already has labels), but moving an
  existing label still needs the target ``AVAILABLE``.
- **Versions.** Numeric subdirectories of a model's ``base_path``, chosen by the model's
  version policy (``specific``, ``latest`` (the default, one version) or ``all``). Each goes
  through START, LOADING, AVAILABLE, UNLOADING, END; new versions load before old ones unload.
  A failed load ends in END with the error in its status and is not retried while the policy
  keeps asking for it (TF-Serving retries a few times first). Versions that reached END stay in
  the model status, as in TF-Serving.
- **REST** (https://www.tensorflow.org/tfx/serving/api_rest): model status, metadata and
  ``:predict`` (row ``instances`` and columnar ``inputs``) by model, version or label, with
  TF-Serving's URL patterns, error messages and status codes (400 for a malformed request or
  an unknown label, 404 for an unknown model or version or one that is not loaded, 413 for a
  body over :data:`MAX_BODY_BYTES`), errors as ``{"error": "..."}``.

**What a version is.** Instead of a SavedModel (``saved_model.pb`` + ``variables/``), a version
directory holds ``model.pt``, a :meth:`~model_factory.templates.classifier.Classifier.export`
artifact loaded with :func:`~model_factory.templates.artifact.load_for_serving`. Its one
signature, ``serving_default``, takes ``inputs`` (float32, batch first) and returns
``probabilities``: the softmax over the classes, one row per input row.

:class:`FakeTFServing` starts the fake as a child process (pid file, log, readiness, stop).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import requests
import torch
from flask import Flask, Response, request
from torch import nn
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from cl_server.embedded.process import ManagedProcess
from model_factory.templates.artifact import load_for_serving

log = logging.getLogger("tfserving_fake")

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted, bytes; a larger one is answered 413."""
MODEL_FILE = "model.pt"
"""The file in a version directory the fake loads (its stand-in for a SavedModel)."""
SIGNATURE = "serving_default"
INPUT_NAME = "inputs"
OUTPUT_NAME = "probabilities"

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


# -- the config file ------------------------------------------------------------------------

class ConfigError(ValueError):
    """The model config file does not parse, or TF-Serving would refuse to apply it."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: ``latest`` (the ``count`` highest), ``all``, or
    ``specific`` (those in ``versions``)."""

    kind: str = "latest"
    count: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, on_disk: set[int]) -> set[int]:
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return on_disk & self.versions
        return set(sorted(on_disk)[-self.count:])


@dataclass(frozen=True)
class ModelEntry:
    """One ``config { ... }`` of the ``model_config_list``."""

    name: str
    base_path: str
    platform: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)


_TOKEN = re.compile(r"""
      (?P<skip>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>-?[0-9]+)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[{}:])
""", re.VERBOSE)
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
            "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.DOTALL)

# A parsed message: its fields in file order; a value is a str, an int or a nested message.
Fields = list[tuple[str, Any]]


def _unquote(token: str) -> str:
    def escape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            if int(code, 8) > 0xFF:
                raise ConfigError(f"invalid escape \\{code} in string {token}: over \\377")
            return chr(int(code, 8))
        if code not in _ESCAPES:
            raise ConfigError(f"invalid escape \\{code} in string {token}")
        return _ESCAPES[code].decode("latin-1")

    # Escapes stand for bytes: decode them as latin-1 code points, then the whole as UTF-8.
    raw = _ESCAPE.sub(escape, token[1:-1].encode("utf-8").decode("latin-1"))
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"string {token} is not valid UTF-8: {exc}") from None


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConfigError(f"line {line}: unexpected character {text[pos]!r}")
        if match.lastgroup != "skip":
            tokens.append((match.lastgroup or "", match.group(), line))
        line += match.group().count("\n")
        pos = match.end()
    return tokens


def _parse_text_format(text: str) -> Fields:
    """Text-format protobuf as nested field lists (no schema: that is applied afterwards)."""
    tokens = _tokenize(text)
    pos = 0

    def message(closing: bool) -> Fields:
        nonlocal pos
        fields: Fields = []
        while True:
            if pos == len(tokens):
                if closing:
                    raise ConfigError("unexpected end of file: a '}' is missing")
                return fields
            kind, value, line = tokens[pos]
            if value == "}" and kind == "punct":
                if not closing:
                    raise ConfigError(f"line {line}: '}}' without a matching '{{'")
                pos += 1
                return fields
            if kind != "ident":
                raise ConfigError(f"line {line}: expected a field name, got {value!r}")
            pos += 1
            colon = pos < len(tokens) and tokens[pos][1] == ":" and tokens[pos][0] == "punct"
            pos += colon
            if pos < len(tokens) and tokens[pos][1] == "{" and tokens[pos][0] == "punct":
                pos += 1
                fields.append((value, message(closing=True)))
            elif colon and pos < len(tokens) and tokens[pos][0] == "string":
                parts = []
                while pos < len(tokens) and tokens[pos][0] == "string":
                    parts.append(_unquote(tokens[pos][1]))
                    pos += 1
                fields.append((value, "".join(parts)))
            elif colon and pos < len(tokens) and tokens[pos][0] == "number":
                fields.append((value, int(tokens[pos][1])))
                pos += 1
            else:
                raise ConfigError(f"line {line}: expected ':' and a value or '{{' after "
                                  f"{value!r}")

    return message(closing=False)


def _schema(fields: Fields, message: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Check ``fields`` against ``spec`` (field name -> str, int, list (a message) or a
    ``tuple`` wrapping a type for a repeated field); returns the values by name."""
    out: dict[str, Any] = {}
    for name, value in fields:
        if name not in spec:
            raise ConfigError(f"{message} has no field named {name!r} (this fake reads: "
                              f"{', '.join(spec)})")
        wanted = spec[name]
        repeated = isinstance(wanted, tuple)
        kind = wanted[0] if repeated else wanted
        if not isinstance(value, kind):
            noun = {str: "a string", int: "an integer", list: "a message { ... }"}[kind]
            raise ConfigError(f"{message}.{name} must be {noun} (got {value!r})")
        if repeated:
            out.setdefault(name, []).append(value)
        elif name in out:
            raise ConfigError(f"{message}.{name} is set more than once")
        else:
            out[name] = value
    return out


def _policy(fields: Fields) -> VersionPolicy:
    choice = _schema(fields, "ModelVersionPolicy", {"latest": list, "all": list,
                                                    "specific": list})
    if len(choice) != 1:
        raise ConfigError(f"ModelVersionPolicy needs exactly one of latest, all, specific (got "
                          f"{', '.join(choice) or 'none'})")
    kind, body = next(iter(choice.items()))
    if kind == "all":
        _schema(body, "All", {})
        return VersionPolicy("all")
    if kind == "latest":
        count = _schema(body, "Latest", {"num_versions": int}).get("num_versions", 1)
        if count < 1:
            raise ConfigError(f"Latest.num_versions must be at least 1 (got {count})")
        return VersionPolicy("latest", count=count)
    versions = _schema(body, "Specific", {"versions": (int,)}).get("versions", [])
    return VersionPolicy("specific", versions=frozenset(versions))


def _model_entry(fields: Fields) -> ModelEntry:
    values = _schema(fields, "ModelConfig", {
        "name": str, "base_path": str, "model_platform": str, "model_version_policy": list,
        "version_labels": (list,)})
    if not values.get("name"):
        raise ConfigError("ModelConfig.name is missing")
    labels: dict[str, int] = {}
    for entry in values.get("version_labels", []):
        pair = _schema(entry, "version_labels", {"key": str, "value": int})
        if not pair.get("key") or "value" not in pair:
            raise ConfigError(f"model {values['name']}: version_labels needs a key and a value "
                              f"(got {pair})")
        labels[pair["key"]] = pair["value"]
    policy = _policy(values["model_version_policy"]) if "model_version_policy" in values \
        else VersionPolicy()
    return ModelEntry(values["name"], values.get("base_path", ""),
                      values.get("model_platform", ""), policy, labels)


def parse_model_server_config(text: str) -> dict[str, ModelEntry]:
    """The models of a text-format ``ModelServerConfig`` (the ``model_config_list`` subset),
    by name. Raises :class:`ConfigError` naming the line or field at fault.

    Example:
        >>> models = parse_model_server_config('''
        ... model_config_list {
        ...   config {
        ...     name: "m" base_path: "/srv/m" model_platform: "tensorflow"
        ...     model_version_policy { specific { versions: 1 versions: 2 } }
        ...     version_labels { key: "stable" value: 1 }
        ...   }
        ... }''')
        >>> entry = models["m"]
        >>> entry.policy.select({1, 2, 3}), entry.labels
        ({1, 2}, {'stable': 1})
        >>> parse_model_server_config('model_config_list { config { name: "m" }')
        Traceback (most recent call last):
        ...
        plugin.serving.tfserving_fake.ConfigError: unexpected end of file: a '}' is missing
    """
    top = _schema(_parse_text_format(text), "ModelServerConfig", {"model_config_list": list})
    models: dict[str, ModelEntry] = {}
    configs = _schema(top.get("model_config_list", []), "ModelConfigList", {"config": (list,)})
    for fields in configs.get("config", []):
        entry = _model_entry(fields)
        if entry.name in models:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        models[entry.name] = entry
    return models


def read_config(path: Path) -> dict[str, ModelEntry]:
    """Parse the config file at ``path`` (see :func:`parse_model_server_config`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc}") from None
    return parse_model_server_config(text)


# -- the server core: config, versions, labels -----------------------------------------------

class RestError(Exception):
    """A request failed; ``code`` is the canonical error code TF-Serving maps to HTTP."""

    HTTP: ClassVar[dict[str, int]] = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNIMPLEMENTED": 501}

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        return self.HTTP[self.code]


@dataclass
class Servable:
    """One version of one model and where it is in its lifecycle."""

    version: int
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    net: nn.Module | None = None
    classes: list[str] = field(default_factory=list)
    failed: bool = False
    """The load failed while the policy asked for it: not retried until it stops asking."""

    def status(self) -> dict[str, Any]:
        return {"version": str(self.version), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error_message}}


@dataclass(frozen=True)
class Handle:
    """A loaded version as a request holds it (it stays usable if the version unloads)."""

    version: int
    net: nn.Module
    classes: list[str]


_VERSION_DIR = re.compile(r"[0-9]+")


class ServerCore:
    """The models, their versions and labels; what TF-Serving's ``ServerCore`` and manager do.

    :meth:`apply` installs a config (or refuses it); :meth:`reconcile` loads and unloads
    versions to match it. Only one thread may call :meth:`reconcile`; any may read.
    """

    def __init__(self, *, allow_labels_for_unavailable: bool = False):
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self.changed = threading.Event()
        """Set when a new config was applied (the manager then reconciles at once)."""
        self._lock = threading.Lock()
        self._config: dict[str, ModelEntry] = {}
        self._servables: dict[str, dict[int, Servable]] = {}
        self._missing: set[str] = set()

    def apply(self, config: dict[str, ModelEntry]) -> bool:
        """Install ``config``; True if it differs from the current one. Raises
        :class:`ConfigError`, keeping the current config, when TF-Serving would refuse it."""
        for entry in config.values():
            if not entry.platform:
                raise ConfigError(f"model {entry.name}: Illegal setting neither "
                                  "ModelServerConfig::model_type (deprecated) nor "
                                  "ModelServerConfig::model_platform.")
            if entry.platform != "tensorflow":
                raise ConfigError(f"Model {entry.name} requests unsupported platform "
                                  f"{entry.platform}")
            if not os.path.isabs(entry.base_path):
                raise ConfigError(f"Expected model {entry.name} to have an absolute path or "
                                  f"URI; got base_path()={entry.base_path}")
        with self._lock:
            for entry in config.values():
                current = self._config.get(entry.name)
                existing = current.labels if current is not None else {}
                for label, version in entry.labels.items():
                    # The flag admits a label that is new or unchanged, never a moved one.
                    if self.allow_labels_for_unavailable and \
                            existing.get(label, version) == version:
                        continue
                    servable = self._servables.get(entry.name, {}).get(version)
                    if servable is None or servable.state != AVAILABLE:
                        raise ConfigError(f"Request to assign label to version {version} of "
                                          f"model {entry.name}, which is not currently "
                                          "available for inference")
            if config == self._config:
                return False
            self._config = dict(config)
        self.changed.set()
        return True

    def reconcile(self) -> None:
        """Load the versions the config asks for, then unload the others."""
        with self._lock:
            config = dict(self._config)
        wanted = {name: entry.policy.select(self._on_disk(entry)) for name, entry in
                  config.items()}
        for name, versions in wanted.items():
            for version in sorted(versions):
                self._load(config[name], version)
        with self._lock:
            models = {name: dict(servables) for name, servables in self._servables.items()}
        for name, servables in models.items():
            for version, servable in servables.items():
                if version not in wanted.get(name, set()):
                    servable.failed = False
                    if servable.state == AVAILABLE:
                        self._unload(name, servable)

    def _on_disk(self, entry: ModelEntry) -> set[int]:
        try:
            names = [e.name for e in os.scandir(entry.base_path) if e.is_dir()]
        except OSError as exc:
            if entry.base_path not in self._missing:
                log.warning("model %s: cannot list base path %s: %s", entry.name,
                            entry.base_path, exc)
                self._missing.add(entry.base_path)
            return set()
        self._missing.discard(entry.base_path)
        return {int(n) for n in names if _VERSION_DIR.fullmatch(n)}

    def _set(self, servable: Servable, state: str, **fields: Any) -> None:
        with self._lock:
            servable.state = state
            for name, value in fields.items():
                setattr(servable, name, value)

    def _load(self, entry: ModelEntry, version: int) -> None:
        with self._lock:
            servable = self._servables.setdefault(entry.name, {}).get(version)
            if servable is not None and (servable.state == AVAILABLE or servable.failed):
                return
            servable = Servable(version)
            self._servables[entry.name][version] = servable
        self._set(servable, LOADING)
        path = Path(entry.base_path) / str(version) / MODEL_FILE
        log.info("Loading servable: {name: %s version: %d} from %s", entry.name, version, path)
        if not path.is_file():
            self._set(servable, END, failed=True, error_code="NOT_FOUND",
                      error_message=f"Could not find {MODEL_FILE} (this fake's stand-in for a "
                                    f"SavedModel) at supplied export directory path: "
                                    f"{path.parent}")
            log.error("Loading servable %s version %d failed: no %s", entry.name, version, path)
            return
        try:
            net, classes = load_for_serving(path)
        except Exception as exc:  # noqa: BLE001 - any load failure is the version's status
            self._set(servable, END, failed=True, error_code="UNKNOWN",
                      error_message=f"{type(exc).__name__}: {exc}")
            log.error("Loading servable %s version %d failed: %s", entry.name, version, exc)
            return
        self._set(servable, AVAILABLE, net=net, classes=classes)
        log.info("Successfully loaded servable version {name: %s version: %d}", entry.name,
                 version)

    def _unload(self, name: str, servable: Servable) -> None:
        self._set(servable, UNLOADING)
        self._set(servable, END, net=None)
        log.info("Unloaded servable version {name: %s version: %d}", name, servable.version)

    # -- lookups for requests ------------------------------------------------------------

    def _label_version(self, name: str, label: str) -> int:
        entry = self._config.get(name)
        if entry is None or label not in entry.labels:
            raise RestError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        return entry.labels[label]

    def status(self, name: str, version: int | None, label: str | None) -> list[dict[str, Any]]:
        """``model_version_status`` of the model, or of one version (by number or label)."""
        with self._lock:
            if label is not None:
                version = self._label_version(name, label)
            servables = self._servables.get(name, {})
            if not servables:
                raise RestError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is None:
                return [servables[v].status() for v in sorted(servables, reverse=True)]
            if version not in servables:
                raise RestError("NOT_FOUND", f"Could not find version {version} of model {name}")
            return [servables[version].status()]

    def handle(self, name: str, version: int | None, label: str | None) -> Handle:
        """The AVAILABLE version a request names (the latest one if no version or label)."""
        with self._lock:
            if label is not None:
                version = self._label_version(name, label)
            servables = self._servables.get(name, {})
            ready = {v: Handle(v, s.net, s.classes) for v, s in servables.items()
                     if s.state == AVAILABLE and s.net is not None}
            if version is None and ready:
                version = max(ready)
            if version in ready:
                return ready[version]
        request_text = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise RestError("NOT_FOUND", f"Servable not found for request: {request_text}")


# -- REST -----------------------------------------------------------------------------------

# TF-Serving's own URL patterns (http_rest_api_handler.cc).
_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                      r":(classify|regress|predict)", re.IGNORECASE)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                     r"(?:/(metadata))?", re.IGNORECASE)


def _tensor(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise RestError("INVALID_ARGUMENT", f"{where}: not a tensor of uniform shape "
                        f"({exc})") from None
    if array.dtype.kind not in "iuf":
        raise RestError("INVALID_ARGUMENT", f"{where}: input {INPUT_NAME!r} takes numbers "
                        f"(DT_FLOAT); got values of type {array.dtype}")
    if array.ndim == 0 or len(array) == 0:
        raise RestError("INVALID_ARGUMENT", f"{where}: expected a non-empty batch of inputs "
                        f"(got {value!r:.80})")
    return array.astype(np.float32)


def _named(value: Any, where: str) -> Any:
    """The tensor of input ``inputs`` when ``value`` names its inputs, else ``value``."""
    if not isinstance(value, dict):
        return value
    if set(value) != {INPUT_NAME}:
        raise RestError("INVALID_ARGUMENT", f"{where}: signature {SIGNATURE} takes one input, "
                        f"{INPUT_NAME!r} (got {', '.join(map(repr, value)) or 'none'})")
    return value[INPUT_NAME]


def predict(loaded: Handle, body: dict[str, Any]) -> dict[str, Any]:
    """Run a ``:predict`` request body on ``loaded``; the response body."""
    signature = body.get("signature_name", SIGNATURE)
    if not isinstance(signature, str):
        raise RestError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
    if signature != SIGNATURE:
        raise RestError("INVALID_ARGUMENT", f'Serving signature name: "{signature}" not found '
                        "in signature def")
    if ("instances" in body) == ("inputs" in body):
        raise RestError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key" if
                        "inputs" not in body else
                        "Only one of 'instances' or 'inputs' can be specified")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise RestError("INVALID_ARGUMENT", "'instances' must be a list of instances")
        batch = _tensor([_named(i, "instances") for i in instances], "instances")
    else:
        batch = _tensor(_named(body["inputs"], "inputs"), "inputs")
    try:
        with torch.no_grad():
            probabilities = torch.softmax(loaded.net(torch.from_numpy(batch)), dim=1)
    except RuntimeError as exc:
        raise RestError("INVALID_ARGUMENT", f"input of shape {list(batch.shape)} does not fit "
                        f"version {loaded.version}: {exc}") from None
    rows = probabilities.numpy().tolist()
    return {"predictions": rows} if "instances" in body else {"outputs": rows}


def metadata(name: str, loaded: Handle) -> dict[str, Any]:
    """The ``/metadata`` response: the model spec and the one signature."""
    def tensor(tensor_name: str, dims: list[int] | None) -> dict[str, Any]:
        shape = {"dim": [{"size": str(d), "name": ""} for d in dims or []],
                 "unknown_rank": dims is None}
        return {"dtype": "DT_FLOAT", "tensor_shape": shape, "name": tensor_name}

    signature = {"inputs": {INPUT_NAME: tensor(f"{SIGNATURE}_{INPUT_NAME}:0", None)},
                 "outputs": {OUTPUT_NAME: tensor("StatefulPartitionedCall:0",
                                                 [-1, len(loaded.classes)])},
                 "method_name": "tensorflow/serving/predict"}
    return {"model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}}}


def answer(core: ServerCore, method: str, path: str, body: Callable[[], bytes]
           ) -> dict[str, Any]:
    """Answer one REST request (``body`` reads the request body); raises :class:`RestError`."""
    malformed = RestError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
    match = _PREDICT.fullmatch(path)
    if match:
        if method != "POST":
            raise malformed
        name, version, label, verb = match.groups()
        if verb.lower() != "predict":
            raise RestError("UNIMPLEMENTED", f"this fake serves :predict only, not :{verb}")
        loaded = core.handle(name, int(version) if version else None, label)
        try:
            request_body = json.loads(body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RestError("INVALID_ARGUMENT", f"JSON Parse error: {exc}") from None
        if not isinstance(request_body, dict):
            raise RestError("INVALID_ARGUMENT", "JSON Value: the request body must be an "
                            "object with 'instances' or 'inputs'")
        return predict(loaded, request_body)
    match = _STATUS.fullmatch(path)
    if not match or method != "GET":
        raise malformed
    name, version, label, is_metadata = match.groups()
    if not name:
        raise RestError("INVALID_ARGUMENT", "Missing model name in request.")
    if is_metadata:
        return metadata(name, core.handle(name, int(version) if version else None, label))
    return {"model_version_status": core.status(name, int(version) if version else None,
                                                label)}


def create_app(core: ServerCore) -> Flask:
    """The WSGI app serving TF-Serving's REST API over ``core``."""
    app = Flask("tfserving_fake")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def reply(body: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def rest(path: str) -> Response:
        try:
            return reply(answer(core, request.method, "/" + path, request.get_data))
        except RestError as exc:
            return reply({"error": str(exc)}, exc.http_status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return reply({"error": f"{exc.name}: {exc.description}"}, exc.code or 500)

    return app


# -- the process ----------------------------------------------------------------------------

def _poll_config(core: ServerCore, path: Path, interval_s: float, stop: threading.Event
                 ) -> None:
    """Re-read the config file every ``interval_s``; log (once per distinct error) and ignore
    a file that does not parse or is refused."""
    last_error = ""
    while not stop.wait(interval_s):
        try:
            if core.apply(read_config(path)):
                log.info("Applied the new model config from %s", path)
            last_error = ""
        except ConfigError as exc:
            if str(exc) != last_error:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s "
                          "(still serving the last good config)", exc)
                last_error = str(exc)


def _manage(core: ServerCore, interval_s: float, stop: threading.Event) -> None:
    """Reconcile the versions with the config every ``interval_s`` and after a change."""
    while not stop.is_set():
        core.changed.wait(interval_s)
        core.changed.clear()
        if stop.is_set():
            return
        try:
            core.reconcile()
        except Exception:  # keep managing; the log says what went wrong
            log.exception("reconciling model versions failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest_api_port", type=int, default=8501,
                        help="REST port; 0 binds a free one (needs --port_file)")
    parser.add_argument("--port_file", type=Path, help="fake-only: write the bound port here")
    parser.add_argument("--model_config_file", type=Path, required=True)
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                        help="seconds between re-reads of the config file; 0: never")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="seconds between scans of the model base paths")
    parser.add_argument("--allow_version_labels_for_unavailable_models", action="store_true",
                        help="let a new label point at a version that is not AVAILABLE")
    args = parser.parse_args(argv)
    if args.rest_api_port == 0 and args.port_file is None:
        parser.error("--rest_api_port 0 disables REST in TF-Serving; this fake serves only "
                     "REST, so pass a port, or 0 with --port_file")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    core = ServerCore(allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models)
    try:
        core.apply(read_config(args.model_config_file))
    except ConfigError as exc:
        hint = (" (no version is loaded before the config is read, so every label fails at "
                "startup: start with --allow_version_labels_for_unavailable_models)"
                if "assign label" in str(exc) else "")
        log.error("cannot start: %s%s", exc, hint)
        return 1
    core.reconcile()
    server = make_server("127.0.0.1", args.rest_api_port, create_app(core), threaded=True)
    if args.port_file is not None:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(server.server_port))
        tmp.replace(args.port_file)
    log.info("Exporting HTTP/REST API at 127.0.0.1:%d", server.server_port)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=server.serve_forever, name="rest", daemon=True),
               threading.Thread(target=_manage, name="manager", daemon=True,
                                args=(core, args.file_system_poll_wait_seconds, stop))]
    if args.model_config_file_poll_wait_seconds > 0:
        threads.append(threading.Thread(
            target=_poll_config, name="config-poller", daemon=True,
            args=(core, args.model_config_file, args.model_config_file_poll_wait_seconds, stop)))
    for thread in threads:
        thread.start()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    core.changed.set()
    if args.port_file is not None:
        args.port_file.unlink(missing_ok=True)
    return 0


class FakeTFServing:
    """The fake as a child process: ``start()``, ``url``, ``stop()`` (also a context manager).

    Parameters:
        run_dir: directory for its pid, log (``tfserving.log``) and port files.
        model_config_file: the config file it polls; an empty ``model_config_list {}`` is
            written if the file does not exist (TF-Serving needs the file at startup).
        poll_s: seconds between re-reads of the config file and scans of the base paths.
        allow_version_labels_for_unavailable_models: pass TF-Serving's flag of that name.
    """

    def __init__(self, run_dir: str | os.PathLike[str], model_config_file: str | os.PathLike[str],
                 poll_s: float = 0.2, *, allow_version_labels_for_unavailable_models: bool = False):
        self.run_dir = Path(run_dir)
        self.model_config_file = Path(model_config_file)
        self.port_file = self.run_dir / "tfserving.port"
        argv = [sys.executable, "-m", "plugin.serving.tfserving_fake", "--rest_api_port", "0",
                "--port_file", str(self.port_file),
                "--model_config_file", str(self.model_config_file),
                "--model_config_file_poll_wait_seconds", str(poll_s),
                "--file_system_poll_wait_seconds", str(poll_s)]
        if allow_version_labels_for_unavailable_models:
            argv.append("--allow_version_labels_for_unavailable_models")
        self.process = ManagedProcess("tfserving", argv, self.run_dir, self._ready,
                                      ready_timeout_s=60)
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running fake."""
        if self._url is None:
            raise RuntimeError("the fake TF-Serving is not running; call start() first")
        return self._url

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{int(self.port_file.read_text())}"
        requests.get(f"{url}/v1/models/ready-probe", timeout=1)  # any answer, 404 too, is up
        self._url = url
        return True

    def start(self) -> Self:
        if not self.model_config_file.exists():
            self.model_config_file.parent.mkdir(parents=True, exist_ok=True)
            self.model_config_file.write_text("model_config_list {}\n")
        self.port_file.unlink(missing_ok=True)
        self._url = None
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
