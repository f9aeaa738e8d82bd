// Shapes of the CL server's JSON API (/api). Timestamps are ISO 8601 strings with a timezone;
// accuracies and shares are fractions (0..1).

export type Role = "viewer" | "researcher" | "engineer" | "admin";

export interface Whoami {
  user: string;
  role: Role;
}

export type JsonObject = Record<string, unknown>;

export type ServiceStatus = "active" | "paused";
export type ServiceState = "healthy" | "drifting" | "updating" | "validating" | "paused";
export type VersionStatus = "candidate" | "champion" | "rejected" | "retired" | "rolled_back";
export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface Service {
  name: string;
  engine_kind: string;
  model_name: string;
  classes: string[];
  config: JsonObject;
  status: ServiceStatus;
  champion_version: number | null;
  created_at: string;
  updated_at: string;
}

export interface DriftPoint {
  t: string;
  magnitude: number;
  alarm: boolean;
}

export interface LastUpdate {
  job_id: string;
  version: number | null;
  outcome: string | null;
  status: JobStatus;
  finished_at: string | null;
}

export interface ServiceOverview {
  name: string;
  description: string;
  engine_kind: string;
  model_name: string;
  status: ServiceStatus;
  state: ServiceState;
  state_detail: string;
  champion_version: number | null;
  classes: string[];
  accuracy: number | null;
  accuracy_count: number;
  drift: DriftPoint[];
  last_update: LastUpdate | null;
  versions: number;
  annotator_url: string | null;
}

export interface ModelVersion {
  service: string;
  version: number;
  parent_version: number | null;
  base_version: number | null;
  job_id: string | null;
  data_query: JsonObject | null;
  artifact_uri: string | null;
  artifact_sha256: string | null;
  artifact_bytes: number | null;
  classes: string[];
  metrics: JsonObject;
  status: VersionStatus;
  created_at: string;
}

export type DeploymentAction = "deploy" | "rollback" | "canary" | "shadow";

export interface Deployment {
  id: string;
  service: string;
  version: number;
  previous_version: number | null;
  action: DeploymentAction;
  status: "succeeded" | "failed";
  bytes_shipped: number | null;
  detail: string;
  actor: string | null;
  created_at: string;
}

export interface LineageNode {
  version: number;
  parent_version: number | null;
  base_version: number | null;
  status: VersionStatus;
  job_id: string | null;
  trigger: JsonObject | null;
  scenario: string | null;
  data_query: JsonObject | null;
  validation_id: string | null;
  validation_passed: boolean | null;
  failed_gates: string[];
  deployments: Deployment[];
}

export interface UpdateRequested {
  status: "requested" | "submitted";
  job_id: string | null;
  detail: string;
}

export interface Job {
  id: string;
  service: string;
  kind: string;
  params: JsonObject;
  trigger: JsonObject | null;
  status: JobStatus;
  result: JsonObject | null;
  error: string | null;
  worker: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  cancel_requested: boolean;
  /** The RQ queue it went to: "modelci@eu+gpu" needs workers labelled eu and gpu, "modelci" any
   * worker. Absent on records older than job placement. */
  queue?: string | null;
  /** The scheduling governor's live account (policy, state, steps, *_s totals, signals...),
   * updated while the job runs; any field may be missing or null. */
  schedule?: JsonObject | null;
}

export interface JobLogLine {
  job_id: string;
  seq: number;
  level: string;
  message: string;
  created_at: string;
}

export interface DataQueryCheck {
  version: number;
  query: JsonObject;
  sample_count: number;
  digest: string;
  matches: boolean;
}

export interface Timeline {
  accuracy: { t: string; accuracy: number; count: number }[];
  drift: { t: string; detector: string; signal: string; magnitude: number; alarm: boolean }[];
  deployments: { t: string; version: number; action: DeploymentAction; status: string }[];
}

export interface Gate {
  name: string;
  value: number | null;
  threshold: number | null;
  passed: boolean;
  detail: string;
}

export interface UpdateEntry {
  job_id: string;
  kind: string;
  status: JobStatus;
  trigger: JsonObject | null;
  trigger_kind: string | null;
  reason: string | null;
  scenario: string | null;
  strategy: string | null;
  version: number | null;
  outcome: string | null;
  failed_gates: string[];
  gates: Gate[];
  error: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  duration_s: number | null;
}

export interface Traffic {
  champion: { version: number; share: number } | null;
  canary: { version: number; share: number } | null;
  /** A shadow answers nobody: it gets a copy of every request (its share is 0). */
  shadow: { version: number; share: number } | null;
}

export interface ModelCard {
  service: string;
  version: number;
  status: VersionStatus;
  created_at: string;
  classes: string[];
  parent_version: number | null;
  base_version: number | null;
  job_id: string | null;
  artifact_sha256: string | null;
  awaiting_approval: boolean;
  task: {
    scenario: string | null;
    scenario_reason: string | null;
    strategy: string | null;
    loss: string | null;
    hyperparameters: JsonObject;
    trigger: JsonObject | null;
  };
  benchmark: {
    recent_accuracy: number | null;
    champion_recent_accuracy: number | null;
    acc: number | null;
    bwt: number | null;
    fwt: number | null;
    forgetting: number | null;
    per_class: {
      class: string;
      accuracy: number | null;
      champion_accuracy: number | null;
      count: number;
    }[];
    training_seconds: number | null;
    model_bytes: number | null;
    bytes_deployed: number | null;
  };
  data: {
    new_total: number | null;
    rehearsal_total: number | null;
    per_class: { class: string; new: number; rehearsal: number }[];
    query: JsonObject | null;
    sample_count: number | null;
    digest: string | null;
  };
  validation: {
    id: string;
    passed: boolean;
    champion_version: number | null;
    gates: Gate[];
  } | null;
  deployments: Deployment[];
}

export interface JobFilter {
  service?: string;
  status?: string;
  limit?: number;
}

export interface AnnotationRejection {
  task_id: string;
  request_id: string;
  label: string | null;
  annotation_id: string;
  reason: string;
  at: string;
}

/** GET /api/services/{name}/annotations: the annotation loop (409 when there is none). */
export interface AnnotationStatus {
  backend: string;
  project: string | null;
  selection: string;
  budget: { per_hour: number; per_day: number | null; available: number };
  pool: number;
  outbox: number;
  tasks: number;
  sent: number;
  completed: number;
  labeled: number;
  duplicates: number;
  skipped: number;
  rejected: number;
  unknown: number;
  last_push_at: string | null;
  last_pull_at: string | null;
  last_error: string | null;
  recent_rejections: AnnotationRejection[];
}
