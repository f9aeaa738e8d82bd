"""The TF-Serving fake's protocol and the TF-Serving adapter's engine-specific behaviour.

Protocol checks run the fake's core and REST app in-process (Flask test client); adapter
checks run the fake as a child process, as TF-Serving would run, with a 0.1 s poll interval.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from cl_server.config.schema import ModelConfig
from cl_server.embedded.process import EmbeddedServiceError
from model_factory.templates import Classifier, load_for_serving
from plugin.serving.base import ServingError
from plugin.serving.routing import RoutingTable
from plugin.serving.tfserving import TFServingAdapter, render_model_config
from plugin.serving.tfserving_fake import (
    ConfigError,
    FakeTFServing,
    ServerCore,
    create_app,
    parse_model_server_config,
)

POLL_S = 0.1
X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two exported classifiers with different weights, as version 1 and 2."""
    folder = tmp_path_factory.mktemp("artifacts")
    paths = {}
    for version in (1, 2):
        paths[version] = folder / f"v{version}.pt"
        Classifier("mlp", (4,), ["a", "b", "c"], params={"hidden": [8]},
                   seed=version).export(paths[version])
    return paths


def expected(artifact: Path, x: np.ndarray = X) -> np.ndarray:
    net, _ = load_for_serving(artifact)
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()


def model_config() -> ModelConfig:
    return ModelConfig(template="mlp", input={"name": "x", "shape": [4], "dtype": "float32"},
                       classes=["a", "b", "c"])


# -- the config file ------------------------------------------------------------------------

def test_config_text_round_trips_through_the_fake_parser(tmp_path: Path) -> None:
    odd = tmp_path / 'models "q" \\ é'
    text = render_model_config("m", odd, [3, 1], {"stable": 1, "canary": 3})
    assert 'base_path: "' + str(tmp_path) + '/models \\"q\\" \\\\ \\303\\251"' in text
    entry = parse_model_server_config(text)["m"]
    assert (entry.base_path, entry.platform) == (str(odd), "tensorflow")
    assert entry.policy.select({1, 2, 3, 4}) == {1, 3}
    assert entry.labels == {"stable": 1, "canary": 3}
    empty = parse_model_server_config(render_model_config("m", odd, [], {}))["m"]
    assert empty.policy.select({1, 2}) == set() and empty.labels == {}


