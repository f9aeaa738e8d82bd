"""The YAML service config: every example loads; broken files name every bad field exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cl_server.config import ConfigError, ServiceConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "cl_server/config/demo.yaml"]
ENV = {"MODELCI_ADMIN_TOKEN": "a" * 32, "LABEL_STUDIO_TOKEN": "b" * 32}

BASE = """name: svc
engine: {kind: triton, model_name: m}
model: {template: mlp, input: {shape: [4]}, classes: [a, b]}
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_validates(path: Path) -> None:
    config = load_config(path, env=ENV)
    assert isinstance(config, ServiceConfig)
    assert config.model.classes


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4


BROKEN = [
    (BASE + "drift:\n  detectors:\n    - {kind: ks, signal: inputs}\n"
            "    - {kind: kss, signal: inputs}\n",
     ["drift.detectors[1].kind: unknown detector 'kss' (expected one of: ks, chi2, adwin, kswin, "
      "page_hinkley, ddm, eddm, hddm_a, hddm_w)"]),
    (BASE.replace("kind: triton", "kuind: triton"),
     ["engine.kind: required field missing",
      "engine.kuind: unknown field (did you mean 'kind'?)"]),
    (BASE + "triggers:\n  rules:\n    - {kind: time, interval_s: -5}\n",
     ["triggers.rules[0].interval_s: must be greater than 0 (got -5)"]),
    (BASE + "triggers:\n  rules:\n    - {kind: drift}\n    - {kind: cron}\n",
     ["triggers.rules[1].kind: unknown kind 'cron' (expected one of: time, volume, performance, "
      "drift)"]),
    (BASE + "triggers:\n  rules:\n    - {kind: volume}\n",
     ["triggers.rules[0].new_labels: set new_labels or growth_pct"]),
    (BASE + "cache: {url: 'http://x'}\n",
     ["cache.url: must be a URL starting with redis:// or rediss:// or unix:// (got 'http://x')"]),
    (BASE.replace("kind: triton, model_name: m", "kind: tfserving, model_name: m"),
     ["engine.url: required for kind 'tfserving' (no embedded TF-Serving exists)"]),
    (BASE + "drift:\n  detectors:\n    - {kind: eddm, signal: inputs}\n",
     ["drift.detectors[0].signal: detector 'eddm' cannot watch 'inputs' (it watches: errors)"]),
    (BASE.replace("classes: [a, b]", "classes: [a, b, a]"),
     ["model.classes: duplicate class names: a"]),
    (BASE + "auth: {bootstrap_admin_token: '${NOPE_VAR}'}\n",
     ["auth.bootstrap_admin_token: environment variable 'NOPE_VAR' is not set"]),
    (BASE + "auth: {bootstrap_admin_token: short}\n",
     ["auth.bootstrap_admin_token: must be at least 16 characters"]),
    (BASE + "collector: {sampling_ratio: 1.5}\n",
     ["collector.sampling_ratio: must be less than or equal to 1 (got 1.5)"]),
    (BASE + "name: again\n", ["invalid YAML: line 4, column 1: duplicate key 'name'"]),
    ("name: [unclosed\n",
     ["invalid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"]),
    ("- a\n- b\n", ["the top level must be a mapping of sections (got list)"]),
    (BASE + "annotator: {kind: label_studio, url: 'http://ls:8080'}\n",
     ["annotator.token: required for kind 'label_studio'"]),
    (BASE + "cl: {strategy: {name: ewx}}\n",
     ["cl.strategy.name: unknown strategy 'ewx' (expected one of: naive, ewc, si, lwf, mas, "
      "replay, proactive, full-retrain)"]),
    (BASE.replace("shape: [4]", "shape: [0, 3]"),
     ["model.input.shape: axes must be positive or -1 (got 0)"]),
    (BASE + "deployment: {rollout: blue-green, ratio: 0}\n",
     ["deployment.ratio: must be greater than 0 (got 0)",
      "deployment.rollout: unknown rollout 'blue-green' (expected one of: direct, canary, "
      "shadow)"]),
    (BASE.replace("name: svc", "name: ../etc"),
     ["name: must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit "
      "(got '../etc')"]),
    (BASE + "server: {port: 70000}\n",
     ["server.port: must be less than or equal to 65535 (got 70000)"]),
    (BASE + "engin: {}\n", ["engin: unknown field (did you mean 'engine'?)"]),
    ("name: svc\n", ["engine: required field missing", "model: required field missing"]),
    (BASE + "!!python/object/apply:os.system ['true']: 1\n",
     ["invalid YAML: line 4, column 1: could not determine a constructor for the tag "
      "'tag:yaml.org,2002:python/object/apply:os.system'"]),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN, ids=range(len(BROKEN)))
def test_broken_config_lists_every_invalid_field(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    assert [str(p) for p in caught.value.problems] == expected
    message = str(caught.value)
    assert message.splitlines()[0] == f"<config>: {len(expected)} problem" + (
        "s" if len(expected) != 1 else "")
    assert all(line in message for line in expected)


def test_many_errors_reported_together() -> None:
    text = BASE + (
        "collector: {sampling_ratio: -1, window_size: 0}\n"
        "drift:\n  detectors:\n    - {kind: chi2, signal: errors}\n    - {kind: nope, signal: x}\n"
        "server: {prot: 1}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    paths = [p.path for p in caught.value.problems]
    assert paths == sorted(paths)
    assert set(paths) == {"collector.sampling_ratio", "collector.window_size",
                          "drift.detectors[0].signal", "drift.detectors[1].kind",
                          "drift.detectors[1].signal", "server.prot"}


def test_env_interpolation_with_default_and_value() -> None:
    text = BASE + "cache: {url: '${R_URL:-redis://127.0.0.1:6379/0}'}\n" \
                  "store: {uri: 'mongodb://${MHOST}:27017'}\n"
    config = parse_config(text, env={"MHOST": "db.internal"})
    assert config.cache.url == "redis://127.0.0.1:6379/0"
    assert config.store.uri == "mongodb://db.internal:27017"


def test_secrets_are_not_printed() -> None:
    config = parse_config(BASE + "auth: {bootstrap_admin_token: 'supersecretvalue123'}\n", env={})
    assert "supersecretvalue123" not in repr(config)
    assert config.auth.bootstrap_admin_token.get_secret_value() == "supersecretvalue123"


def test_load_config_unreadable_and_oversized(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file: No such file or directory"):
        load_config(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="a config is at most 1048576 bytes"):
        load_config(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(binary)


def test_empty_file_names_required_sections(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError) as caught:
        load_config(empty)
    assert [p.path for p in caught.value.problems] == ["engine", "model", "name"]


def test_config_is_frozen() -> None:
    config = parse_config(BASE, env={})
    with pytest.raises(ValidationError, match="frozen"):
        config.name = "other"  # type: ignore[misc]


def test_config_names_match_the_model_factory_registries() -> None:
    from cl_server.config import schema
    from model_factory.strategies import STRATEGIES
    from model_factory.templates import NETWORKS

    assert set(schema.TEMPLATES) == set(NETWORKS)
    # replay, proactive and full retraining are data regimes of the CL job, not loss terms.
    assert set(schema.STRATEGIES) - {"replay", "proactive", "full-retrain"} == set(STRATEGIES)
