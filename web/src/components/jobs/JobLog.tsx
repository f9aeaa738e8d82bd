import { useLayoutEffect, useRef } from "react";
import { clock } from "../../lib/format";
import { useJobLog } from "../../lib/useJobLog";
import { QueryError } from "../QueryError";

const LOG_POLL_MS = 2000;
// Within this many pixels of the bottom the view follows new lines; scrolled up, it stays put.
const STICKY_PX = 24;

interface Props {
  jobId: string;
  finished: boolean;
  intervalMs?: number;
}

export function JobLog({ jobId, finished, intervalMs = LOG_POLL_MS }: Props) {
  const { lines, error, drained } = useJobLog(jobId, finished, intervalMs);
  const box = useRef<HTMLDivElement>(null);
  const follow = useRef(true);

  useLayoutEffect(() => {
    const element = box.current;
    if (element && follow.current) element.scrollTop = element.scrollHeight;
  }, [lines]);

  function onScroll() {
    const element = box.current;
    if (element) {
      follow.current = element.scrollHeight - element.scrollTop - element.clientHeight < STICKY_PX;
    }
  }

  return (
    <>
      <div className="log" ref={box} onScroll={onScroll} role="log" data-testid="job-log">
        {lines.length === 0 && (
          <span className="muted">{drained ? "No log lines." : "Waiting for log lines…"}</span>
        )}
        {lines.map((line) => (
          <div
            key={line.seq}
            className={`log-line log-${line.level.toLowerCase()}`}
            data-seq={line.seq}
          >
            <span className="log-time">{clock(Date.parse(line.created_at))}</span>{" "}
            <span className="log-level">{line.level}</span> {line.message}
          </div>
        ))}
      </div>
      <p className="muted">{drained ? "End of log." : "Following the log…"}</p>
      <QueryError error={error} />
    </>
  );
}
