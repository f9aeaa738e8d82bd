import { useMutation } from "@tanstack/react-query";
import { api } from "../../api/endpoints";
import type { ModelCard } from "../../api/types";
import { useHasRole } from "../../auth/me";
import { DASH, num } from "../../lib/format";
import { CopyButton } from "../CopyButton";
import { ErrorMessage } from "../ErrorMessage";

export function CardData({ card }: { card: ModelCard }) {
  const { data } = card;
  const canVerify = useHasRole("researcher");
  // Verifying changes nothing on the server, so no cache is invalidated afterwards.
  const verify = useMutation({ mutationFn: () => api.verifyDataQuery(card.service, card.version) });
  const query = data.query ? JSON.stringify(data.query, null, 2) : null;
  return (
    <section className="panel" data-testid="card-data" aria-labelledby="card-data-title">
      <h2 id="card-data-title">Training data</h2>
      <dl className="facts">
        <dt>New samples</dt>
        <dd>{num(data.new_total)}</dd>
        <dt>Rehearsal samples</dt>
        <dd>{num(data.rehearsal_total)}</dd>
        <dt>Sample count</dt>
        <dd>{num(data.sample_count)}</dd>
        <dt>Digest</dt>
        <dd className="mono break">{data.digest ?? DASH}</dd>
      </dl>
      <h3>Per class</h3>
      {data.per_class.length === 0 ? (
        <p className="muted">No per-class counts.</p>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Class</th>
                <th className="num">New</th>
                <th className="num">Rehearsal</th>
              </tr>
            </thead>
            <tbody>
              {data.per_class.map((row) => (
                <tr key={row.class} data-testid="data-class-row">
                  <td>{row.class}</td>
                  <td className="num">{num(row.new)}</td>
                  <td className="num">{num(row.rehearsal)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3>Data query</h3>
      {query ? (
        <>
          <pre className="code" data-testid="data-query">
            {query}
          </pre>
          <div className="row">
            <CopyButton text={query} label="Copy query" testId="copy-query" />
            {canVerify && (
              <button
                type="button"
                disabled={verify.isPending}
                onClick={() => verify.mutate()}
                data-testid="verify-query"
              >
                Verify
              </button>
            )}
            {verify.data && (
              <span role="status" data-testid="verify-result">
                Matches: {verify.data.matches ? "yes" : "no"} ({num(verify.data.sample_count)}{" "}
                samples, digest <span className="mono">{verify.data.digest.slice(0, 12)}</span>)
              </span>
            )}
          </div>
          {verify.isError && <ErrorMessage error={verify.error} />}
        </>
      ) : (
        <p className="muted">No data query recorded (a base version).</p>
      )}
    </section>
  );
}
