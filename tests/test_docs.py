"""The docs: generated references up to date and complete, extension examples that run and do
what their section says, relative links that resolve.

- ``docs/config-reference.md`` and ``docs/api-reference.md`` equal what ``python -m
  plugin.docgen`` generates now, name every config key and every API path, and the config
  reference's cross-key rules are the ones the loader enforces;
- every ```python block of ``docs/extending.md`` runs in a fresh namespace (in a temporary
  directory, the registries restored afterwards), and what it registers passes the checks of
  the matching contract;
- every relative link (and its ``#anchor``) in ``docs/*.md`` and ``README.md`` resolves, and
  every repository path they name in inline code (``cl_server/loop.py``,
  ``tests/test_config.py::test_name``) exists.
"""

from __future__ import annotations

import copy
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import numpy as np
import pytest
import test_serving_contract as contract
import torch
import yaml
from pydantic import BaseModel
from torch import nn

from cl_server.config import ConfigError, ServiceConfig, parse_config
from cl_server.config import schema as config_schema
from cl_server.drift import DETECTORS
from model_factory.strategies import STRATEGIES, make_strategy
from model_factory.templates import NETWORKS, Classifier, load_for_serving
from model_factory.training import fit_experience
from plugin import docgen
from plugin.serving.base import ServingAdapter
from plugin.serving.routing import RoutingTable

ROOT = docgen.REPO_ROOT
DOCS = ROOT / "docs"
EXTENDING = DOCS / "extending.md"
SECTIONS = ("1. A model template", "2. A CL strategy (loss or regularizer)",
            "3. A drift detector", "4. A serving adapter")


# -- generated references ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def openapi_document() -> dict[str, Any]:
    return docgen.openapi()


def test_generated_docs_are_up_to_date(tmp_path: Path) -> None:
    stale = docgen.check_docs(DOCS)
    assert stale == [], (f"stale generated docs: {', '.join(stale)}; run `python -m "
                         f"plugin.docgen` and commit the result")
    assert docgen.main(["--check", "--dir", str(tmp_path)]) == 1  # missing files are stale
    assert {p.name for p in docgen.write_docs(tmp_path)} == {docgen.CONFIG_REFERENCE,
                                                             docgen.API_REFERENCE}
    assert docgen.main(["--check", "--dir", str(tmp_path)]) == 0


