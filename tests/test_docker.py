"""Structure checks of the Docker production setup (docker/, configs/compose.yaml).

CI has no Docker engine, so nothing here builds or runs an image; instead the compose file, the
Dockerfile and the service config are read and checked against each other: services, volumes and
dependencies resolve, every URL in the config names a compose service on the port it listens on,
and the secrets compose requires are the ones the config interpolates.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from cl_server.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
CONFIG = ROOT / "configs" / "compose.yaml"
TORCH_PIN = "torch==2.13.0"

SERVICES = {"redis", "mongodb", "triton", "labelstudio", "server", "worker"}
# Port each dependency listens on inside the compose network.
CONTAINER_PORTS = {"redis": 6379, "mongodb": 27017, "triton": 8000, "labelstudio": 8080}
SECRETS = {"MODELCI_ADMIN_TOKEN": "a" * 24, "LABEL_STUDIO_TOKEN": "b" * 32}
_REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
_CONFIG_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG, env=SECRETS)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args}"
    return json.loads(args)


def volume_mounts(service: dict) -> dict[str, str]:
    """Container path -> source (named volume or host path) for short-syntax volumes."""
    mounts = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, target, *_ = entry.split(":")
        mounts[target] = source
    return mounts


def published(service: dict) -> dict[int, int]:
    """Container port -> host port."""
    ports = {}
    for entry in service.get("ports", []):
        *host, container = str(entry).split("/")[0].split(":")
        ports[int(container)] = int(host[-1]) if host else int(container)
    return ports


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on", {})
    return {name: {} for name in deps} if isinstance(deps, list) else deps


def test_six_services_with_pinned_images(services: dict) -> None:
    assert set(services) == SERVICES
    for name, service in services.items():
        image = service.get("image", "")
        if "build" not in service:
            assert re.search(r":[0-9][\w.-]*$", image), f"{name}: pin the image tag ({image!r})"


def test_dependencies_exist_and_wait_for_health(services: dict) -> None:
    for name, service in services.items():
        for target, spec in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert target != name
            if "healthcheck" in services[target]:
                assert spec.get("condition") == "service_healthy", f"{name} -> {target}"
    assert set(depends_on(services["server"])) == {"redis", "mongodb", "triton", "labelstudio"}
    assert {"redis", "mongodb"} <= set(depends_on(services["worker"]))


def test_healthchecks(services: dict) -> None:
    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "redis-cli ping" in probe("redis")
    assert probe("mongodb").startswith("CMD mongosh") and "ping" in probe("mongodb")
    assert "curl -f http://localhost:8000/v2/health/ready" in probe("triton")
    assert ":8080/health" in probe("labelstudio")


def test_named_volumes_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in services.values():
        for source in volume_mounts(service).values():
            if not source.startswith((".", "/", "~")):
                used.add(source)
    assert used, "no named volume in use"
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused volumes: {sorted(declared - used)}"
    for name, path in {"redis": "/data", "mongodb": "/data/db", "labelstudio": "/label-studio/data"
                       }.items():
        assert path in volume_mounts(services[name]), f"{name} keeps its data in {path}"


def test_server_and_worker_share_image_config_and_volumes(services: dict) -> None:
    server, worker = services["server"], services["worker"]
    assert server["build"] == worker["build"]
    assert server.get("image") == worker.get("image")
    build = server["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert (context / "pyproject.toml").is_file()
    assert volume_mounts(server) == volume_mounts(worker)
    mounts = volume_mounts(server)
    host_config = (DOCKER / mounts["/etc/modelci/config.yaml"]).resolve()
    assert host_config == CONFIG and host_config.is_file()
    config_entry = next(v for v in server["volumes"]
                        if v.split(":")[1] == "/etc/modelci/config.yaml")
    assert config_entry.endswith(":ro"), "the config is mounted read-only"
    assert server["environment"] == worker["environment"]
    assert "ports" not in worker and "container_name" not in worker, "workers must scale"


def test_config_points_at_compose_services(config, services: dict) -> None:
    endpoints = {
        "cache.url": config.cache.url,
        "store.uri": config.store.uri,
        "engine.url": config.engine.url,
        "annotator.url": config.annotator.url,
    }
    expected = {"cache.url": "redis", "store.uri": "mongodb", "engine.url": "triton",
                "annotator.url": "labelstudio"}
    for field, url in endpoints.items():
        parts = urlsplit(url)
        assert parts.hostname == expected[field], f"{field}={url}"
        assert parts.hostname in services
        assert parts.port == CONTAINER_PORTS[parts.hostname], f"{field}={url}"
    host, _, port = config.engine.grpc_url.rpartition(":")
    assert (host, port) == ("triton", "8001")
    assert config.engine.kind == "triton" and config.annotator.kind == "label_studio"
    assert config.queue.embedded_workers == 0, "training runs in the worker service"


def test_published_ports_match_listening_ports(config, services: dict) -> None:
    assert published(services["server"]) == {config.server.port: config.server.port}
    assert config.server.host == "0.0.0.0"
    assert published(services["labelstudio"]) == {8080: 8081}
    assert published(services["triton"]) == {8000: 8000, 8001: 8001, 8002: 8002}
    # Redis and MongoDB stay on the compose network.
    assert not published(services["redis"]) and not published(services["mongodb"])


def test_triton_shares_the_model_repository(config, services: dict) -> None:
    triton = services["triton"]
    command = triton["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[0] == "tritonserver"
    assert "--model-control-mode=explicit" in command
    repository = next(a.split("=", 1)[1] for a in command if a.startswith("--model-repository="))
    assert str(config.engine.model_repository) == repository
    source = volume_mounts(triton)[repository]
    assert volume_mounts(services["server"])[repository] == source
    assert volume_mounts(services["worker"])[repository] == source
    data_dir = str(config.server.data_dir)
    server_data = volume_mounts(services["server"])[data_dir]
    assert server_data == volume_mounts(services["worker"])[data_dir]


def test_required_secrets_are_the_ones_the_config_reads(services: dict) -> None:
    env = services["server"]["environment"]
    required = {key for key, value in env.items() if _REQUIRED_VAR.fullmatch(str(value))}
    # The container variable carries the same name as the host variable compose requires.
    for key in required:
        assert _REQUIRED_VAR.fullmatch(env[key]).group(1) == key
    read = {m.group(1) for m in _CONFIG_VAR.finditer(CONFIG.read_text(encoding="utf-8"))
            if m.group(2) is None}
    assert read == required == set(SECRETS)
    # Label Studio's API token is the one the server uses.
    ls_env = services["labelstudio"]["environment"]
    ls_token = _REQUIRED_VAR.fullmatch(ls_env["LABEL_STUDIO_USER_TOKEN"])
    assert ls_token and ls_token.group(1) == "LABEL_STUDIO_TOKEN"


def test_config_interpolates_the_secrets(config) -> None:
    assert config.auth.bootstrap_admin_token.get_secret_value() == SECRETS["MODELCI_ADMIN_TOKEN"]
    assert config.annotator.token.get_secret_value() == SECRETS["LABEL_STUDIO_TOKEN"]
    for missing in SECRETS:
        env = {k: v for k, v in SECRETS.items() if k != missing}
        with pytest.raises(ConfigError, match=missing):
            load_config(CONFIG, env=env)


def test_dockerfile_installs_cpu_torch_without_torchvision() -> None:
    instructions = dockerfile_instructions()
    runs = [args for word, args in instructions if word == "RUN"]
    assert not any("torchvision" in args for _, args in instructions)
    torch_runs = [r for r in runs if re.search(r"\btorch==", r)]
    assert len(torch_runs) == 1
    words = shlex.split(torch_runs[0])
    assert TORCH_PIN in words
    assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert any(re.search(r"pip install -c docker/constraints\.txt \.(\s|$)", r) for r in runs)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{TORCH_PIN}"' in pyproject, "Dockerfile and pyproject pin the same torch"
    assert "torchvision" not in pyproject
    stages = [args for word, args in instructions if word == "FROM"]
    assert any("python:3.11-slim-bookworm" in args for word, args in instructions if word == "ARG")
    assert all(s.startswith("${PYTHON_IMAGE}") for s in stages)


def test_dockerfile_runtime_matches_compose(config, services: dict) -> None:
    instructions = dockerfile_instructions()
    last_stage = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    runtime = dict((word, args) for word, args in instructions[last_stage:])
    user = runtime["USER"]
    assert user and user not in ("root", "0")
    assert runtime["WORKDIR"] == str(config.server.data_dir)
    assert runtime["EXPOSE"] == str(config.server.port)
    cmd = exec_form(runtime["CMD"])
    assert cmd == ["modelci-e", "start", "/etc/modelci/config.yaml"]
    assert services["server"]["command"] == cmd
    assert services["worker"]["command"] == ["modelci-e", "worker", "/etc/modelci/config.yaml"]
    health = runtime["HEALTHCHECK"]
    assert "urllib" in health
    assert f"http://127.0.0.1:{config.server.port}/api/health" in health
    assert services["worker"]["healthcheck"] == {"disable": True}, "no HTTP server in a worker"
    assert "healthcheck" not in services["server"], "the server uses the image's healthcheck"


def test_dockerignore_keeps_secrets_out_and_sources_in() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for required in (".venv", ".modelci", ".git", "**/node_modules", "**/__pycache__"):
        assert required in patterns
    needed = ["pyproject.toml", "configs/compose.yaml", "cl_server/__init__.py",
              "plugin/__init__.py", "model_factory", "evaluator"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")
                       for p in patterns), f"{path} is excluded from the build context"


@pytest.mark.parametrize("name", ["constraints.txt", "label-studio-constraints.txt"])
def test_constraints_pin_every_package_and_run_installs_with_them(name: str) -> None:
    """``./run`` and the image install with pip constraints: each line one exact version."""
    lines = [line.strip() for line in (ROOT / "docker" / name).read_text().splitlines()]
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    assert len(pins) > 50 and all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())
    assert pins["pip"]
    if name == "constraints.txt":
        assert f"torch=={pins['torch']}" == TORCH_PIN
        assert "torchvision" not in pins and "modelci-e" not in pins
    else:
        # label-studio 1.23.2 asks for sentry-sdk>=2.16 but does not start on 3.x
        assert pins["label-studio"] == "1.23.2" and pins["sentry-sdk"].startswith("2.")
    assert f"docker/{name}" in (ROOT / "run").read_text()
