"""The service configuration: one typed schema for the YAML file an engineer writes.

One file describes one served model (its engine, model, drift detection, triggers, CL envelope,
validation gates, deployment and annotator) plus the infrastructure the CL server runs on (cache,
store, queue, auth, HTTP server). Every field is checked once, at the edge, by
:func:`cl_server.config.loader.load_config`; inner code receives these frozen objects.

Unknown keys are errors (``extra="forbid"``) so a typo never passes silently. Units are in the
field names (``_s`` seconds, ``_bytes`` bytes).

Example:
    >>> cfg = ServiceConfig.model_validate({
    ...     "name": "digits",
    ...     "engine": {"kind": "triton", "url": "http://127.0.0.1:8000", "model_name": "digits"},
    ...     "model": {"template": "mlp", "input": {"shape": [64]}, "classes": ["0", "1"]},
    ... })
    >>> cfg.engine.kind, cfg.cache.url is None, cfg.drift.detectors
    ('triton', True, ())
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    """Base of every config section: unknown keys rejected, values frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def choice(noun: str, options: tuple[str, ...]) -> Any:
    """A string restricted to ``options`` whose error names the field's domain.

    The JSON schema stays a plain ``enum``; the error reads
    ``unknown detector 'kss' (expected one of: ks, chi2, ...)``.
    """

    def check(value: Any) -> Any:
        if isinstance(value, str) and value not in options:
            raise PydanticCustomError(
                "unknown_choice",
                "unknown {noun} '{value}' (expected one of: {options})",
                {"noun": noun, "value": value, "options": ", ".join(options)},
            )
        return value

    return Annotated[Literal[options], BeforeValidator(check)]  # type: ignore[valid-type]


def field_error(field: str, message: str, **ctx: Any) -> PydanticCustomError:
    """An error raised by a section-level check that belongs to one of the section's fields.

    Pydantic reports model-validator errors at the section's path; the loader appends ``field``
    so the message names the exact key (``engine.url``), as for per-field errors.
    """
    return PydanticCustomError("field_error", message, {"field": field, **ctx})


NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A service or model name: lower-case, digits, ``_ . -``; safe as a path segment and a URL part."""


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("url_scheme", "must be an http:// or https:// URL (got '{value}')",
                                  {"value": value})
    return value.rstrip("/")


def _scheme_url(*schemes: str) -> Any:
    def check(value: str) -> str:
        if not value.startswith(tuple(f"{s}://" for s in schemes)):
            raise PydanticCustomError(
                "url_scheme", "must be a URL starting with {schemes} (got '{value}')",
                {"schemes": " or ".join(f"{s}://" for s in schemes), "value": value})
        return value

    return Annotated[str, AfterValidator(check)]


HttpUrl = Annotated[str, AfterValidator(_http_url)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Params = dict[str, JsonValue]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(lambda v: None if v == "" else v)]
"""A secret; an empty string (``${VAR:-}`` with VAR unset) means not set."""

ENGINE_KINDS = ("triton", "tfserving")
TEMPLATES = ("mlp", "lenet5", "resnet18", "text-minilm", "tabular-mlp")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bytes")
DETECTORS = ("ks", "chi2", "adwin", "kswin", "page_hinkley", "ddm", "eddm", "hddm_a", "hddm_w")
SIGNALS = ("inputs", "predictions", "errors")
STRATEGIES = ("naive", "ewc", "si", "lwf", "mas", "replay", "proactive", "full-retrain")
SCENARIOS = ("ni", "nc", "nic", "retrain")
BUFFERS = ("none", "reservoir", "class_balanced")
DEPLOY_MODES = ("full", "sparse", "partial")
ROLLOUTS = ("direct", "canary", "shadow")
ANNOTATORS = ("none", "label_studio", "simulated")
SELECTION_STRATEGIES = ("random", "least-confidence", "margin", "entropy", "class-balanced",
                        "drift-focused")
SCHEDULING_POLICIES = ("immediate", "slo-aware", "off-peak")
WORKER_LABEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,19}$"
WorkerLabel = Annotated[str, StringConstraints(pattern=WORKER_LABEL_PATTERN)]
"""A worker label (``gpu``, ``edge-eu``): lower-case, digits, ``_ -``."""

# Which signals each detector can watch: KS compares feature distributions, chi-square compares
# class proportions, the binary detectors (DDM family) only make sense on a 0/1 error stream.
DETECTOR_SIGNALS: dict[str, tuple[str, ...]] = {
    "ks": ("inputs",),
    "chi2": ("predictions",),
    "adwin": ("inputs", "errors"),
    "kswin": ("inputs", "errors"),
    "page_hinkley": ("inputs", "errors"),
    "ddm": ("errors",),
    "eddm": ("errors",),
    "hddm_a": ("errors",),
    "hddm_w": ("errors",),
}


class EngineConfig(Section):
    """The serving engine the plugin attaches to."""

    kind: choice("engine kind", ENGINE_KINDS)  # type: ignore[valid-type]
    url: HttpUrl | None = Field(
        None, description="HTTP endpoint of the engine (Triton KServe V2 / TF-Serving REST). "
        "Empty: the CLI starts an embedded tritonserver (triton only).")
    grpc_url: str | None = Field(None, description="host:port of the engine's gRPC endpoint.")
    model_name: Name = Field(description="Name of the model inside the engine.")
    model_repository: Path | None = Field(
        None, description="Triton model repository / TF-Serving model base path the plugin writes "
        "versions into.")
    model_config_file: Path | None = Field(
        None, description="TF-Serving model config file (version labels stable/canary).")
    timeout_s: PositiveSeconds = Field(10.0, description="Timeout of one engine call, seconds.")

    @model_validator(mode="after")
    def _tfserving_needs_url(self) -> EngineConfig:
        if self.kind == "tfserving" and self.url is None:
            raise field_error("url", "required for kind 'tfserving' (no embedded TF-Serving exists)")
        return self


class InputSpec(Section):
    """The model input tensor, as the engine sees it."""

    name: str = Field("INPUT__0", min_length=1)
    shape: list[Annotated[int, Field(ge=-1)]] = Field(
        min_length=1, description="Shape without the batch dimension; -1 for a variable axis.")
    dtype: choice("dtype", DTYPES) = "float32"  # type: ignore[valid-type]
    kind: choice("input kind", ("image", "text", "tabular")) = "tabular"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _no_zero_axis(self) -> InputSpec:
        if 0 in self.shape:
            raise field_error("shape", "axes must be positive or -1 (got 0)")
        return self


def _unique(values: list[str]) -> list[str]:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise PydanticCustomError("duplicate_class", "duplicate class names: {names}",
                                  {"names": ", ".join(duplicates)})
    return values


class ModelConfig(Section):
    """The served model: the template it is built from and what it predicts."""

    template: choice("model template", TEMPLATES)  # type: ignore[valid-type]
    template_params: Params = Field(default_factory=dict)
    checkpoint: Path | None = Field(None, description="Initial weights (state_dict, loaded with "
                                    "weights_only=True).")
    input: InputSpec
    output_name: str = Field("OUTPUT__0", min_length=1)
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1),
                       AfterValidator(_unique)]


class CollectorConfig(Section):
    """What the collector keeps of the served traffic."""

    sampling_ratio: Share = Field(1.0, description="Share of served requests recorded.")
    window_size: int = Field(10_000, gt=0, description="Recent records kept in the cache per "
                             "service.")
    retention_days: float = Field(30.0, gt=0, description="Days a served record can still be "
                                  "labeled: its request id stays findable in the cache this long.")


class CacheConfig(Section):
    """Redis: recent data, counters and the job queue."""

    url: _scheme_url("redis", "rediss", "unix") | None = Field(  # type: ignore[valid-type]
        None, description="redis:// or unix:// URL; empty: embedded redis-server under data_dir.")


class StoreConfig(Section):
    """MongoDB: the durable record of everything."""

    uri: _scheme_url("mongodb", "mongodb+srv") | None = Field(  # type: ignore[valid-type]
        None, description="mongodb:// URI; empty: embedded MongoDB-protocol server under data_dir.")
    database: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,63}$")] = "modelci"


class DetectorConfig(Section):
    """One drift detector on one signal."""

    kind: choice("detector", DETECTORS)  # type: ignore[valid-type]
    signal: choice("signal", SIGNALS)  # type: ignore[valid-type]
    params: Params = Field(default_factory=dict, description="Passed to the detector (e.g. "
                           "River's ADWIN delta).")
    window: int = Field(500, gt=1, description="Samples per evaluation window.")
    alpha: float = Field(0.01, gt=0, lt=1, description="Significance level for statistical tests.")

    @model_validator(mode="after")
    def _signal_fits(self) -> DetectorConfig:
        allowed = DETECTOR_SIGNALS[self.kind]
        if self.signal not in allowed:
            raise field_error("signal", "detector '{kind}' cannot watch '{signal}' (it watches: "
                              "{allowed})", kind=self.kind, signal=self.signal,
                              allowed=", ".join(allowed))
        return self


class DriftConfig(Section):
    """Drift detection: the detectors and the reference they compare with."""

    detectors: tuple[DetectorConfig, ...] = ()
    reference_size: int = Field(1000, gt=1, description="Samples in the reference window.")


class TimeTrigger(Section):
    """Fire at a fixed interval."""

    kind: Literal["time"]
    interval_s: PositiveSeconds = Field(description="Seconds between two updates.")


class VolumeTrigger(Section):
    """Fire when enough new labeled data arrived."""

    kind: Literal["volume"]
    new_labels: int | None = Field(None, gt=0, description="Fire after this many new labels.")
    growth_pct: float | None = Field(None, gt=0, description="Fire when labeled data grew by this "
                                     "percentage.")

    @model_validator(mode="after")
    def _one_threshold(self) -> VolumeTrigger:
        if self.new_labels is None and self.growth_pct is None:
            raise field_error("new_labels", "set new_labels or growth_pct")
        return self


class PerformanceTrigger(Section):
    """Fire when the served model's accuracy on labeled requests falls below a threshold."""

    kind: Literal["performance"]
    metric: choice("metric", ("accuracy",)) = "accuracy"  # type: ignore[valid-type]
    threshold: Share = Field(description="Fire below this accuracy over the window.")
    window: int = Field(200, gt=0, description="Labeled samples in the sliding window.")


