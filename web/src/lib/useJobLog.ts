import { useEffect, useRef, useState } from "react";
import { ApiError } from "../api/client";
import { api } from "../api/endpoints";
import type { JobLogLine } from "../api/types";

const PAGE = 1000;

/**
 * Follows a job's log: fetches the lines after the last seq seen every `intervalMs` and appends
 * them. Stops once the job is finished and a fetch started after that returned a short page,
 * i.e. everything the job wrote has been read.
 */
export function useJobLog(jobId: string, finished: boolean, intervalMs: number) {
  const [lines, setLines] = useState<JobLogLine[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [drained, setDrained] = useState(false);
  const finishedRef = useRef(finished);

  useEffect(() => {
    finishedRef.current = finished;
  }, [finished]);

  useEffect(() => {
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let after = -1;
    setLines([]);
    setDrained(false);
    setError(null);

    async function poll() {
      // Read before fetching: a job that had finished by then has written all its lines.
      const wasFinished = finishedRef.current;
      try {
        const batch = await api.jobLogs(jobId, after, PAGE);
        if (cancelled) return;
        setError(null);
        const last = batch[batch.length - 1];
        if (last) {
          after = last.seq;
          setLines((previous) => [...previous, ...batch]);
        }
        if (batch.length === PAGE) {
          timer = setTimeout(poll, 0); // a backlog: read on at once
          return;
        }
        if (wasFinished) {
          setDrained(true);
          return;
        }
      } catch (caught) {
        if (cancelled) return;
        setError(caught);
        // 4xx will not heal by asking again; a 5xx or a network error may.
        if (caught instanceof ApiError && caught.status < 500) return;
      }
      timer = setTimeout(poll, intervalMs);
    }

    void poll();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [jobId, intervalMs]);

  return { lines, error, drained };
}
