"""Triton Inference Server adapter: a python-backend model per service, explicit model control.

Repository layout the adapter writes (``<repository>/<model_name>/``)::

    config.pbtxt        backend "python", KIND_CPU, input from the service config, output [-1]
    3/model.py          plugin/serving/triton_model.py (loads the artifact beside it)
    3/model.pt          the artifact (Classifier.export; weights only)

Which versions are loaded is set per load call through Triton's repository API: ``POST
/v2/repository/models/{m}/load`` with a ``config`` parameter carrying the full model config and
``version_policy: {specific: {versions: [...]}}``. Versions already loaded stay loaded (no
reload), new ones load beside them, absent ones unload: the champion keeps serving while the
challenger loads. ``POST /v2/repository/index`` tells which versions are ready. The proxy
addresses versions explicitly (``/v2/models/{m}/versions/{v}/infer``), so what answers is the
routing table's decision, not the engine's "latest".

Example (not run as a doctest: it needs a running tritonserver)::

    adapter = TritonAdapter(config.model, "mnist", RoutingTable(path), url=server.url,
                            repository=server.repository)
    adapter.deploy(1, "model.pt")      # write, load, warm up, route
    adapter.deploy(2, "model-2.pt")    # v2 loads beside v1, takes traffic, v1 unloads
    adapter.rollback(1)
"""

from __future__ import annotations

import json
import py_compile
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests

from plugin.serving.base import (
    EngineHealth,
    ServingAdapter,
    ServingError,
    discard_version_dir,
    write_version_dir,
)

TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64",
                 "int32": "INT32", "uint8": "UINT8", "bytes": "BYTES"}
MAX_BATCH = 256
MODEL_FILE = Path(__file__).with_name("triton_model.py")