class DriftTrigger(Section):
    """Fire on a drift episode."""

    kind: Literal["drift"]
    min_detectors: int = Field(1, gt=0, description="Alarms needed in one evaluation round.")


Trigger = Annotated[
    TimeTrigger | VolumeTrigger | PerformanceTrigger | DriftTrigger,
    Field(discriminator="kind"),
]


class TriggersConfig(Section):
    """When the CL loop starts an update job."""

    cooldown_s: float = Field(300.0, ge=0, description="No new job for a service within this "
                              "many seconds of the last one.")
    rules: tuple[Trigger, ...] = ()


class ScenarioRules(Section):
    """How the scenario switch picks the CL scenario of a job."""

    nc_unseen_share: Share = Field(0.05, description="NC when unseen classes make up more than "
                                   "this share of the new labeled data.")
    retrain_drift_magnitude: float = Field(0.5, gt=0, description="Offline retrain above this "
                                           "drift magnitude.")
    retrain_every: int = Field(0, ge=0, description="Every Nth update is a full retrain "
                               "(calibration); 0 never.")
    default: choice("scenario", SCENARIOS) = "ni"  # type: ignore[valid-type]


class StrategyConfig(Section):
    """A CL strategy and its parameters."""

    name: choice("strategy", STRATEGIES) = Field(  # type: ignore[valid-type]
        "naive", description="replay, proactive and full-retrain are data regimes; the others "
        "add a loss term (model_factory/strategies).")
    params: Params = Field(default_factory=dict, description="e.g. {lambda: 100} for EWC.")