@pytest.mark.parametrize(("text", "message"), [
    ("model_config_list { config { name: 'm' } ", "a '}' is missing"),
    ("model_config_list { config { nmae: 'm' } }", "ModelConfig has no field named 'nmae'"),
    ("model_config_list { config { name: 3 } }", "ModelConfig.name must be a string"),
    ("model_config_list { config { name: 'm' model_version_policy { all {} latest {} } } }",
     "needs exactly one of latest, all, specific"),
    ("model_config_list { config { name: 'm' } config { name: 'm' } }",
     "Illegal to list model m multiple times"),
    ("model_config_list { config { name: 'm' version_labels { key: 'stable' } } }",
     "version_labels needs a key and a value"),
])
def test_fake_rejects_config_text_tf_serving_would_not_parse(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_server_config(text)


# -- the fake's protocol, in-process ----------------------------------------------------------

def write_versions(base: Path, artifacts: dict[int, Path], *versions: int) -> None:
    for version in versions:
        (base / str(version)).mkdir(parents=True)
        shutil.copyfile(artifacts[version], base / str(version) / "model.pt")


def config(base: Path, versions: list[int], labels: dict[str, int] | None = None) -> dict:
    return parse_model_server_config(render_model_config("m", base, versions, labels or {}))


@pytest.fixture
def core(tmp_path: Path, artifacts: dict[int, Path]) -> ServerCore:
    """A fake core serving versions 1 and 2 of model ``m``, ``stable`` -> 1."""
    write_versions(tmp_path / "m", artifacts, 1, 2)
    core = ServerCore()
    core.apply(config(tmp_path / "m", [1, 2]))
    core.reconcile()
    core.apply(config(tmp_path / "m", [1, 2], {"stable": 1}))
    return core


def test_status_metadata_and_predict_follow_the_rest_api(core: ServerCore,
                                                         artifacts: dict[int, Path]) -> None:
    client = create_app(core).test_client()
    ok = {"error_code": "OK", "error_message": ""}
    assert client.get("/v1/models/m").json == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok},
        {"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert client.get("/v1/models/m/versions/1").json["model_version_status"][0]["version"] == "1"
    assert client.get("/v1/models/m/labels/stable").json["model_version_status"][0][
        "version"] == "1"
    meta = client.get("/v1/models/m/versions/2/metadata").json
    assert meta["model_spec"] == {"name": "m", "signature_name": "", "version": "2"}
    outputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert outputs["probabilities"]["tensor_shape"]["dim"][1]["size"] == "3"

    rows = client.post("/v1/models/m/versions/1:predict", json={"instances": X.tolist()}).json
    np.testing.assert_allclose(rows["predictions"], expected(artifacts[1]), rtol=1e-5)
    named = [{"inputs": row} for row in X.tolist()]
    stable = client.post("/v1/models/m/labels/stable:predict",
                         json={"instances": named, "signature_name": "serving_default"}).json
    np.testing.assert_allclose(stable["predictions"], expected(artifacts[1]), rtol=1e-5)
    latest = client.post("/v1/models/m:predict", json={"inputs": X.tolist()}).json
    np.testing.assert_allclose(latest["outputs"], expected(artifacts[2]), rtol=1e-5)


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/m/versions/9", None, 404, "Could not find version 9 of model m"),
    ("GET", "/v1/models/m/labels/canary", None, 400,
     "Unrecognized servable version label: canary"),
    ("POST", "/v1/models/m/versions/9:predict", {"instances": [[0] * 4]}, 404,
     "Servable not found for request: Specific(m, 9)"),
    ("POST", "/v1/models/nope:predict", {"instances": [[0] * 4]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/m/labels/canary:predict", {"instances": [[0] * 4]}, 400,
     "Unrecognized servable version label"),
    ("POST", "/v1/models/m:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/m:predict", {"instances": [[0] * 5]}, 400, "does not fit version 2"),
    ("POST", "/v1/models/m:predict", {"instances": [[0] * 4, [0] * 3]}, 400, "uniform shape"),
    ("POST", "/v1/models/m:predict", {"instances": [["a"] * 4]}, 400, "takes numbers"),
    ("POST", "/v1/models/m:predict", {"instances": [{"x": [0] * 4}]}, 400, "takes one input"),
    ("POST", "/v1/models/m:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/m:predict", {"instances": [], "inputs": []}, 400, "Only one of"),
    ("POST", "/v1/models/m:predict", {"instances": [[0] * 4], "signature_name": "other"}, 400,
     'Serving signature name: "other" not found'),
    ("GET", "/v1/models/m:predict", None, 400, "Malformed request: GET /v1/models/m:predict"),
    ("GET", "/v1/models/..%2F..%2Fetc", None, 400, "Malformed request"),
    ("POST", "/v1/models/m:classify", {"examples": []}, 501, ":predict only"),
])
def test_errors_are_json_with_tf_serving_codes(core: ServerCore, method: str, path: str,
                                               body: object, status: int, error: str) -> None:
    client = create_app(core).test_client()
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = client.open(path, method=method, **kwargs)
    assert response.status_code == status, response.json
    assert error in response.json["error"]


def test_oversized_body_is_refused_with_413(core: ServerCore) -> None:
    app = create_app(core)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = app.test_client().post("/v1/models/m:predict",
                                      json={"instances": [[0.0] * 4] * 200})
    assert response.status_code == 413 and "Too Large" in response.json["error"]


def test_label_on_a_version_not_available_refuses_the_whole_config(
        core: ServerCore, tmp_path: Path, artifacts: dict[int, Path]) -> None:
    base = tmp_path / "m"
    core.apply(config(base, [1], {"stable": 1}))
    core.reconcile()
    with pytest.raises(ConfigError, match="Request to assign label to version 2 of model m, "
                                          "which is not currently available for inference"):
        core.apply(config(base, [1, 2], {"stable": 1, "canary": 2}))
    core.reconcile()  # the refused config's versions are not loaded either
    assert [s["state"] for s in core.status("m", None, None)] == ["END", "AVAILABLE"]
    core.apply(config(base, [1, 2], {"stable": 1}))
    core.reconcile()
    core.apply(config(base, [1, 2], {"stable": 1, "canary": 2}))
    assert core.handle("m", None, "canary").version == 2


