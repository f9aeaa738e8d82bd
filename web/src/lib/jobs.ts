import type { Job, JobStatus } from "../api/types";
import { secondsBetween } from "./format";

const FINISHED: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

export const isFinished = (status: JobStatus) => FINISHED.includes(status);

/** Seconds the job ran, counting up to now while it runs; null before it starts. */
export function jobDuration(job: Job, now: number = Date.now()): number | null {
  const end = job.finished_at ?? (job.status === "running" ? new Date(now).toISOString() : null);
  return secondsBetween(job.started_at, end);
}

/** The worker labels a job's queue asks for: "modelci@eu+gpu" -> ["eu", "gpu"], "modelci" -> []. */
export function queueLabels(queue: string | null | undefined): string[] {
  if (!queue) return [];
  const at = queue.indexOf("@");
  return at < 0 ? [] : queue.slice(at + 1).split("+").filter(Boolean);
}