class RehearsalConfig(Section):
    """The rehearsal buffer of stored samples mixed into new data."""

    kind: choice("rehearsal buffer", BUFFERS) = "reservoir"  # type: ignore[valid-type]
    size: int = Field(500, ge=0, description="Samples kept.")


class CLConfig(Section):
    """The CL envelope: how an update job trains the challenger."""

    scenario: ScenarioRules = ScenarioRules()
    strategy: StrategyConfig = StrategyConfig()
    rehearsal: RehearsalConfig = RehearsalConfig()
    mode: choice("training mode", ("stateful", "stateless")) = Field(  # type: ignore
        "stateful", description="stateful: start from the champion's weights and optimizer "
        "state; stateless: from fresh weights.")
    epochs: int = Field(3, gt=0, description="Passes over the job's training data.")
    batch_size: int = Field(64, gt=0, description="Samples per training step.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam step size.")
    max_samples: int = Field(20_000, gt=0, description="Training samples per job, new + stored.")
    min_new_samples: int = Field(1, gt=0, description="New labeled training samples a job needs; "
                                 "it waits up to label_wait_s for them (labels often come after "
                                 "the drift that started the job), then trains on what it has, "
                                 "or ends 'skipped' with none.")
    label_wait_s: float = Field(30.0, ge=0, description="Seconds a job waits for min_new_samples.")
    challengers: list[StrategyConfig] = Field(
        default_factory=list, max_length=4, description="Further strategies each job trains on "
        "the same data beside `strategy`: every challenger is validated, the passing one with "
        "the best recent-holdout accuracy goes on to the live stages and promotion, the others "
        "are rejected (`lost_to`).")


class GatesConfig(Section):
    """What a challenger must achieve against the champion to be deployed."""

    min_accuracy_gain: float = Field(0.0, ge=-1, le=1, description="Challenger accuracy minus "
                                     "champion accuracy on the recent holdout.")
    max_class_drop: Share = Field(0.05, description="Largest allowed per-class accuracy drop on "
                                  "the historical holdout.")
    max_p95_latency_increase: float = Field(0.2, ge=0, description="Relative, 0.2 = +20%.")
    max_model_bytes: int | None = Field(None, gt=0, description="Largest size of the "
                                        "challenger's weights, bytes; empty: no limit.")
    min_shadow_agreement: Share = Field(0.0, description="Shadow stage: least share of mirrored "
                                        "requests on which the challenger answers like the "
                                        "champion (0: reported, not enforced).")
    max_live_accuracy_drop: Share = Field(0.02, description="Shadow and canary stages: how far "
                                          "the challenger's accuracy on labeled live requests may "
                                          "fall below the champion's on the same period.")


class ValidationConfig(Section):
    """How challengers are validated: holdouts, gates and live stages."""

    recent_holdout: int = Field(500, gt=0, description="Recent labeled samples held out.")
    historical_per_class: int = Field(50, gt=0, description="Older labeled samples per class "
                                      "in the historical holdout (forgetting).")
    gates: GatesConfig = GatesConfig()
    shadow_requests: int = Field(0, ge=0, description="Mirrored requests the challenger answers "
                                 "in a shadow stage before promotion; 0 off.")
    min_live_labels: int = Field(30, gt=0, description="Labeled live requests a shadow or canary "
                                 "stage needs to judge accuracy; with fewer its accuracy gate "
                                 "is reported as not evaluated.")
    stage_timeout_s: PositiveSeconds = Field(900.0, description="Seconds a shadow or canary stage "
                                             "waits for its requests (then it fails) and labels.")
    manual_approval: bool = Field(False, description="A passing challenger waits for an "
                                  "engineer's approval (POST .../versions/{v}/approve) before "
                                  "its live stages and promotion.")


