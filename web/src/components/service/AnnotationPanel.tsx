import type { AnnotationStatus } from "../../api/types";
import { num, relativeTime } from "../../lib/format";

/**
 * The annotation loop of a service: the labeling budget and what is left of it, the samples
 * sent to annotators, the labels pulled back, and what was refused (with the reason).
 */
export function AnnotationPanel({ status }: { status: AnnotationStatus }) {
  const { budget } = status;
  const backend = status.backend === "label_studio" ? "Label Studio" : "cache-held tasks";
  return (
    <div data-testid="annotation-panel">
      <p className="muted">
        {backend}
        {status.project ? ` (project ${status.project})` : ""} · selection {status.selection}
      </p>
      <dl className="facts">
        <div>
          <dt>Budget</dt>
          <dd data-testid="annotation-budget">
            {num(budget.available)} left of {num(budget.per_hour)} / h
            {budget.per_day !== null ? `, ${num(budget.per_day)} / day` : ""}
          </dd>
        </div>
        <div>
          <dt>Sent</dt>
          <dd data-testid="annotation-sent">
            {num(status.sent)} samples · {num(status.tasks)} tasks
            {status.outbox > 0 ? ` · ${num(status.outbox)} waiting to be delivered` : ""}
          </dd>
        </div>
        <div>
          <dt>Labels back</dt>
          <dd data-testid="annotation-labeled">
            {num(status.labeled)} of {num(status.completed)} completed
            {status.duplicates > 0 ? ` · ${num(status.duplicates)} labeled before` : ""}
            {status.skipped > 0 ? ` · ${num(status.skipped)} skipped` : ""}
          </dd>
        </div>
        <div>
          <dt>Last sync</dt>
          <dd>
            push {relativeTime(status.last_push_at)} · pull {relativeTime(status.last_pull_at)}
          </dd>
        </div>
      </dl>
      {status.last_error && (
        <p className="error" data-testid="annotation-error">
          {status.last_error}
        </p>
      )}
      {status.recent_rejections.length > 0 && (
        <div className="table-wrap">
          <table data-testid="annotation-rejections">
            <caption>Refused annotations ({num(status.rejected)})</caption>
            <thead>
              <tr>
                <th scope="col">task</th>
                <th scope="col">request</th>
                <th scope="col">label</th>
                <th scope="col">reason</th>
              </tr>
            </thead>
            <tbody>
              {status.recent_rejections.map((r) => (
                <tr key={r.task_id}>
                  <td>{r.task_id}</td>
                  <td>{r.request_id}</td>
                  <td>{r.label ?? "-"}</td>
                  <td>{r.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
