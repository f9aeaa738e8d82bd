import type {
  Job,
  LineageNode,
  ModelCard,
  ModelVersion,
  ServiceOverview,
  Timeline,
  Traffic,
  UpdateEntry,
} from "../api/types";

const T0 = "2025-11-22T10:00:00+00:00";

export function overviewOf(over: Partial<ServiceOverview> = {}): ServiceOverview {
  return {
    name: "digits",
    description: "MNIST digits on Triton",
    engine_kind: "triton",
    model_name: "digits_cnn",
    status: "active",
    state: "healthy",
    state_detail: "accuracy 92.5% over the last 200 labels",
    champion_version: 3,
    classes: ["0", "1", "2"],
    accuracy: 0.925,
    accuracy_count: 200,
    drift: [
      { t: T0, magnitude: 0.1, alarm: false },
      { t: T0, magnitude: 0.4, alarm: true },
      { t: T0, magnitude: 0.2, alarm: false },
    ],
    last_update: {
      job_id: "j3",
      version: 3,
      outcome: "deployed",
      status: "succeeded",
      finished_at: T0,
    },
    versions: 4,
    annotator_url: "http://label.example/projects/7",
    ...over,
  };
}

export function versionOf(
  version: number,
  status: ModelVersion["status"],
  parent: number | null,
): ModelVersion {
  return {
    service: "digits",
    version,
    parent_version: parent,
    base_version: 1,
    job_id: parent === null ? null : `j${version}`,
    data_query: null,
    artifact_uri: `file:///models/digits/${version}`,
    artifact_sha256: "ab".repeat(32),
    artifact_bytes: 2048,
    classes: ["0", "1", "2"],
    metrics: {},
    status,
    created_at: T0,
  };
}

// v1 base (retired) -> v2 (rolled back) -> v3 (champion) -> v4 (candidate awaiting approval)
export const versions: ModelVersion[] = [
  versionOf(1, "retired", null),
  versionOf(2, "rolled_back", 1),
  versionOf(3, "champion", 2),
  versionOf(4, "candidate", 3),
];

export const updates: UpdateEntry[] = [
  {
    job_id: "j4",
    kind: "cl_update",
    status: "succeeded",
    trigger: { kind: "drift", reason: "ks p<0.01" },
    trigger_kind: "drift",
    reason: "ks p<0.01",
    scenario: "class_incremental",
    strategy: "replay",
    version: 4,
    outcome: "awaiting_approval",
    failed_gates: [],
    gates: [{ name: "accuracy", value: 0.93, threshold: 0.9, passed: true, detail: "ok" }],
    error: null,
    created_at: T0,
    started_at: T0,
    finished_at: T0,
    duration_s: 42,
  },
];

export const timeline: Timeline = {
  accuracy: [{ t: T0, accuracy: 0.9, count: 50 }],
  drift: [{ t: T0, detector: "ks", signal: "embedding", magnitude: 0.3, alarm: true }],
  deployments: [{ t: T0, version: 3, action: "deploy", status: "succeeded" }],
};

export const traffic: Traffic = {
  champion: { version: 3, share: 0.9 },
  canary: { version: 4, share: 0.1 },
  shadow: null,
};

export function jobOf(over: Partial<Job> = {}): Job {
  return {
    id: "j4",
    service: "digits",
    kind: "cl_update",
    params: { service: "digits" },
    trigger: { kind: "drift" },
    status: "running",
    result: null,
    error: null,
    worker: "worker-1",
    created_at: T0,
    started_at: T0,
    finished_at: null,
    cancel_requested: false,
    ...over,
  };
}

export function cardOf(over: Partial<ModelCard> = {}): ModelCard {
  return {
    service: "digits",
    version: 4,
    status: "candidate",
    created_at: T0,
    classes: ["0", "1", "2"],
    parent_version: 3,
    base_version: 1,
    job_id: "j4",
    artifact_sha256: "ab".repeat(32),
    awaiting_approval: true,
    task: {
      scenario: "class_incremental",
      scenario_reason: "new class 2 seen",
      strategy: "replay",
      loss: "cross_entropy",
      hyperparameters: { lr: 0.001, epochs: 3 },
      trigger: { kind: "drift", reason: "ks p<0.01" },
    },
    benchmark: {
      recent_accuracy: 0.912,
      champion_recent_accuracy: 0.88,
      acc: 0.905,
      bwt: -0.03,
      fwt: 0.015,
      forgetting: null,
      per_class: [
        { class: "0", accuracy: 0.95, champion_accuracy: 0.96, count: 40 },
        { class: "1", accuracy: 0.9, champion_accuracy: 0.89, count: 35 },
        { class: "2", accuracy: 0.85, champion_accuracy: null, count: 25 },
      ],
      training_seconds: 12.34,
      model_bytes: 1536,
      bytes_deployed: null,
    },
    data: {
      new_total: 100,
      rehearsal_total: 300,
      per_class: [
        { class: "0", new: 20, rehearsal: 150 },
        { class: "2", new: 80, rehearsal: 150 },
      ],
      query: { service: "digits", after: T0, classes: ["0", "2"] },
      sample_count: 400,
      digest: "d1g3st",
    },
    validation: {
      id: "val4",
      passed: true,
      champion_version: 3,
      gates: [
        { name: "accuracy", value: 0.912, threshold: 0.88, passed: true, detail: "beats champion" },
        { name: "forgetting", value: 0.02, threshold: 0.05, passed: true, detail: "" },
        { name: "latency", value: null, threshold: 50, passed: false, detail: "not measured" },
      ],
    },
    deployments: [
      {
        id: "d1",
        service: "digits",
        version: 4,
        previous_version: 3,
        action: "canary",
        status: "succeeded",
        bytes_shipped: 1048576,
        detail: "10% canary",
        actor: "ana",
        created_at: T0,
      },
    ],
    ...over,
  };
}

export function lineageOf(
  version: number,
  parent: number | null,
  over: Partial<LineageNode> = {},
): LineageNode {
  return {
    version,
    parent_version: parent,
    base_version: 1,
    status: "retired",
    job_id: parent === null ? null : `j${version}`,
    trigger: null,
    scenario: parent === null ? null : "domain_incremental",
    data_query: null,
    validation_id: null,
    validation_passed: null,
    failed_gates: [],
    deployments: [],
    ...over,
  };
}