class CanaryConfig(Section):
    """The canary stage of a rollout."""

    share: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.1, description="Share of the traffic the challenger answers.")
    min_requests: int = Field(200, gt=0, description="Answers it must give before it is "
                              "judged.")


class DeploymentConfig(Section):
    """How a validated challenger is trained for and reaches the engine."""

    mode: choice("deployment mode", DEPLOY_MODES) = Field(  # type: ignore[valid-type]
        "full", description="full: every weight may change; sparse: top-k sparse steps with "
        "residual memory; partial: Deep Partial Updating.")
    ratio: Annotated[float, Field(gt=0, le=1)] = Field(
        0.01, description="sparse: share of each tensor a training step changes (top-k with "
        "residual memory); partial: share of the weights an update changes (Deep Partial "
        "Updating).")
    sparse_learning_rate: float = Field(
        0.05, gt=0, description="Step size of sparse training (plain SGD steps with residual "
        "memory, so larger than an Adam learning rate).")
    rollout: choice("rollout", ROLLOUTS) = Field(  # type: ignore[valid-type]
        "direct", description="After the offline gates: direct (promote), shadow (mirror "
        "validation.shadow_requests requests to the challenger first) or canary (send "
        "canary.share of the traffic to it until canary.min_requests answers first).")
    canary: CanaryConfig = CanaryConfig()
    publish_patches: bool = Field(
        True, description="Publish each new champion as a weight patch for replicas "
        "(`modelci-e replica`): GET /api/services/{name}/patches and a Redis notice.")
    patch_values: choice(  # type: ignore[valid-type]
        "patch values", ("fp32", "fp16", "q8")) = Field(
        "fp32", description="How patches carry weights: fp32 (bit-exact), fp16 (half the "
        "value bytes; replicas hold the fp16-rounded weights) or q8 (a quarter: each changed "
        "weight's difference as an int8 code of a per-tensor step; replicas hold the weights "
        "so rounded, each publication rounding afresh from the published state, so errors do "
        "not add up).")


class AnnotatorConfig(Section):
    """The annotation loop: which served samples go to annotators, and their labels back."""

    kind: choice("annotator", ANNOTATORS) = Field(  # type: ignore[valid-type]
        "none", description="none (labels come only from the labels API), label_studio (a "
        "Label Studio at `url`: a project per service, tasks with the champion's "
        "pre-annotation, annotations pulled back) or simulated (tasks kept in the cache, "
        "answered by the simulated annotator of demos and benchmarks).")
    url: HttpUrl | None = Field(None, description="Label Studio's base URL.")
    token: OptionalSecret = Field(None, description="A Label Studio API token (use ${VAR}).")
    project: str | None = Field(None, min_length=1, max_length=200, description="Label "
                                "Studio project title; empty: `modelci-e: <service name>`.")
    selection: choice("selection strategy", SELECTION_STRATEGIES) = Field(  # type: ignore[valid-type]
        "least-confidence", description="Which served samples to label first: random, "
        "least-confidence, margin, entropy (the champion's uncertainty), class-balanced "
        "(round robin over predicted classes) or drift-focused (samples served since the "
        "last drift alarm first).")
    budget_per_hour: int = Field(100, ge=0, description="Samples sent to annotators in any "
                                 "60 minutes, at most.")
    budget_per_day: int | None = Field(None, ge=0, description="Samples sent in any 24 "
                                       "hours, at most; empty: no daily cap.")
    sync_every_s: float = Field(10.0, gt=0, le=3600, description="Seconds between two "
                                "syncs (tasks pushed, annotations pulled); a webhook from "
                                "Label Studio pulls at once.")
    pool_size: int = Field(5000, ge=1, le=100_000, description="Unlabeled served samples the "
                           "selection chooses from at most (the newest kept).")
    max_open_tasks: int | None = Field(None, ge=1, description="Tasks waiting for an "
                                       "annotation at most: while this many are open, no "
                                       "more are sent, and the selection chooses from a "
                                       "fuller pool when annotators free a place (annotators "
                                       "slower than the traffic get the most informative "
                                       "samples, not a growing backlog); empty: no limit.")
    accept_new_classes: bool = Field(False, description="An annotation naming a class the "
                                     "service does not have: false: rejected and reported; "
                                     "true: the class is added to the service (and to the "
                                     "project's choices) and an update is requested, which "
                                     "the scenario switch runs as new classes.")
    webhook_url: HttpUrl | None = Field(None, description="The CL server's base URL as Label "
                                        "Studio reaches it: a webhook on the project then "
                                        "pulls each annotation as it is made.")

    @model_validator(mode="after")
    def _label_studio_needs_endpoint(self) -> AnnotatorConfig:
        if self.kind == "label_studio" and (self.url is None or self.token is None):
            missing = "url" if self.url is None else "token"
            raise field_error(missing, "required for kind 'label_studio'")
        return self