def test_stale_docs_are_named_with_the_command_to_run(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    docgen.write_docs(tmp_path)
    (tmp_path / docgen.API_REFERENCE).write_text("old\n", encoding="utf-8")
    assert docgen.check_docs(tmp_path) == [str(tmp_path / docgen.API_REFERENCE)]
    assert docgen.main(["--check", "--dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert docgen.API_REFERENCE in error and "python -m plugin.docgen" in error
    assert docgen.CONFIG_REFERENCE not in error


def test_generation_is_deterministic(openapi_document: dict[str, Any]) -> None:
    assert docgen.config_reference() == docgen.config_reference()
    first = docgen.api_reference(copy.deepcopy(openapi_document))
    assert first == docgen.api_reference(copy.deepcopy(openapi_document))


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The config sections a field holds, through Optional, lists and tagged unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _is_sequence(annotation: Any) -> bool:
    while get_origin(annotation) in (Annotated, Union):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) in (list, tuple)


def leaf_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key holding a value, dotted; ``[]`` marks the items of a list of sections."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        sections = list(_models_in(info.annotation))
        if not sections:
            yield path
            continue
        item = f"{path}[]" if _is_sequence(info.annotation) else path
        for section in sections:
            yield from leaf_keys(section, f"{item}.")


def test_config_reference_names_every_key() -> None:
    text = (DOCS / docgen.CONFIG_REFERENCE).read_text(encoding="utf-8")
    keys = sorted(set(leaf_keys(ServiceConfig)))
    assert len(keys) > 80 and "validation.gates.max_class_drop" in keys
    assert "triggers.rules[].interval_s" in keys and "cl.challengers[].params" in keys
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert missing == [], f"keys missing from {docgen.CONFIG_REFERENCE}: {missing}"
    assert set(docgen.config_keys()) == set(keys)
    for required in ("name", "engine.kind", "engine.model_name", "model.template",
                     "model.input.shape", "model.classes"):
        assert re.search(rf"\| `{re.escape(required)}` \| [^|]+ \| \*\*required\*\* \|", text)


def test_config_reference_example_and_rules_hold() -> None:
    text = (DOCS / docgen.CONFIG_REFERENCE).read_text(encoding="utf-8")
    assert docgen.EXAMPLE_CONFIG.read_text(encoding="utf-8") in text
    assert parse_config(docgen.MINIMAL_CONFIG, env={}).name == "digits"
    base = yaml.safe_load(docgen.MINIMAL_CONFIG)
    for rule in docgen.CROSS_FIELD_RULES:
        assert f"| `{rule.path}` |" in text
        broken = _merged(base, rule.violation)
        with pytest.raises(ConfigError) as error:
            parse_config(yaml.safe_dump(broken), env={})
        paths = [re.sub(r"\[\d+\]", "[]", p.path) for p in error.value.problems]
        assert paths == [rule.path], f"{rule.path}: {error.value}"


def _merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def test_api_reference_names_every_operation(openapi_document: dict[str, Any]) -> None:
    text = (DOCS / docgen.API_REFERENCE).read_text(encoding="utf-8")
    operations = [(method, path) for path, item in openapi_document["paths"].items()
                  for method in item]
    assert len(operations) > 30
    for method, path in operations:
        assert f"\n### {method.upper()} {path}\n" in text, f"{method.upper()} {path} missing"
    for path in openapi_document["paths"]:
        assert path in text
    # The role each operation needs is stated; public ones are marked public.
    health = text.split("### GET /api/health\n", 1)[1].split("\n### ", 1)[0]
    assert "Access: public (no token)." in health
    users = text.split("### POST /api/users\n", 1)[1].split("\n### ", 1)[0]
    assert "Access: bearer token with role `admin`." in users
    assert "| `role` | string: `viewer`, `researcher`, `engineer`, `admin` | yes |" in users


# -- docs/extending.md -------------------------------------------------------------------------

def python_blocks() -> dict[str, list[str]]:
    """The ```python blocks of docs/extending.md, by the ``##`` section holding them."""
    blocks: dict[str, list[str]] = {}
    section = ""
    for part in re.split(r"^(## .*)$", EXTENDING.read_text(encoding="utf-8"), flags=re.MULTILINE):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        blocks.setdefault(section, []).extend(re.findall(r"^```python\n(.*?)^```$", part,
                                                         flags=re.MULTILINE | re.DOTALL))
    return {name: code for name, code in blocks.items() if code}


def test_every_extension_section_has_one_example() -> None:
    assert {name: len(code) for name, code in python_blocks().items()} == {
        name: 1 for name in SECTIONS}


@pytest.fixture
def run_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run a section's example in a fresh namespace in a temporary directory; the registries
    it may extend are restored afterwards."""
    registries = [NETWORKS, STRATEGIES, DETECTORS, config_schema.DETECTOR_SIGNALS]
    saved = [dict(registry) for registry in registries]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def run(section: str) -> dict[str, Any]:
        [code] = python_blocks()[section]
        namespace: dict[str, Any] = {"__name__": f"extending_example_{section[0]}"}
        exec(compile(code, f"{EXTENDING}: {section}", "exec"), namespace)  # noqa: S102
        return namespace

    try:
        yield run
    finally:
        for registry, before in zip(registries, saved, strict=True):
            registry.clear()
            registry.update(before)


def _added(registry: dict[str, Any], before: set[str]) -> str:
    [name] = set(registry) - before
    return name


def test_template_example_builds_trains_grows_and_serves(run_example: Any) -> None:
    before = set(NETWORKS)
    run_example(SECTIONS[0])
    template = _added(NETWORKS, before)
    torch.manual_seed(0)
    model = Classifier(template, (2, 3), ["x", "y"], seed=1, learning_rate=0.1)
    weights = {k: v.clone() for k, v in model.net.state_dict().items()}
    x, y = torch.randn(8, 2, 3), torch.tensor([0, 1] * 4)
    report = model.fit(x, y, epochs=1, batch_size=8)  # one training step
    assert report["batches"] == 1 and math.isfinite(report["mean_loss"])
    assert any(not torch.equal(weights[k], v) for k, v in model.net.state_dict().items())
    model.grow(["z"])
    model.export("grown.pt")
    net, classes = load_for_serving("grown.pt")
    assert classes == ["x", "y", "z"]
    torch.testing.assert_close(torch.softmax(net(x), dim=1), model.predict(x).confidences)


def test_strategy_example_computes_its_penalty_under_the_contract(run_example: Any) -> None:
    before = set(STRATEGIES)
    run_example(SECTIONS[1])
    name = _added(STRATEGIES, before)
    generator = torch.Generator().manual_seed(0)
    for params in STRATEGIES[name].unit_test_params():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        strategy = make_strategy(name, **params)
        x = torch.randn(16, 4, generator=generator)
        assert strategy.penalty(model, x, model(x)).item() == 0.0  # nothing learned yet
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for shift in (0.0, 2.0):
            experience = [(x + shift, torch.randint(0, 3, (16,), generator=generator))]
            stats = fit_experience(model, experience, strategy, optimizer, epochs=2)
            assert math.isfinite(stats["final_loss"]) and stats["mean_penalty"] >= 0
        assert strategy.penalty(model, x, model(x)).item() == 0.0  # at the anchor
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05)
        penalty = strategy.penalty(model, x, model(x))
        assert penalty.shape == () and penalty.item() > 0
        buffer = io.BytesIO()
        torch.save(strategy.state_dict(), buffer)
        buffer.seek(0)
        fresh = make_strategy(name, **params)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        assert fresh.penalty(model, x, model(x)).item() == pytest.approx(penalty.item())
        with pytest.raises(ValueError, match="bogus_knob"):
            make_strategy(name, **params, bogus_knob=1)


def test_detector_example_alarms_on_shift_only(run_example: Any) -> None:
    before = set(DETECTORS)
    run_example(SECTIONS[2])
    kind = _added(DETECTORS, before)
    for signal in config_schema.DETECTOR_SIGNALS[kind]:
        for seed in range(3):
            rng = np.random.default_rng(seed)
            stationary = rng.normal(size=(500 + 20 * 250, 4))
            changed = rng.normal(size=(5 * 250, 4)) + 1.0
            values = np.concatenate([stationary, changed])
            detector = DETECTORS[kind](signal, window=250, reference_size=500)
            results = [r for start in range(0, len(values), 97)
                       for r in detector.update(values[start:start + 97])]
            assert len(results) == 25
            # alpha 0.01: 0.2 false alarms expected in 20 rounds; 20 seeds gave at most 2.
            assert sum(r.alarm for r in results[:20]) <= 2
            assert any(r.alarm for r in results[20:23])
            assert np.mean([r.magnitude for r in results[20:]]) > np.mean(
                [r.magnitude for r in results[:20]])
            once = DETECTORS[kind](signal, window=250, reference_size=500).update(values)
            assert once == results  # the same whatever the batching


def test_adapter_example_passes_the_serving_contract(run_example: Any, tmp_path: Path,
                                                     artifacts: dict[int, Path]) -> None:
    namespace = run_example(SECTIONS[3])
    [adapter_class] = [v for v in namespace.values() if isinstance(v, type)
                       and issubclass(v, ServingAdapter) and v is not ServingAdapter]
    repository = tmp_path / "contract-models"
    adapter = adapter_class(contract.MODEL, "contract", RoutingTable(tmp_path / "routing.json"),
                            repository=repository)
    deployment = contract.Deployment(adapter.kind, adapter, repository / "contract", "",
                                     artifacts)
    contract.test_first_deploy_serves_the_artifact(deployment)
    contract.test_upgrade_replaces_the_champion(deployment)
    contract.test_versions_are_immutable_and_artifacts_must_exist(deployment, tmp_path)
    contract.test_a_bad_artifact_is_refused_and_the_champion_stays(deployment)
    contract.test_rollback_returns_to_an_older_version(deployment)
    contract.test_a_staged_challenger_takes_canary_and_shadow_routes(deployment)


# -- links -------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"``.+?``|`[^`\n]+`", "", text)


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of a file (repeats suffixed -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^(```|~~~).*?^\1", "", markdown.read_text(encoding="utf-8"),
                  flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE):
        slug = docgen.github_anchor(heading)
        count = seen.get(slug, 0)
        out.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return out


def test_relative_links_resolve() -> None:
    files = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
    assert DOCS / "architecture.md" in files and DOCS / "extending.md" in files
    broken = []
    for markdown in files:
        for target in LINK.findall(_prose(markdown.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (markdown.parent / path).resolve() if path else markdown
            if not resolved.exists():
                broken.append(f"{markdown.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{markdown.name}: {target} (no such heading)")
    assert broken == []


REPOSITORY_PATH = re.compile(
    r"`((?:plugin|cl_server|model_factory|evaluator|web|tests|configs|docker|docs)/[^`\s]*)`")


def test_named_repository_paths_exist() -> None:
    missing, named = [], 0
    for markdown in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:
        for reference in set(REPOSITORY_PATH.findall(markdown.read_text(encoding="utf-8"))):
            named += 1
            path, _, function = reference.partition("::")
            target = ROOT / path
            if not target.exists():
                missing.append(f"{markdown.name}: {reference}")
            elif function and not re.search(rf"^def {re.escape(function)}\(",
                                            target.read_text(encoding="utf-8"), re.MULTILINE):
                missing.append(f"{markdown.name}: {reference} (no such function)")
    assert named > 100 and missing == []


def test_readme_attach_config_is_valid() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Attaching to your deployment"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, "the README's attach section lost its config"
    config = parse_config(block.group(1), env={"REDIS_URL": "redis://cache:6379/0",
                                               "MONGODB_URI": "mongodb://db:27017"})
    assert config.engine.url == "http://triton:8000"
    assert config.cache.url == "redis://cache:6379/0" and config.store.uri == "mongodb://db:27017"
