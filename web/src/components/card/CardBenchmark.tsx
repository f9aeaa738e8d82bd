import type { ModelCard } from "../../api/types";
import { bytes, num, percent, points, signedPoints } from "../../lib/format";

export function CardBenchmark({ card }: { card: ModelCard }) {
  const { benchmark } = card;
  return (
    <section className="panel" data-testid="card-benchmark" aria-labelledby="card-benchmark-title">
      <h2 id="card-benchmark-title">Benchmark</h2>
      <dl className="facts">
        <dt>Recent accuracy</dt>
        <dd data-testid="recent-accuracy">
          {percent(benchmark.recent_accuracy)}{" "}
          <span className="muted">vs champion {percent(benchmark.champion_recent_accuracy)}</span>
        </dd>
        <dt>ACC</dt>
        <dd>{percent(benchmark.acc)}</dd>
        <dt>BWT</dt>
        <dd>{signedPoints(benchmark.bwt)}</dd>
        <dt>FWT</dt>
        <dd>{signedPoints(benchmark.fwt)}</dd>
        <dt>Forgetting</dt>
        <dd>{points(benchmark.forgetting)}</dd>
        <dt>Training time</dt>
        <dd>
          {benchmark.training_seconds == null
            ? num(null)
            : `${num(benchmark.training_seconds, 1)} s`}
        </dd>
        <dt>Model size</dt>
        <dd>{bytes(benchmark.model_bytes)}</dd>
        <dt>Bytes deployed</dt>
        <dd>{bytes(benchmark.bytes_deployed)}</dd>
      </dl>
      <h3>Per class</h3>
      {benchmark.per_class.length === 0 ? (
        <p className="muted">No per-class results.</p>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Class</th>
                <th className="num">Accuracy</th>
                <th className="num">Champion accuracy</th>
                <th className="num">Count</th>
              </tr>
            </thead>
            <tbody>
              {benchmark.per_class.map((row) => (
                <tr key={row.class} data-testid="class-row">
                  <td>{row.class}</td>
                  <td className="num">{percent(row.accuracy)}</td>
                  <td className="num">{percent(row.champion_accuracy)}</td>
                  <td className="num">{num(row.count)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