def _window(value: str) -> str:
    parts = value.split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        for part in parts:
            hours, minutes = part.split(":")
            if not (len(hours) == 2 and len(minutes) == 2 and 0 <= int(hours) <= 23
                    and 0 <= int(minutes) <= 59):
                raise ValueError
    except ValueError:
        raise PydanticCustomError(
            "window", "'{value}' is not a time window HH:MM-HH:MM (e.g. 22:00-06:00)",
            {"value": value}) from None
    if parts[0] == parts[1]:
        raise PydanticCustomError("window", "'{value}' is an empty window", {"value": value})
    return value


TimeWindow = Annotated[str, AfterValidator(_window)]


class SloConfig(Section):
    """The inference latency an update job must not break (``slo-aware``)."""

    p95_ms: float | None = Field(
        None, gt=0, description="Inference p95 latency the job must keep, ms (the proxy's "
        "figures over its last seconds); empty: p95_ratio times the p95 measured just before "
        "the job starts.")
    p95_ratio: float = Field(1.2, ge=1, description="With no p95_ms: the SLO as a multiple of "
                             "the p95 measured during baseline_s before the job trains.")
    baseline_s: float = Field(10.0, gt=0, le=60, description="Seconds of latency readings the "
                              "baseline p95 is taken from (the median of the proxy's "
                              "two-second figures, two a second). Fewer readings make a noisy "
                              "baseline: with 3 s, four of nine benchmark jobs got an SLO "
                              "within 13% of the idle level and were paced by its noise.")
    max_slowdown: float | None = Field(
        2.0, ge=1, description="The job's slowdown budget: the seconds it is paced and paused "
        "never exceed max_slowdown - 1 times the seconds it has trained, so it ends within "
        "max_slowdown times its training time however the latency moves (a noisy signal, or "
        "inference slowed by something else, cannot starve it). Empty: the SLO alone rules "
        "and a job may take far longer.")
    signal_max_age_s: float = Field(3.0, gt=0, description="Latency figures older than this "
                                    "(no traffic, no proxy) are no signal: the job runs at its "
                                    "current pace.")


