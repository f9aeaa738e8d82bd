import type { JsonObject } from "../../api/types";
import { DASH, millis, num, percent, seconds } from "../../lib/format";
import { StatusBadge } from "../StatusBadge";

// The schedule is the governor's free-form JSON account: read each field defensively, a field
// that is missing, null or of an unexpected type renders as a dash.
const numberAt = (object: JsonObject | null, key: string): number | null => {
  const value = object?.[key];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
};

const stringAt = (object: JsonObject | null, key: string): string | null => {
  const value = object?.[key];
  return typeof value === "string" && value !== "" ? value : null;
};

const objectAt = (object: JsonObject | null, key: string): JsonObject | null => {
  const value = object?.[key];
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as JsonObject)
    : null;
};

/** Whether the policy reports a field at all (null included); policy-specific rows need it. */
const has = (object: JsonObject, key: string) => object[key] !== undefined;

/** A percentage given in 0..100 (psutil, NVML): 71.0 -> "71%". */
const load = (value: number | null) => (value == null ? DASH : `${value.toFixed(0)}%`);

// Time buckets in reading order: work done, then the time given up to inference.
const TIME_SPLIT = [
  ["training", "training_s"],
  ["paced", "paced_s"],
  ["paused", "paused_s"],
  ["waited", "waited_s"],
] as const;

function Signals({ signals }: { signals: JsonObject | null }) {
  if (!signals) return <>{DASH}</>;
  const p95 = numberAt(signals, "p95_ms");
  const requests = numberAt(signals, "requests");
  const gpu = numberAt(signals, "gpu_percent");
  const parts = [
    p95 == null
      ? `p95 ${DASH}`
      : `p95 ${millis(p95)}${requests == null ? "" : ` over ${num(requests)} requests`}`,
    `CPU ${load(numberAt(signals, "cpu_percent"))}`,
    ...(gpu == null ? [] : [`GPU ${load(gpu)}`]),
    `queue depth ${num(numberAt(signals, "queue_depth"))}`,
  ];
  return <>{parts.join(" · ")}</>;
}

function Limits({ limits }: { limits: JsonObject | null }) {
  const threads = numberAt(limits, "threads");
  const nice = numberAt(limits, "nice");
  const session = numberAt(limits, "autogroup_nice");
  const parts = [
    ...(threads == null ? [] : [`threads ${num(threads)}`]),
    ...(nice == null ? [] : [`nice ${num(nice)}`]),
    ...(session == null ? [] : [`session nice ${num(session)}`]),
  ];
  return <>{parts.length === 0 ? DASH : parts.join(" · ")}</>;
}

/**
 * What the scheduling policy decided for a job: its policy and state, the time it trained, was
 * paced, paused or kept waiting, the SLO it holds inference to, and the last signals it read.
 * Renders nothing for jobs without a schedule (older records, jobs not yet picked up).
 */
export function JobSchedule({ schedule }: { schedule: JsonObject | null | undefined }) {
  if (!schedule) return null;
  const state = stringAt(schedule, "state");
  const changes = numberAt(schedule, "changes");
  const readings = numberAt(schedule, "readings");
  const breaches = numberAt(schedule, "breaches");
  // slo-aware's slowdown budget (x the training time) and the paces or pauses it cut short
  const budget = numberAt(schedule, "max_slowdown");
  const cuts = numberAt(schedule, "budget_overrides") ?? 0;
  const rawWindows = schedule.windows;
  const windows = Array.isArray(rawWindows)
    ? rawWindows.filter((w): w is string => typeof w === "string")
    : [];

  return (
    <section className="panel" data-testid="job-schedule" aria-labelledby="job-schedule-title">
      <h2 id="job-schedule-title">Scheduling</h2>
      <dl className="facts">
        <dt>Policy</dt>
        <dd data-testid="schedule-policy">{stringAt(schedule, "policy") ?? DASH}</dd>
        <dt>State</dt>
        <dd>
          {state ? (
            <StatusBadge value={state} testId="schedule-state" />
          ) : (
            <span data-testid="schedule-state">{DASH}</span>
          )}
        </dd>
        <dt>Steps</dt>
        <dd>{num(numberAt(schedule, "steps"))}</dd>
        <dt>Time</dt>
        <dd data-testid="schedule-time">
          {TIME_SPLIT.map(([label, key]) => `${label} ${seconds(numberAt(schedule, key))}`).join(
            " · ",
          )}
        </dd>
        <dt>Pauses</dt>
        <dd data-testid="schedule-pauses">
          {num(numberAt(schedule, "pauses"))}
          {changes != null && (
            <>
              {" "}
              <span className="muted">
                {num(changes)} state {changes === 1 ? "change" : "changes"}
              </span>
            </>
          )}
        </dd>
        {budget != null && (
          <>
            <dt>Slowdown budget</dt>
            <dd data-testid="schedule-budget">
              {`${num(budget)}x its training time`}{" "}
              <span className="muted">
                {`${num(cuts)} ${cuts === 1 ? "pace or pause" : "paces or pauses"} cut by it`}
              </span>
            </dd>
          </>
        )}
        {has(schedule, "slo_p95_ms") && (
          <>
            <dt>SLO p95</dt>
            <dd data-testid="schedule-slo">
              {millis(numberAt(schedule, "slo_p95_ms"))}
              {readings != null && (
                <>
                  {" "}
                  <span className="muted">
                    level above it in {num(breaches)} of {num(readings)} readings
                  </span>
                </>
              )}
            </dd>
          </>
        )}
        {has(schedule, "baseline_p95_ms") && (
          <>
            <dt>Baseline p95</dt>
            <dd data-testid="schedule-baseline">{millis(numberAt(schedule, "baseline_p95_ms"))}</dd>
          </>
        )}
        {has(schedule, "level_p95_ms") && (
          <>
            <dt>Level p95</dt>
            <dd data-testid="schedule-level">{millis(numberAt(schedule, "level_p95_ms"))}</dd>
          </>
        )}
        {has(schedule, "duty") && (
          <>
            <dt>Duty</dt>
            <dd data-testid="schedule-duty">{percent(numberAt(schedule, "duty"))}</dd>
          </>
        )}
        {has(schedule, "windows") && (
          <>
            <dt>Off-peak windows</dt>
            <dd data-testid="schedule-windows">{windows.length ? windows.join(", ") : DASH}</dd>
          </>
        )}
        {has(schedule, "limits") && (
          <>
            <dt>Limits</dt>
            <dd data-testid="schedule-limits">
              <Limits limits={objectAt(schedule, "limits")} />
            </dd>
          </>
        )}
        <dt>Last signals</dt>
        <dd data-testid="schedule-signals">
          <Signals signals={objectAt(schedule, "signals")} />
        </dd>
      </dl>
    </section>
  );
}
