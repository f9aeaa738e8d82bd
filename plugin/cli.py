"""``modelci-e``: the command engineers run.

Commands:
    validate-config FILE...   check config files; exit 2 listing every invalid field
    start CONFIG              run the CL server for a config (embedded Redis/MongoDB/tritonserver
                              where the config gives no URL); attaches to running services
    demo                      a drifting digits service on an embedded Triton, updated live
                              (cl_server/config/demo.yaml; --no-traffic: only the server)
    worker [CONFIG]           run a job worker on the same Redis and store
    token create              issue an API token directly in the store (e.g. a lost admin token)
    proxy                     the request-collecting proxy in front of Triton / TF-Serving
    rollback                  serve an earlier version again (through the CL server's API)
    bench cl | stream | proxy | ingest | interference | ...
                              benchmarks (CL profiler, proactive training, proxy overhead,
                              collector ingest, training beside inference)
    openapi / config-schema   print the API document / the config's JSON schema
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from rich.console import Console
from rich.panel import Panel

from cl_server.config import ConfigError, ServiceConfig, load_config

console = Console(stderr=True, highlight=False)
EXIT_INVALID = 2


def demo_config_path(service: str = "image") -> Path:
    """The embedded config of the demo's ``image`` or ``text`` service."""
    name = "demo-text.yaml" if service == "text" else "demo.yaml"
    return Path(str(resources.files("cl_server.config").joinpath(name)))