class SchedulingConfig(Section):
    """When and where the service's update jobs train beside live inference."""

    policy: choice("scheduling policy", SCHEDULING_POLICIES) = Field(  # type: ignore
        "immediate", description="immediate: train at full speed at once; slo-aware: pace "
        "the job between training steps so that the inference p95 stays within slo (it "
        "pauses while the SLO is broken); off-peak: start only inside off_peak_windows.")
    slo: SloConfig = SloConfig()
    threads: int | None = Field(
        None, ge=1, le=256, description="Torch threads of the job; empty: all cores for "
        "immediate and off-peak, half the cores (at least 1) for slo-aware.")
    nice: int | None = Field(
        None, ge=0, le=19, description="OS niceness the job's process takes (higher: lower "
        "priority); empty: 0 for immediate and off-peak, 19 for slo-aware.")
    idle_priority: bool = Field(
        False, description="Run the job's process under Linux SCHED_IDLE (and its session at "
        "nice 19): it trains only on CPU time inference leaves. Off by default: the kernel "
        "then counts the job's core as idle and wakes inference threads onto it, behind the "
        "job, which measured worse for p95 than a plain job on fewer threads.")
    min_duty: float = Field(0.05, gt=0, le=1, description="slo-aware: least share of the "
                            "wall time the job trains while it is paced.")
    max_pause_s: float = Field(30.0, gt=0, description="slo-aware: a pause lasts at most this "
                               "long, then one step runs; a job waits at most this long to "
                               "start while the SLO is broken, then starts at min_duty. So "
                               "the job always finishes.")
    off_peak_windows: list[TimeWindow] = Field(
        default_factory=list, max_length=24, description="off-peak: local-time windows "
        "HH:MM-HH:MM (may wrap midnight) in which jobs may start; a started job finishes.")
    worker_labels: list[WorkerLabel] = Field(
        default_factory=list, max_length=4, description="Run this service's update jobs only "
        "on workers that have every one of these labels (modelci-e worker --labels).")

    @model_validator(mode="after")
    def _off_peak_needs_windows(self) -> SchedulingConfig:
        if self.policy == "off-peak" and not self.off_peak_windows:
            raise field_error("off_peak_windows", "policy off-peak needs at least one window "
                              "(HH:MM-HH:MM)")
        return self


class AuthConfig(Section):
    bootstrap_admin_token: OptionalSecret = Field(
        None, description="Admin token to install at first start (use ${VAR}); empty: one is "
        "generated and printed once.")

    @model_validator(mode="after")
    def _long_enough(self) -> AuthConfig:
        token = self.bootstrap_admin_token
        if token is not None and len(token.get_secret_value()) < 16:
            raise field_error("bootstrap_admin_token", "must be at least 16 characters")
        return self


class QueueConfig(Section):
    """The RQ job queue."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,40}$")] = Field(
        "modelci", description="RQ queue name (workers of one deployment share it).")
    embedded_workers: int = Field(1, ge=0, le=8, description="Worker processes the CLI starts.")
    job_timeout_s: PositiveSeconds = Field(3600.0, description="RQ stops a job running longer "
                                           "than this many seconds.")
    embedded_worker_labels: list[WorkerLabel] = Field(
        default_factory=list, max_length=4, description="Labels of the workers the CLI starts "
        "(scheduling.worker_labels places jobs by them).")


class ServerConfig(Section):
    """The CL server's HTTP endpoint and local files."""

    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0: any free port.")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Larger request bodies "
                                "get 413.")
    data_dir: Path = Field(Path(".modelci"), description="Embedded servers' data, artifacts, "
                           "routing tables and patches.")


class ServiceConfig(Section):
    """One served model and the CL infrastructure around it: the root of a YAML config file."""

    version: Literal[1] = 1
    name: Name
    description: str = ""
    engine: EngineConfig
    model: ModelConfig
    collector: CollectorConfig = CollectorConfig()
    cache: CacheConfig = CacheConfig()
    store: StoreConfig = StoreConfig()
    drift: DriftConfig = DriftConfig()
    triggers: TriggersConfig = TriggersConfig()
    cl: CLConfig = CLConfig()
    validation: ValidationConfig = ValidationConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    annotator: AnnotatorConfig = AnnotatorConfig()
    scheduling: SchedulingConfig = SchedulingConfig()
    auth: AuthConfig = AuthConfig()
    queue: QueueConfig = QueueConfig()
    server: ServerConfig = ServerConfig()

    @model_validator(mode="after")
    def _shadow_rollout_needs_requests(self) -> ServiceConfig:
        if self.deployment.rollout == "shadow" and self.validation.shadow_requests == 0:
            raise PydanticCustomError(
                "field_error", "deployment.rollout is shadow: set validation.shadow_requests to "
                "the number of mirrored requests the challenger must answer (> 0)",
                {"field": "validation.shadow_requests"})
        return self