def test_allow_flag_lets_new_labels_through_but_not_moved_ones(
        tmp_path: Path, artifacts: dict[int, Path]) -> None:
    base = tmp_path / "m"
    write_versions(base, artifacts, 1, 2)
    core = ServerCore(allow_labels_for_unavailable=True)
    core.apply(config(base, [1], {"stable": 1}))  # at startup nothing is AVAILABLE yet
    core.reconcile()
    with pytest.raises(ConfigError, match="label to version 2"):
        core.apply(config(base, [1, 2], {"stable": 2}))


def test_failed_load_ends_with_its_error_and_unloaded_versions_stay_listed(
        core: ServerCore, tmp_path: Path) -> None:
    (tmp_path / "m" / "3").mkdir()
    core.apply(config(tmp_path / "m", [2, 3]))
    core.reconcile()
    status = {s["version"]: s for s in core.status("m", None, None)}
    assert status["3"]["state"] == "END"
    assert status["3"]["status"]["error_code"] == "NOT_FOUND"
    assert "Could not find model.pt" in status["3"]["status"]["error_message"]
    assert status["1"] == {"version": "1", "state": "END",
                           "status": {"error_code": "OK", "error_message": ""}}
    assert status["2"]["state"] == "AVAILABLE"


# -- the adapter against the fake as a process ------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTFServing]:
    folder = tmp_path_factory.mktemp("tfserving")
    with FakeTFServing(folder / "run", folder / "models.config", poll_s=POLL_S) as fake:
        yield fake


def make_adapter(server: FakeTFServing, tmp_path: Path, name: str, **kwargs: object
                 ) -> TFServingAdapter:
    return TFServingAdapter(model_config(), name, RoutingTable(tmp_path / "routing.json"),
                            url=server.url, base_path=tmp_path / "models" / name,
                            model_config_file=server.model_config_file, poll_s=POLL_S,
                            load_timeout_s=10, warmup_requests=1, **kwargs)


def predict(server: FakeTFServing, path: str) -> np.ndarray:
    response = requests.post(f"{server.url}/v1/models/{path}:predict",
                             json={"instances": X.tolist()}, timeout=5)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"])