def _phase_requests(_ctx: Any, _param: Any, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        counts = tuple(int(part) for part in value.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"expected positive request counts separated by commas, one "
                                 f"per phase (got {value!r})")
    return counts


def _load_or_exit(path: Path) -> ServiceConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        console.print(str(exc), markup=False)
        sys.exit(EXIT_INVALID)


def redact(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` for printing.

    >>> redact("mongodb://app:s3cret@db:27017/x"), redact("unix:///tmp/r.sock")
    ('mongodb://app:***@db:27017/x', 'unix:///tmp/r.sock')
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    sys.exit(1)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """ModelCI-e: continual learning for models served by Triton or TF-Serving."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


@cli.command("validate-config")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate_config(files: tuple[Path, ...]) -> None:
    """Check config FILES; print every invalid field by path; exit 2 if any is invalid."""
    failed = False
    for file in files:
        try:
            config = load_config(file)
        except ConfigError as exc:
            failed = True
            click.echo(str(exc), err=True)
            continue
        click.echo(f"{file}: ok (service '{config.name}', engine {config.engine.kind})")
    if failed:
        sys.exit(EXIT_INVALID)


def _engine_line(config: ServiceConfig, started: Any) -> str:
    if started.engine_url is None:
        return "none configured"
    embedded = " (embedded tritonserver)" if config.engine.url is None else ""
    return f"{started.engine_url}{embedded}"


def _run_server(config: ServiceConfig, data_dir: Path | None, host: str | None,
                port: int | None, workers: int | None, title: str) -> None:
    from cl_server.embedded import EmbeddedServiceError
    from cl_server.runtime import ServerRuntime
    from cl_server.store import StoreError

    runtime = ServerRuntime(config, data_dir=data_dir, host=host, port=port, workers=workers)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_keyboard_interrupt)
    try:
        try:
            started = runtime.start()
        except (EmbeddedServiceError, StoreError, OSError) as exc:
            _fail(str(exc))
        except redis.RedisError as exc:
            _fail(f"cache (Redis) unreachable: {exc}")
        lines = [(f"service     [bold]{config.name}[/] ({config.engine.kind}, "
                  f"model '{config.engine.model_name}')"),
                 f"dashboard   [bold cyan]{started.url}/[/]  (sign in with an API token)",
                 f"engine      {_engine_line(config, started)}",
                 f"API         [bold cyan]{started.url}/api[/]",
                 f"API docs    {started.url}/api/openapi.json",
                 f"health      {started.url}/api/health",
                 f"cache       {redact(started.cache_url)}",
                 f"store       {redact(started.store_uri)}",
                 f"data dir    {started.data_dir}"]
        if started.admin_token:
            lines.append(f"admin token [bold yellow]{started.admin_token}[/]  (shown once; "
                         "keep it: 'Authorization: Bearer <token>')")
        lines.append("Ctrl-C stops the server and everything it started.")
        console.print(Panel("\n".join(lines), title=title, expand=False))
        # Plain line for scripts that wait for the server (the panel may wrap).
        print(f"MODELCI_URL={started.url}", flush=True)
        runtime.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping...")
        runtime.stop()
        console.print("stopped.")


@cli.command()
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), help="Override server.data_dir.")
@click.option("--host", help="Override server.host.")
@click.option("--port", type=int, help="Override server.port (0: any free port).")
@click.option("--workers", type=int, help="Override queue.embedded_workers.")
def start(config_file: Path, data_dir: Path | None, host: str | None, port: int | None,
          workers: int | None) -> None:
    """Run the CL server for CONFIG_FILE (embedded Redis/MongoDB where no URL is set)."""
    config = _load_or_exit(config_file)
    _run_server(config, data_dir, host, port, workers, f"modelci-e: {config.name}")


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Default ./.modelci/demo, emptied at the start of each run "
                   "(--no-traffic: ./.modelci, kept).")
@click.option("--host", help="Default 127.0.0.1.")
@click.option("--port", type=int, help="Default 8080 (0: any free port).")
@click.option("--exit", "exit_after", is_flag=True,
              help="End after the summary instead of keeping the dashboard up.")
@click.option("--quick", is_flag=True, help="Shorter phases (about half).")
@click.option("--requests", "phase_requests", callback=_phase_requests, metavar="N,N[,N]",
              help="Requests per phase: image: stationary, new classes, rotated (3 counts); "
                   "text: Rotten Tomatoes, IMDB (2 counts).")
@click.option("--rate", type=click.FloatRange(min=0.1, max=1000.0),
              help="Requests per second (default 15 for image, 6 for text).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--screenshots", type=click.Path(path_type=Path),
              help="Save dashboard screenshots here after the summary (needs Playwright and "
                   "chromium: the test extras).")
@click.option("--service", type=click.Choice(["image", "text"]), default="image",
              show_default=True, help="image: LeNet-5 on MNIST digits (new classes, then "
              "rotated digits); text: movie-review sentiment over the offline MiniLM encoder "
              "(Rotten Tomatoes, then IMDB reviews).")
@click.option("--annotator", type=click.Choice(["auto", "label-studio", "simulated"]),
              default="auto", show_default=True,
              help="Where the annotation tasks go: a Label Studio the demo starts, or tasks "
                   "in the cache (simulated); auto: Label Studio when it is installed. A "
                   "simulated annotator answers them either way.")
@click.option("--no-traffic", is_flag=True,
              help="Only run the server on the embedded defaults (no demo traffic).")
def demo(data_dir: Path | None, host: str | None, port: int | None, exit_after: bool,
         quick: bool, phase_requests: tuple[int, ...] | None, rate: float | None, seed: int,
         screenshots: Path | None, service: str, annotator: str, no_traffic: bool) -> None:
    """A drifting image (or text) service on a real Triton, updated live: embedded Redis,
    store, tritonserver, CL server, a worker and the dashboard; traffic through the proxy in
    phases (stationary, new classes, rotated digits; text: Rotten Tomatoes, then IMDB),
    labeled through the annotation loop (Label Studio if installed); a summary at the end."""
    config = _load_or_exit(demo_config_path(service))
    if no_traffic:
        _run_server(config, data_dir, host, port, None, "modelci-e demo (embedded defaults)")
        return
    # Options are checked before the demo's modules (torch, the data) are imported.
    expected = 2 if service == "text" else 3
    if phase_requests is not None and len(phase_requests) != expected:
        _fail(f"--requests: the {service} demo has {expected} phases (got "
              f"{len(phase_requests)} counts)")
    if screenshots is not None:
        _screenshots_possible()
    if annotator == "label-studio":
        from cl_server.embedded.label_studio import INSTALL_HINT, label_studio_installed

        if not label_studio_installed():
            _fail(f"--annotator label-studio: Label Studio is not installed: {INSTALL_HINT}")
    from plugin.demo.run import TEXT_RATE, DemoSettings, run_demo

    if rate is None:
        rate = TEXT_RATE if service == "text" else 15.0
    settings = DemoSettings(
        data_dir=data_dir or DemoSettings.data_dir, host=host or DemoSettings.host,
        port=DemoSettings.port if port is None else port, rate=rate, quick=quick,
        requests=phase_requests, seed=seed, exit=exit_after, screenshots=screenshots,
        annotator=annotator, service=service,
        initial_per_class=400 if service == "text" else DemoSettings.initial_per_class)

    def banner(started: Any) -> None:
        what = ("MiniLM sentiment on movie reviews" if service == "text"
                else "LeNet-5 on MNIST digits")
        lines = [f"service     [bold]{config.name}[/] ({what})",
                 f"dashboard   [bold cyan]{started.url}/[/]",
                 f"engine      {started.engine_url} (embedded tritonserver)",
                 f"data dir    {started.data_dir}"]
        if started.admin_token:
            lines.append(f"admin token [bold yellow]{started.admin_token}[/]  (sign in to the "
                         "dashboard with it)")
        lines.append("Ctrl-C stops the demo and everything it started.")
        console.print(Panel("\n".join(lines), title="modelci-e demo", expand=False))
        print(f"MODELCI_URL={started.url}", flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_keyboard_interrupt)
    try:
        run_demo(settings, config, console, on_started=banner)
    except KeyboardInterrupt:
        console.print("stopped.")
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        _fail(str(exc))


def _screenshots_possible() -> None:
    """--screenshots needs Playwright (a test extra) and Debian's chromium: say so before the
    demo runs, not after."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("playwright") is None:
        _fail("--screenshots needs Playwright: install the test extras "
              "(pip install -e '.[test]'; ./run test does)")
    if shutil.which("chromium") is None:
        _fail("--screenshots needs chromium on PATH (Debian: apt-get install chromium)")


def _worker_settings(config_file: Path | None, data_dir: Path | None,
                     labels: tuple[str, ...] = ()) -> Any:
    from cl_server.embedded import read_endpoints
    from cl_server.queue import WorkerSettings
    from cl_server.runtime import (
        ENV_CACHE_URL,
        ENV_QUEUE,
        ENV_STORE_DB,
        ENV_STORE_URI,
        ENV_WORKER_LABELS,
    )

    if not labels:
        labels = tuple(x for x in os.environ.get(ENV_WORKER_LABELS, "").split(",") if x)
    if os.environ.get(ENV_CACHE_URL) and os.environ.get(ENV_STORE_URI):
        return WorkerSettings(os.environ[ENV_CACHE_URL], os.environ[ENV_STORE_URI],
                              os.environ.get(ENV_STORE_DB, "modelci"),
                              os.environ.get(ENV_QUEUE, "modelci"), labels)
    config = _load_or_exit(config_file or demo_config_path())
    from cl_server.deploy import ENV_DATA_DIR

    # CL jobs write artifacts and routing tables under the server's data dir.
    os.environ.setdefault(ENV_DATA_DIR, str((data_dir or config.server.data_dir).resolve()))
    cache_url, store_uri = config.cache.url, config.store.uri
    if cache_url is None or store_uri is None:
        directory = data_dir or config.server.data_dir
        endpoints = read_endpoints(directory)
        if endpoints is None:
            _fail(f"the config sets no cache.url/store.uri and no 'modelci-e start' runs with "
                  f"data dir {directory.resolve()}: start the server first or set the URLs")
        cache_url = cache_url or endpoints.cache_url
        store_uri = store_uri or endpoints.store_uri
    return WorkerSettings(cache_url, store_uri, config.store.database, config.queue.name,
                          labels)


def _labels(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    from cl_server.config.schema import WORKER_LABEL_PATTERN

    labels = tuple(x.strip() for x in value.split(",") if x.strip())
    bad = [x for x in labels if not re.match(WORKER_LABEL_PATTERN, x)]
    if bad:
        raise click.BadParameter(f"{', '.join(repr(b) for b in bad)}: a label is lower-case "
                                 "letters, digits, '_' or '-' (at most 20)")
    if len(set(labels)) > 4:
        raise click.BadParameter("at most 4 labels")
    return labels


@cli.command()
@click.argument("config_file", required=False, type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Where a local 'modelci-e start' keeps its embedded services.")
@click.option("--name", help="Worker name (default: host and a random suffix).")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--labels", callback=_labels, metavar="A,B",
              help="This worker's labels (e.g. gpu): it also runs the jobs of services whose "
                   "scheduling.worker_labels it has.")
def worker(config_file: Path | None, data_dir: Path | None, name: str | None,
           burst: bool, labels: tuple[str, ...]) -> None:
    """Run a job worker. Any machine reaching the same Redis and store can run more."""
    from cl_server.queue import run_worker
    from cl_server.store import StoreError

    settings = _worker_settings(config_file, data_dir, labels)
    try:
        run_worker(settings, name=name, burst=burst)
    except StoreError as exc:
        _fail(str(exc))
    except redis.RedisError as exc:
        _fail(f"cache (Redis) unreachable: {exc}")


@cli.group()
def token() -> None:
    """Manage API tokens directly in the store (when no admin token is at hand)."""


@token.command("create")
@click.argument("config_file", required=False, type=click.Path(path_type=Path))
@click.option("--user", default="admin", show_default=True)
@click.option("--role", type=click.Choice(["viewer", "researcher", "engineer", "admin"]),
              help="Create the user with this role if it does not exist.")
@click.option("--label", default="cli", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path))
def token_create(config_file: Path | None, user: str, role: str | None, label: str,
                 data_dir: Path | None) -> None:
    """Issue a token for USER and print it (once)."""
    from cl_server.auth import issue_token
    from cl_server.embedded import EmbeddedServices, read_endpoints
    from cl_server.store import MongoStore, User

    config = _load_or_exit(config_file or demo_config_path())
    directory = (data_dir or config.server.data_dir).resolve()
    embedded = None
    uri = config.store.uri
    if uri is None:
        endpoints = read_endpoints(directory)
        if endpoints is None or endpoints.store_uri is None:
            embedded = EmbeddedServices(directory, cache=False, store=True)
            endpoints = embedded.start()
        uri = endpoints.store_uri
    store = MongoStore(uri, config.store.database)
    try:
        if store.get_user(user) is None:
            if role is None:
                _fail(f"user '{user}' does not exist; pass --role to create it")
            store.add_user(User(name=user, role=role))  # type: ignore[arg-type]
        _, clear = issue_token(store, user, label)
        click.echo(clear)
    finally:
        store.close()
        if embedded is not None:
            embedded.stop()


@cli.command()
def openapi() -> None:
    """Print the API's OpenAPI 3.1 document."""
    import cl_server.api  # noqa: F401 - registers every route
    from cl_server import __version__
    from cl_server.api.spec import openapi_document

    click.echo(json.dumps(openapi_document("ModelCI-e CL server", __version__), indent=2))


@cli.group()
def bench() -> None:
    """Benchmarks (the CL profiler)."""


@bench.command("cl")
@click.option("--scenario", default="split-mnist", show_default=True,
              help="Scenario name (split-mnist, split-digits, rotated-mnist, ...).")
@click.option("--strategies", default="naive,ewc,si,lwf,mas,replay,proactive,full-retrain",
              show_default=True, help="Comma-separated strategies.")
@click.option("--seeds", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--epochs", type=click.IntRange(1, 100), default=None,
              help="Epochs per experience (default 2; 1 with --quick).")
@click.option("--template", default=None, help="Model template (default mlp 400-400).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench-results/cl"),
              show_default=True)
@click.option("--quick", is_flag=True, help="Small suite for CI: split-digits, 1 seed, 1 epoch.")
def bench_cl(scenario: str, strategies: str, seeds: int, epochs: int | None,
             template: str | None, out_dir: Path, quick: bool) -> None:
    """Run CL strategies over a scenario and seeds; print ACC/BWT/FWT/forgetting and cost."""
    import torch
    from rich.progress import Progress
    from rich.table import Table

    from evaluator.profiler import PROFILER_STRATEGIES, BenchSettings, run_strategy
    from evaluator.report import table_rows, write_report
    from model_factory.scenarios import make_scenario

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in PROFILER_STRATEGIES]
    if unknown or not names:
        console.print(f"--strategies: unknown strategy {', '.join(map(repr, unknown)) or '(none)'}"
                      f" (expected some of: {', '.join(PROFILER_STRATEGIES)})", markup=False)
        sys.exit(EXIT_INVALID)
    if quick:
        scenario, seeds = ("split-digits" if scenario == "split-mnist" else scenario), 1
    settings = BenchSettings(epochs=epochs or (1 if quick else 2),
                             buffer_size=200 if quick else 500,
                             **({"template": template, "template_params": {}} if template else {}))
    # Sentence encoding runs at ~10 long reviews/s on this CPU: text scenarios are subsampled.
    options = {"n_per_domain": 150 if quick else 1000} if scenario.startswith("text-") else {}
    try:
        built = [make_scenario(scenario, seed=seed, **options) for seed in range(seeds)]
    except ValueError as exc:
        console.print(f"--scenario: {exc}", markup=False)
        sys.exit(EXIT_INVALID)
    results = []
    steps = seeds * len(names) * len(built[0].experiences)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{scenario}: {len(names)} strategies x {seeds} seeds",
                                 total=steps)
        for seed, scn in enumerate(built):
            for name in names:
                progress.update(task, description=f"{scenario} seed {seed}: {name}")
                try:
                    results.append(run_strategy(scn, name, seed, settings,
                                                lambda _: progress.advance(task)))
                except ValueError as exc:
                    _fail(f"{name} (seed {seed}): {exc}")
    rows = table_rows(results)
    table = Table(title=f"{scenario} - {seeds} seed(s), {settings.epochs} epoch(s)/experience, "
                        f"accuracies in %")
    for header in rows[0]:
        table.add_column(header, justify="left" if header == "strategy" else "right")
    for row in rows[1:]:
        table.add_row(*row)
    Console(width=max(132, Console().width)).print(table)
    meta = {"scenario": scenario, "seeds": seeds, "strategies": names, "quick": quick,
            "settings": {k: v for k, v in vars(settings).items()}}
    for path in write_report(results, meta, out_dir):
        console.print(f"wrote {path}")


@bench.command("stream")
@click.option("--dataset", type=click.Choice(["mnist", "digits"]), default="mnist",
              show_default=True)
@click.option("--updates", type=click.IntRange(2, 100), default=10, show_default=True)
@click.option("--samples-per-update", type=click.IntRange(8, 100_000), default=400,
              show_default=True)
@click.option("--epochs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Epochs of each full retraining.")
@click.option("--trigger", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="t: new samples per proactive step.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=32, show_default=True,
              help="b: samples per step (proactive, online and full retraining).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/stream"), show_default=True)
@click.option("--quick", is_flag=True, help="digits, 4 updates of 128: for CI.")
def bench_stream(dataset: str, updates: int, samples_per_update: int, epochs: int, trigger: int,
                 batch_size: int, seed: int, out_dir: Path, quick: bool) -> None:
    """Proactive training vs full retraining on a stream: accuracy and cost per update."""
    import torch
    from rich.table import Table

    from evaluator.stream_bench import StreamSettings, run_stream

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if quick:
        dataset, updates, samples_per_update = "digits", 4, 128
    settings = StreamSettings(dataset=dataset, updates=updates,
                              samples_per_update=samples_per_update,
                              test_size=300 if dataset == "digits" else 600, epochs=epochs,
                              batch_size=batch_size, trigger=trigger, seed=seed)
    try:
        with console.status("training over the stream..."):
            results = run_stream(settings)
    except ValueError as exc:
        console.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_INVALID)
    full = results["full-retrain"].summary()
    table = Table(title=f"{dataset} stream: {updates} updates x {samples_per_update} samples; "
                        f"proactive t={trigger}, b={batch_size}; full retrain {epochs} epochs")
    for header in ("strategy", "final acc %", "prequential %", "samples trained",
                   "vs full retrain", "train s", "cost update N / 1", "time update N / 1"):
        table.add_column(header, justify="left" if header == "strategy" else "right")
    summaries = {}
    for name, result in results.items():
        row = summaries[name] = result.summary()
        table.add_row(name, f"{row['final_accuracy'] * 100:.1f}",
                      f"{row['mean_prequential'] * 100:.1f}", f"{row['total_samples']:.0f}",
                      f"{row['total_samples'] / full['total_samples'] * 100:.1f}%",
                      f"{row['total_wall_s']:.2f}", f"{row['cost_last_over_first']:.2f}",
                      f"{row['wall_last_over_first']:.2f}")
    Console(width=max(132, Console().width)).print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "stream.json"
    path.write_text(json.dumps({"settings": vars(settings), "summary": summaries,
                                "per_update": {n: vars(r) for n, r in results.items()}},
                               indent=2, default=list))
    console.print(f"wrote {path}")


@bench.command("proxy")
@click.option("--rate", type=click.FloatRange(1, 5000), default=200, show_default=True,
              help="Requests per second.")
@click.option("--duration", "duration_s", type=click.FloatRange(1, 3600), default=20,
              show_default=True, help="Seconds of traffic per target (direct, proxy).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/proxy"), show_default=True)
@click.option("--quick", is_flag=True, help="50 requests/s for 3 s per target: for CI.")
def bench_proxy(rate: float, duration_s: float, out_dir: Path, quick: bool) -> None:
    """Proxy vs direct Triton latency side by side, collection losses, deploy under traffic."""
    from rich.table import Table

    from evaluator.proxy_bench import ProxyBenchSettings, run_proxy_bench

    if quick:
        rate, duration_s = 50, 3
    settings = ProxyBenchSettings(rate=rate, duration_s=duration_s,
                                  deploy_traffic_s=1.0 if quick else 3.0)
    with console.status("starting redis, tritonserver and the proxy; sending traffic..."):
        result = run_proxy_bench(settings)
    table = Table(title=f"KServe V2 binary requests at {rate:g}/s, {duration_s:g} s per target "
                        f"(load average {result['load_average'][0]:.2f})")
    for header in ("target", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "mean ms"):
        table.add_column(header, justify="left" if header == "target" else "right")
    for name, row in result["latency"].items():
        table.add_row(name, str(row["requests"]), str(row["errors"]), f"{row['p50_ms']:.3f}",
                      f"{row['p95_ms']:.3f}", f"{row['p99_ms']:.3f}", f"{row['mean_ms']:.3f}")
    over = result["overhead_ms"]
    table.add_row("proxy - direct", "", "", f"{over['p50_ms']:+.3f}", f"{over['p95_ms']:+.3f}",
                  f"{over['p99_ms']:+.3f}", f"{over['mean_ms']:+.3f}")
    Console(width=max(100, Console().width)).print(table)
    collected, deploy = result["collector"], result["deploy"]
    console.print(f"collector: {collected['proxied_ok']} answered through the proxy, "
                  f"{collected['written']} written, {collected['dropped']} dropped, stream "
                  f"length {collected['stream_length']}", markup=False)
    phases = deploy["under_traffic"]
    console.print(f"deploy v2 under traffic: {phases['total_s']:.2f} s (write "
                  f"{phases['write_s']:.2f}, load {phases['load_s']:.2f}, warm-up "
                  f"{phases['warmup_s']:.2f}); {deploy['failed_during']} failed of "
                  f"{deploy['requests_during']} requests", markup=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "proxy.json"
    path.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {path}")


@bench.command("interference")
@click.option("--templates", default="mlp,lenet5,resnet18", show_default=True,
              help="Training jobs, comma separated: mlp, lenet5, resnet18.")
@click.option("--rate", type=click.FloatRange(1, 2000), default=50, show_default=True,
              help="Inference requests per second through the proxy.")
@click.option("--slo-ratio", type=click.FloatRange(1, 10), default=1.2, show_default=True,
              help="slo-aware: the SLO as a multiple of the p95 measured before the job.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/interference"), show_default=True)
@click.option("--policies", default="immediate,limits-only,slo-aware", show_default=True,
              help="Policies run beside traffic, comma separated (off-peak always runs).")
@click.option("--repeats", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Runs of each model under each policy; the target is judged on the "
              "medians (this machine's speed drifts from run to run).")
@click.option("--quick", is_flag=True, help="The MLP only, short jobs and idle phase: for CI.")
def bench_interference(templates: str, rate: float, slo_ratio: float, out_dir: Path,
                       policies: str, repeats: int, quick: bool) -> None:
    """Inference latency while CL updates train beside it, per scheduling policy."""
    from evaluator.interference_bench import (
        SHAPES,
        InterferenceSettings,
        run_interference_bench,
        write_report,
    )

    names = tuple(t.strip() for t in templates.split(",") if t.strip())
    unknown = [t for t in names if t not in SHAPES]
    if unknown or not names:
        raise click.BadParameter(f"unknown template(s) {', '.join(unknown) or '(none)'} "
                                 f"(expected: {', '.join(SHAPES)})", param_hint="--templates")
    chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
    known = InterferenceSettings.policies  # the default runs every one
    if not chosen or any(p not in known for p in chosen):
        raise click.BadParameter(f"unknown policies {policies!r} (expected some of: "
                                 f"{', '.join(known)})", param_hint="--policies")
    settings = InterferenceSettings(templates=("mlp",) if quick else names, rate=rate,
                                    policies=chosen,
                                    slo_ratio=slo_ratio, quick=quick, repeats=repeats,
                                    idle_s=4.0 if quick else 20.0,
                                    settle_s=1.0 if quick else 2.0,
                                    before_s=3.0 if quick else 10.0,
                                    after_s=3.0 if quick else 10.0)
    with console.status("starting redis, tritonserver and the proxy; training beside "
                        "traffic..."):
        result = run_interference_bench(settings)
    table, plot = write_report(result, out_dir)
    (out_dir / "interference.json").write_text(json.dumps(result, indent=2))
    console.print(table.read_text(), markup=False)
    console.print(f"wrote {table}, {plot} and {out_dir / 'interference.json'}")


@bench.command("loop")
@click.option("--rate", type=click.FloatRange(1, 200), default=20, show_default=True,
              help="Requests per second through the proxy.")
@click.option("--stationary", "stationary_s", type=click.FloatRange(5, 600), default=15,
              show_default=True, help="Seconds of classes 0-4 before the onset.")
@click.option("--max", "max_s", type=click.FloatRange(10, 1200), default=120,
              show_default=True, help="Seconds after the onset at most.")
@click.option("--after-onset", type=click.Choice(["new", "all"]), default="new",
              show_default=True, help="new: classes 5-9 replace 0-4; all: they join them.")
@click.option("--strategy", type=click.Choice(["naive", "ewc", "si", "lwf", "mas", "proactive",
                                               "full-retrain"]), default="naive",
              show_default=True, help="The service's CL strategy (full-retrain: the reference).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/loop"), show_default=True)
@click.option("--quick", is_flag=True, help="40 requests/s, 30 s after the onset: for CI.")
def bench_loop(rate: float, stationary_s: float, max_s: float, after_onset: str, strategy: str,
               seed: int, out_dir: Path, quick: bool) -> None:
    """The whole CL loop on real parts: new classes appear; time to a deployed better model."""
    from evaluator.loop_bench import LoopBenchSettings, run_loop_bench

    if quick:
        rate, stationary_s, max_s = 40, 8, 30
    settings = LoopBenchSettings(rate=rate, stationary_s=stationary_s, max_s=max_s, seed=seed,
                                 after_onset=after_onset, strategy=strategy)
    with console.status("starting redis, the store, tritonserver, a worker, the proxy and the "
                        "CL loop; sending traffic..."):
        result = run_loop_bench(settings)
    drift, acc = result["drift"], result["accuracy"]

    def fmt(value: float | None, spec: str = ".2f", unit: str = " s") -> str:
        return "never" if value is None else f"{value:{spec}}{unit}"

    click.echo(f"{result['requests']['stationary']} requests before the onset, "
               f"{result['requests']['drifted']} after, {result['requests']['errors']} errors; "
               f"load average {result['load_average'][0]:.2f}")
    click.echo(f"drift onset -> first alarm {fmt(drift['first_alarm_after_onset_s'])}; alarm -> "
               f"job enqueued {fmt(drift['alarm_to_job_enqueued_s'], '.3f')} (from: "
               f"{drift['job_waited_for']}); false alarms "
               f"before the onset: {drift['false_alarms_before_onset']}")
    click.echo(f"drift onset -> validated challenger deployed on Triton: "
               f"{fmt(result['onset_to_deployed_s'])}")
    click.echo(f"prequential accuracy: pre-drift {fmt(acc['pre_drift'], '.1%', '')}, no-update "
               f"baseline {fmt(acc['no_update_baseline'], '.1%', '')}, from the first deployment "
               f"{fmt(acc['after_first_deployment'], '.1%', '')}, last version "
               f"{fmt(acc['last_version'], '.1%', '')}; within 2 points after "
               f"{fmt(acc['recovered_within_2_points_after_s'])}")
    for job in result["jobs"]:
        gates = f" (failed: {', '.join(job['failed_gates'])})" if job["failed_gates"] else ""
        click.echo(f"  job at {job['created_after_onset_s']:+.1f} s: {job['trigger']} -> "
                   f"{job['scenario'] or '-'}, {job['outcome'] or job['status']}{gates}"
                   + (f", version {job['version']}" if job["version"] else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "loop.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"wrote {path}")


@bench.command("deploy")
@click.option("--templates", default="mlp,lenet5", show_default=True,
              help="Comma-separated model templates for the MNIST-5k stream.")
@click.option("--methods", default=None, help="Comma-separated: full, full-warm, topk:R, "
              "randomk:R (R of each tensor per step), dpu:K (K of the weights), each optionally "
              "@fp32, @fp16 or @q8 (how its patches carry weights; default --values); default: "
              "full, full-warm, top-k at 1, 0.1 and 0.01%, random-k at 1%, DPU at 0.75, 1, 5 and "
              "10%.")
@click.option("--updates", type=click.IntRange(1, 10), default=10, show_default=True)
@click.option("--no-resnet", is_flag=True, help="Skip the ResNet-18-like size measurement.")
@click.option("--values", type=click.Choice(["fp32", "fp16", "q8"]), default="fp32",
              show_default=True, help="How patches carry weights (fp16, q8: the deployed models "
              "hold the weights as they arrive).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--seeds", default=None, help="Comma-separated seeds: every stream once per seed, "
              "means reported (overrides --seed).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/deploy"), show_default=True)
@click.option("--quick", is_flag=True, help="sklearn digits, MLP, 3 methods, 3 updates: for CI.")
def bench_deploy(templates: str, methods: str | None, updates: int, no_resnet: bool,
                 values: str, seed: int, seeds: str | None, out_dir: Path, quick: bool) -> None:
    """Full against sparse (top-k, random-k) and partial (DPU) updates: accuracy, bytes shipped,
    training time, replica apply time."""
    from rich.table import Table

    from evaluator.deploy_bench import (
        METHODS,
        DeploySettings,
        run_deploy_bench,
        write_plots,
    )

    try:
        seed_list = tuple(int(s) for s in (seeds or "").split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"'{seeds}' is not a comma-separated list of integers",
                                 param_hint="--seeds") from None
    if any(s < 0 for s in seed_list):
        raise click.BadParameter("seeds must be 0 or more", param_hint="--seeds")
    settings = DeploySettings.quick() if quick else DeploySettings(
        templates=tuple(t for t in templates.split(",") if t),
        methods=tuple(m for m in (methods or ",".join(METHODS)).split(",") if m),
        updates=updates, resnet=not no_resnet, values=values, seed=seed, seeds=seed_list)
    try:
        with console.status("training and deploying every method over the stream..."):
            result = run_deploy_bench(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for template, runs in result["streams"].items():
        table = Table(title=f"{settings.dataset} stream, {template} ({settings.updates} updates, "
                            f"seeds {','.join(map(str, settings.seeds or (settings.seed,)))}; "
                            f"load average {result['load_average'][0]:.2f})")
        for column in ("method", "final acc %", "prequential %", "bytes/update",
                       "of full %", "paper bytes", "weights changed %", "shipped",
                       "train s/update", "replica apply ms"):
            table.add_column(column, justify="right")
        full = runs.get("full")
        for method, run in runs.items():
            share = run["bytes_per_update"] / full["bytes_per_update"] if full else \
                run["share_of_dense"]
            spread = f" ± {100 * run['final_accuracy_sd']:.1f}" if len(run["seeds"]) > 1 else ""
            table.add_row(method, f"{100 * run['final_accuracy']:.1f}{spread}",
                          f"{100 * run['mean_prequential']:.1f}",
                          f"{run['bytes_per_update']:,.0f}", f"{100 * share:.2f}",
                          f"{run['paper_bytes_per_update']:,.0f}",
                          f"{100 * run['changed_share']:.2f}", f"{run['shipped']:.1f}",
                          f"{run['train_s_per_update']:.2f}", f"{run['apply_ms']:.2f}")
        console.print(table)
    for template, check in result["target"].items():
        verdict = ", ".join(
            f"{r['method']} ({100 * r['share_of_full']:.2f}% of full's bytes, "
            f"{r['points_vs_full']:+.1f} pt vs full"
            + (f", {r['points_vs_full_warm']:+.1f} vs full-warm" if r["points_vs_full_warm"]
               is not None else "") + ")" for r in check["within_bytes"] if r["met"])
        console.print(f"{template}: target (<= 1% of full's bytes, final accuracy at most 0.5 "
                      f"point below full) " + (f"met by {verdict}" if verdict else "not met"))
    if result["resnet18"]:
        resnet = result["resnet18"]
        table = Table(title=f"ResNet-18-like, {resnet['weights']:,} weights, one update")
        for column in ("method", "bytes", "of dense %", "decode ms", "apply ms", "verify ms",
                       "total ms"):
            table.add_column(column, justify="right")
        for method, row in resnet["methods"].items():
            table.add_row(method, f"{row['bytes']:,}", f"{100 * row['share_of_dense']:.3f}",
                          f"{row['decode_ms']:.1f}", f"{row['apply_ms']:.1f}",
                          f"{row['verify_ms']:.1f}", f"{row['total_ms']:.1f}")
        console.print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "deploy.json"
    path.write_text(json.dumps(result, indent=2))
    plots = write_plots(result, out_dir)
    console.print(f"wrote {path}, {', '.join(str(p) for p in plots)}")


@bench.command("annotation")
@click.option("--budget", type=click.FloatRange(0, 1, min_open=True), default=0.1,
              show_default=True, help="Share of the served pool each selector gets labeled.")
@click.option("--rounds", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Rounds the budget is spent in (select with the current model, update).")
@click.option("--seeds", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--template", type=click.Choice(["mlp", "lenet5"]), default="lenet5",
              show_default=True, help="lenet5: the demo image service's model; mlp: "
              "784-400-400.")
@click.option("--update", type=click.Choice(["champion", "current"]), default="champion",
              show_default=True, help="champion: each update retrains from the champion on all "
              "labels so far; current: it fine-tunes the last model on the round's labels.")
@click.option("--min-steps", type=click.IntRange(1, 100_000), default=800, show_default=True,
              help="Optimizer steps an update makes at least (more epochs on few labels).")
@click.option("--out-dir", "--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/annotation"), show_default=True)
@click.option("--sync-samples", type=click.IntRange(0, 100_000), default=None,
              help="Annotations synced through a real Label Studio (it is started on a fresh "
              "data dir); 0: skip that part.  [default: 1000; 100 with --quick]")
@click.option("--quick", is_flag=True, help="1 seed, a 600-sample pool, 3 rounds, a smaller "
              "MLP, 100 annotations synced: for CI.")
def bench_annotation(budget: float, rounds: int, seeds: int, template: str, update: str,
                     min_steps: int, out_dir: Path, sync_samples: int | None,
                     quick: bool) -> None:
    """Which samples to label (active-learning selectors at a labeling budget against labeling
    everything, on new classes, MNIST-5k) and how fast annotations sync with Label Studio."""
    from dataclasses import replace

    from rich.table import Table

    from evaluator.annotation_bench import (
        SELECTION_COLUMNS,
        AnnotationBenchSettings,
        SelectionBenchSettings,
        run_annotation_bench,
        selection_rows,
        target_line,
        write_report,
    )
    from evaluator.annotation_sync_bench import SyncBenchSettings, sync_report_lines

    selection = replace(SelectionBenchSettings.quick(), budget=budget, template=template,
                        update=update) if quick else SelectionBenchSettings(
        budget=budget, rounds=rounds, seeds=seeds, template=template, update=update,
        min_steps=min_steps)
    try:
        with console.status("training the champion and every selection arm...") as status:
            samples = sync_samples if sync_samples is not None else 100 if quick else 1000
            result = run_annotation_bench(
                AnnotationBenchSettings(selection=selection, sync=SyncBenchSettings(
                    samples=samples) if samples else None),
                progress=lambda step: status.update(f"{step}..."))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    part = result["selection"]
    table = Table(title=f"selection: {part['budget_labels']} labels of {part['pool']:,} in "
                        f"{selection.rounds} rounds, {selection.template}, update from the "
                        f"{selection.update} model, {selection.seeds} seed(s): mean (min); "
                        f"load average {result['load_average'][0]:.2f}")
    for column in SELECTION_COLUMNS:
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in selection_rows(part):
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)
    console.print(target_line(part), markup=False)
    if "sync" in result:
        console.print("\n".join(sync_report_lines(result["sync"])[2:]), markup=False)
    paths = write_report(result, out_dir)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", markup=False)


@bench.command("dashboard")
@click.option("--runs", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Page loads per viewport (each cold, then warm).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/dashboard"), show_default=True)
def bench_dashboard(runs: int, out_dir: Path) -> None:
    """First load of the built dashboard in headless Chromium, and its bundle size."""
    from rich.table import Table

    from evaluator.dashboard_bench import DashboardBenchSettings, run_dashboard_bench

    try:
        with console.status("starting the CL server and chromium; loading the overview..."):
            result = run_dashboard_bench(DashboardBenchSettings(runs=runs))
    except (RuntimeError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"dashboard first load ({runs} runs per viewport, load average "
                        f"{result['load_average'][0]:.2f})")
    for column in ("viewport", "cold median ms", "cold max ms", "warm median ms",
                   "DOMContentLoaded ms"):
        table.add_column(column, justify="right")
    for viewport, loads in result["first_load_ms"].items():
        table.add_row(viewport, f"{loads['cold']['median']:.0f}", f"{loads['cold']['max']:.0f}",
                      f"{loads['warm']['median']:.0f}",
                      f"{loads['dom_content_loaded']['median']:.0f}")
    console.print(table)
    console.print(f"bundle: {result['bundle_gzip_bytes'] / 1000:.1f} kB gzip in "
                  f"{len(result['bundle_files'])} files (target <= 400 kB); first-load target "
                  f"< 1000 ms")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "dashboard.json"
    path.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {path}")


@bench.command("ingest")
@click.option("--duration", "duration_s", type=click.FloatRange(0.5, 600), default=10,
              show_default=True, help="Seconds per measured path.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("bench-results/ingest"), show_default=True)
@click.option("--quick", is_flag=True, help="2 s per path: for CI.")
def bench_ingest(duration_s: float, batch: int, out_dir: Path, quick: bool) -> None:
    """Collector ingest throughput into the embedded Redis, beside raw pipelined XADD."""
    from evaluator.ingest_bench import IngestBenchSettings, run_ingest_bench

    settings = IngestBenchSettings(duration_s=2 if quick else duration_s, batch=batch)
    with console.status("starting redis and the store; ingesting..."):
        result = run_ingest_bench(settings)
    raw, collected = result["raw"], result["collector"]
    click.echo(f"raw pipelined XADD (redis-py): {raw['records_per_s']:,} records/s")
    if result["redis_benchmark_xadd_per_s"] is not None:
        click.echo(f"redis-benchmark XADD: {result['redis_benchmark_xadd_per_s']:,.0f} requests/s")
    click.echo(f"collector ingest: {collected['records_per_s']:,} records/s "
               f"({collected['records']:,} offered, {collected['stored']:,} stored, "
               f"{result['lost']} lost; batches of {batch}, load average "
               f"{result['load_average'][0]:.2f})")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ingest.json"
    path.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {path}")


@cli.command()
@click.option("--engine", type=click.Choice(["triton", "tfserving"]), required=True)
@click.option("--upstream", required=True, help="The engine's HTTP endpoint (http://host:port).")
@click.option("--model", "model_name", required=True, help="Model name inside the engine.")
@click.option("--service", required=True, help="Service name (metrics, Redis stream key).")
@click.option("--routing", type=click.Path(path_type=Path), required=True,
              help="The service's routing table (JSON, written by the serving adapter).")
@click.option("--redis-url", help="Cache URL the served requests go to; none: not collected.")
@click.option("--sampling-ratio", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option("--spool-dir", type=click.Path(path_type=Path), default=Path(".modelci/spool"),
              show_default=True, help="Where records wait on disk while Redis is unreachable.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="0: any free port (the URL is printed).")
def proxy(engine: str, upstream: str, model_name: str, service: str, routing: Path,
          redis_url: str | None, sampling_ratio: float, spool_dir: Path, host: str,
          port: int) -> None:
    """Run the request-collecting proxy: clients use it exactly like the engine."""
    from plugin.proxy.app import InferenceProxy
    from plugin.proxy.collector import RequestCollector
    from plugin.proxy.runner import serve
    from plugin.serving.base import check_model_name
    from plugin.serving.routing import RoutingTable

    try:
        check_model_name(model_name)
    except ValueError as exc:
        _fail(f"--model: {exc}")
    collector = RequestCollector(redis_url, service, engine, spool_dir=spool_dir) \
        if redis_url else None
    app = InferenceProxy(engine, upstream, model_name, service, RoutingTable(routing), collector,
                         sampling_ratio=sampling_ratio)

    def ready(url: str) -> None:
        click.echo(f"MODELCI_PROXY_URL={url}", err=False)
        sys.stdout.flush()
        console.print(f"proxy for {engine} at {redact(upstream)} listening on {url} "
                      f"(metrics: {url}/metrics)", markup=False)

    try:
        serve(app, host, port, ready)
    finally:
        if collector is not None:
            collector.close()


def _server_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--url`` (env MODELCI_URL) and ``--service``: the commands that call the CL server."""
    command = click.option("--service", required=True)(command)
    return click.option("--url", envvar="MODELCI_URL", required=True,
                        help="The CL server (env MODELCI_URL), e.g. http://127.0.0.1:8080.")(
        command)


@cli.command()
@_server_options
@click.option("--to", "version", type=click.IntRange(1), required=True,
              help="The version to serve again.")
def rollback(url: str, service: str, version: int) -> None:
    """Roll a service back to an earlier version (token from env MODELCI_TOKEN, role engineer)."""
    event = _api_post(url, f"/api/services/{service}/rollback", {"version": version},
                      "rollback", "an engineer's or admin's")
    click.echo(f"{service}: version {event['version']} is the champion again (was "
               f"{event['previous_version']}); {event['detail']}")


@cli.command()
@click.option("--server", envvar="MODELCI_URL", required=True,
              help="The CL server (env MODELCI_URL), e.g. http://127.0.0.1:8080.")
@click.option("--service", required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8500, show_default=True)
@click.option("--poll", "poll_s", type=click.FloatRange(0.01, 3600), default=1.0,
              show_default=True, help="Seconds between checks for new patches.")
@click.option("--redis", "redis_url", default=None,
              help="Redis of the CL server, to hear of new patches at once (optional).")
@click.option("--output-name", default="probabilities", show_default=True)
@click.option("--swap-log", type=click.Path(path_type=Path), default=None,
              help="Append each state switched to (publication, version, sha256), as JSON lines.")
def replica(server: str, service: str, host: str, port: int, poll_s: float,
            redis_url: str | None, output_name: str, swap_log: Path | None) -> None:
    """Keep a replica of a service's model fresh through weight patches and serve it (KServe V2
    JSON on HOST:PORT; token from env MODELCI_TOKEN, role viewer)."""
    from plugin.replica.agent import ReplicaAgent
    from plugin.replica.server import run_replica

    token = os.environ.get("MODELCI_TOKEN")
    if not token:
        _fail("set MODELCI_TOKEN to an API token (any role)")
    torch_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    import torch

    torch.set_num_threads(max(1, torch_threads))
    agent = ReplicaAgent(server, service, token=token, poll_s=poll_s, redis_url=redis_url,
                         swap_log=swap_log)
    print(f"MODELCI_REPLICA_URL=http://{host}:{port}", flush=True)
    run_replica(agent, host, port, output_name)


@cli.command("data-query")
@_server_options
@click.option("--version", "version", type=click.IntRange(1), required=True,
              help="The version whose training data to check.")
def data_query(url: str, service: str, version: int) -> None:
    """Re-run the store query that gave a version its training samples and compare the digest
    of the ids it returns with the one recorded by its job (exit 1 if they differ; token from
    env MODELCI_TOKEN, role researcher)."""
    check = _api_post(url, f"/api/services/{service}/versions/{version}/data-query/verify",
                      None, "data query check", "a researcher's, engineer's or admin's")
    click.echo(f"query: {json.dumps(check['query'])}")
    click.echo(f"recorded: {check['sample_count']} samples, sha256 of their ids "
               f"{check['digest']}")
    if not check["matches"]:
        _fail(f"version {version}: the query no longer returns exactly the samples it was "
              f"trained on")
    click.echo(f"version {version}: the query returns exactly the same samples")


def _api_post(url: str, path: str, body: dict[str, Any] | None, what: str,
              role: str) -> dict[str, Any]:
    """POST to the CL server with the token of env MODELCI_TOKEN; exit 1 with the server's
    message on any refusal."""
    import requests

    token = os.environ.get("MODELCI_TOKEN")
    if not token:
        _fail(f"set MODELCI_TOKEN to {role} API token")
    try:
        answer = requests.post(f"{url.rstrip('/')}{path}", json=body, timeout=600,
                               headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        _fail(f"CL server at {redact(url)} unreachable: {exc}")
    if answer.status_code != 200:
        try:
            message = answer.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.text[:500]
        _fail(f"{what} refused (HTTP {answer.status_code}): {message}")
    return answer.json()


@cli.command("config-schema")
def config_schema() -> None:
    """Print the JSON schema of the service config."""
    click.echo(json.dumps(ServiceConfig.model_json_schema(), indent=2))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