class TritonAdapter(ServingAdapter):
    """See the module doc. Extra parameters: ``url`` (Triton HTTP endpoint) and
    ``repository`` (the model repository directory the server reads)."""

    kind = "triton"

    def __init__(self, *args: Any, url: str, repository: Path, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.url = url.rstrip("/")
        self.model_dir = Path(repository) / self.model_name
        self._session = requests.Session()

    # -- the model config ------------------------------------------------------------------

    def model_config(self, versions: Sequence[int] | None = None) -> dict[str, Any]:
        """The Triton model config (JSON form); with ``versions``, pinned to exactly those."""
        spec = self.model.input
        config: dict[str, Any] = {
            "name": self.model_name, "backend": "python", "max_batch_size": MAX_BATCH,
            "input": [{"name": spec.name, "data_type": _config_type(spec.dtype),
                       "dims": list(spec.shape)}],
            "output": [{"name": self.model.output_name, "data_type": "TYPE_FP32",
                        "dims": [-1]}],
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        }
        if versions is not None:
            config["version_policy"] = {"specific": {"versions": [int(v) for v in versions]}}
        return config

    def _config_pbtxt(self) -> str:
        config = self.model_config()
        spec, out = config["input"][0], config["output"][0]
        return (f'name: "{self.model_name}"\nbackend: "python"\n'
                f"max_batch_size: {MAX_BATCH}\n"
                f'input [{{ name: "{spec["name"]}" data_type: {spec["data_type"]} '
                f'dims: {spec["dims"]} }}]\n'
                f'output [{{ name: "{out["name"]}" data_type: TYPE_FP32 dims: [-1] }}]\n'
                "instance_group [{ kind: KIND_CPU count: 1 }]\n"
                "version_policy: { latest: { num_versions: 1 } }\n")

    # -- engine primitives -----------------------------------------------------------------

    def _write(self, version: int, artifact: Path) -> None:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.model_dir / "config.pbtxt"
        text = self._config_pbtxt()
        if not config_file.exists() or config_file.read_text() != text:
            tmp = config_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(config_file)

        def fill(directory: Path) -> None:
            shutil.copyfile(MODEL_FILE, directory / "model.py")
            shutil.copyfile(artifact, directory / "model.pt")
            # Triton reloads a version whose directory changed since it was loaded; without the
            # bytecode already in place, the stub's first import writes __pycache__ into the
            # version directory and the next load call reloads the version for nothing.
            py_compile.compile(str(directory / "model.py"), doraise=True)

        write_version_dir(self.model_dir, version, fill)

    def _discard(self, version: int) -> None:
        discard_version_dir(self.model_dir, version)

    def _on_disk(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir()
                      if p.is_dir() and p.name.isdigit())

    def _load(self, versions: Sequence[int]) -> None:
        versions = sorted(set(versions))
        if not versions:
            self._post(f"/v2/repository/models/{self.model_name}/unload", {}, "unload")
            return
        body = {"parameters": {"config": json.dumps(self.model_config(versions))}}
        self._post(f"/v2/repository/models/{self.model_name}/load", body,
                   f"load versions {versions}", timeout=self.load_timeout_s)
        ready = set(self.loaded())
        missing = [v for v in versions if v not in ready]
        if missing:
            raise ServingError(f"Triton at {self.url}: {self.model_name} versions {missing} are "
                               f"not ready after loading")

    def loaded(self) -> list[int]:
        index = self._post("/v2/repository/index", {"ready": True}, "read the repository index")
        return sorted(int(entry["version"]) for entry in index
                      if entry.get("name") == self.model_name and entry.get("state") == "READY"
                      and str(entry.get("version", "")).isdigit())

    def health(self) -> EngineHealth:
        try:
            live = self._session.get(f"{self.url}/v2/health/live",
                                     timeout=self.timeout_s).status_code == 200
        except requests.RequestException as exc:
            return EngineHealth(False, False, f"Triton at {self.url} is unreachable: {exc}")
        champion = self.current()
        if champion is None:
            return EngineHealth(live, False, "no version deployed yet")
        path = f"{self.url}/v2/models/{self.model_name}/versions/{champion}/ready"
        try:
            ready = self._session.get(path, timeout=self.timeout_s).status_code == 200
        except requests.RequestException as exc:
            return EngineHealth(live, False, f"readiness of version {champion}: {exc}")
        return EngineHealth(live, ready, "" if ready else f"version {champion} is not ready")

    def infer(self, inputs: np.ndarray, version: int | None = None) -> np.ndarray:
        version = version if version is not None else self.current()
        if version is None:
            raise ServingError(f"{self.model_name}: no version deployed")
        spec = self.model.input
        data = inputs.astype(str).tolist() if spec.dtype == "bytes" else inputs
        body = {"inputs": [{"name": spec.name, "shape": list(inputs.shape),
                            "datatype": _triton_type(spec.dtype),
                            "data": np.asarray(data).ravel().tolist()}],
                "outputs": [{"name": self.model.output_name}]}
        answer = self._post(f"/v2/models/{self.model_name}/versions/{version}/infer", body,
                            f"infer on version {version}")
        output = answer["outputs"][0]
        return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])

    # -- HTTP ------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], step: str,
              timeout: float | None = None) -> Any:
        try:
            response = self._session.post(f"{self.url}{path}", json=body,
                                          timeout=timeout or self.timeout_s)
        except requests.RequestException as exc:
            raise ServingError(f"Triton at {self.url} is unreachable ({step} of "
                               f"{self.model_name}): {exc}") from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise ServingError(f"Triton refused to {step} of {self.model_name} "
                               f"(HTTP {response.status_code}): {detail}")
        return response.json() if response.content else {}


def _triton_type(dtype: str) -> str:
    """The V2 protocol's datatype of an input dtype (``BYTES`` for texts)."""
    return TRITON_DTYPES[dtype]


def _config_type(dtype: str) -> str:
    """The model config's data type: ``TYPE_<datatype>``, except that strings are
    ``TYPE_STRING`` there (the config has no ``TYPE_BYTES``)."""
    return "TYPE_STRING" if dtype == "bytes" else f"TYPE_{_triton_type(dtype)}"