def test_labels_follow_champion_and_canary_and_are_written_only_when_available(
        server: FakeTFServing, tmp_path: Path, artifacts: dict[int, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = make_adapter(server, tmp_path, "flow")
    writes: list[tuple[dict[str, int], list[int]]] = []
    write_config = adapter._write_config

    def recording(versions: list[int], labels: dict[str, int]) -> None:
        writes.append((dict(labels), adapter.loaded()))
        write_config(versions, labels)

    monkeypatch.setattr(adapter, "_write_config", recording)

    adapter.deploy(1, artifacts[1])
    text = server.model_config_file.read_text()
    assert "versions: 1\n" in text and 'key: "stable"\n      value: 1' in text
    assert f'base_path: "{tmp_path}/models/flow"' in text
    np.testing.assert_allclose(adapter.infer(X), expected(artifacts[1]), rtol=1e-5)

    adapter.deploy(2, artifacts[2], promote=False)
    adapter.start_canary(2, 0.1)
    assert adapter.loaded() == [1, 2]
    assert 'key: "canary"\n      value: 2' in server.model_config_file.read_text()
    np.testing.assert_allclose(predict(server, "flow/labels/stable"), expected(artifacts[1]),
                               rtol=1e-5)
    np.testing.assert_allclose(predict(server, "flow/labels/canary"), expected(artifacts[2]),
                               rtol=1e-5)

    adapter.promote(2)
    assert adapter.loaded() == [2] and adapter.current() == 2
    np.testing.assert_allclose(predict(server, "flow/labels/stable"), expected(artifacts[2]),
                               rtol=1e-5)
    assert requests.get(f"{server.url}/v1/models/flow/labels/canary", timeout=5
                        ).status_code == 400

    adapter.rollback(1)
    assert adapter.loaded() == [1] and adapter.health().ready
    assert [v.version for v in adapter.versions() if v.loaded] == [1]
    for labels, available in writes:
        assert set(labels.values()) <= set(available), (labels, available)
    assert "Request to assign label" not in server.log_file.read_text()


def test_bad_config_file_is_logged_and_ignored(server: FakeTFServing, tmp_path: Path,
                                               artifacts: dict[int, Path]) -> None:
    adapter = make_adapter(server, tmp_path, "garbled")
    adapter.deploy(1, artifacts[1])
    server.model_config_file.write_text("model_config_list { config { name: ")
    time.sleep(3 * POLL_S)
    assert adapter.loaded() == [1]
    np.testing.assert_allclose(adapter.infer(X), expected(artifacts[1]), rtol=1e-5)
    assert "failed to ReloadConfig" in server.log_file.read_text()
    adapter.deploy(2, artifacts[2])  # a good file is picked up again
    assert adapter.loaded() == [2]


def test_failed_load_names_the_engine_error_and_keeps_the_champion(
        server: FakeTFServing, tmp_path: Path, artifacts: dict[int, Path]) -> None:
    adapter = make_adapter(server, tmp_path, "broken",
                           exporter=lambda artifact, d: (d / "model.pt").write_bytes(b"junk"))
    good = make_adapter(server, tmp_path, "broken")
    good.deploy(1, artifacts[1])
    with pytest.raises(ServingError, match=r"failed to load broken version 2: END \(UNKNOWN: "):
        adapter.deploy(2, artifacts[2])
    assert good.loaded() == [1] and good.current() == 1 and good.health().ready


def test_load_timeout_names_the_missing_version(server: FakeTFServing, tmp_path: Path) -> None:
    adapter = make_adapter(server, tmp_path, "absent")
    adapter.load_timeout_s = 0.5
    with pytest.raises(ServingError, match=r"did not serve exactly versions \[7\] within 0.5 s "
                                           r"\(it reports 7: not reported"):
        adapter._load([7])


def test_restart_over_a_labelled_config_needs_the_allow_flag(
        tmp_path: Path, artifacts: dict[int, Path]) -> None:
    config_file = tmp_path / "models.config"
    write_versions(tmp_path / "models" / "again", artifacts, 1)
    config_file.write_text(render_model_config("again", tmp_path / "models" / "again", [1],
                                               {"stable": 1}))
    with pytest.raises(EmbeddedServiceError, match="(?s)Request to assign label to version 1.*"
                                                   "allow_version_labels_for_unavailable_models"):
        FakeTFServing(tmp_path / "run", config_file, poll_s=POLL_S).start()
    with FakeTFServing(tmp_path / "run", config_file, poll_s=POLL_S,
                       allow_version_labels_for_unavailable_models=True) as server:
        adapter = make_adapter(server, tmp_path, "again")
        adapter.routing.update(champion=1)
        adapter.restore()
        assert adapter.loaded() == [1] and adapter.health().ready


def test_unreachable_engine_is_a_clear_error(tmp_path: Path, artifacts: dict[int, Path]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    adapter = TFServingAdapter(model_config(), "m", RoutingTable(tmp_path / "routing.json"),
                               url=url, base_path=tmp_path / "m",
                               model_config_file=tmp_path / "models.config", timeout_s=2)
    with pytest.raises(ServingError, match=f"TF-Serving at {url} is unreachable"):
        adapter.deploy(1, artifacts[1])
    health = adapter.health()
    assert not health.live and "unreachable" in health.detail


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", ""])
def test_path_traversal_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        TFServingAdapter(model_config(), name, RoutingTable(tmp_path / "routing.json"),
                         url="http://127.0.0.1:1", base_path=tmp_path / "m",
                         model_config_file=tmp_path / "models.config")


def test_version_numbers_cannot_escape_the_base_path(tmp_path: Path,
                                                     artifacts: dict[int, Path]) -> None:
    adapter = TFServingAdapter(model_config(), "m", RoutingTable(tmp_path / "routing.json"),
                               url="http://127.0.0.1:1", base_path=tmp_path / "m",
                               model_config_file=tmp_path / "models.config")
    with pytest.raises(ValueError, match="invalid version"):
        adapter.deploy("1/../../x", artifacts[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid version"):
        adapter.infer(X, "../2")  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()
