import {
  CartesianGrid,
  ComposedChart,
  Legend,
  Line,
  ReferenceLine,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import type { Timeline } from "../../api/types";
import { clock, decimal } from "../../lib/format";

interface Point {
  t: number;
  accuracy?: number;
  drift?: number;
}

/** The largest magnitude of each evaluation round: detectors of one round are stored within
 * the same second, and one line per round reads better than the detectors interleaved. */
function driftRounds(timeline: Timeline): Point[] {
  const rounds = new Map<number, number>();
  for (const p of timeline.drift) {
    const t = Math.floor(Date.parse(p.t) / 1000) * 1000;
    rounds.set(t, Math.max(rounds.get(t) ?? 0, p.magnitude));
  }
  return [...rounds].map(([t, drift]) => ({ t, drift }));
}

/** Accuracy and drift samples come at their own times; one series per key on a time axis. */
function merge(timeline: Timeline): Point[] {
  const points: Point[] = [
    ...timeline.accuracy.map((p) => ({ t: Date.parse(p.t), accuracy: p.accuracy * 100 })),
    ...driftRounds(timeline),
  ];
  return points.sort((a, b) => a.t - b.t);
}

const ACCURACY = "#2563eb";
const DRIFT = "#ea580c";
const ALARM = "#dc2626";
const DEPLOY = "#16a34a";

export function AccuracyChart({ timeline, minutes }: { timeline: Timeline; minutes: number }) {
  const now = Date.now();
  const points = merge(timeline);
  const alarms = timeline.drift.filter((p) => p.alarm).map((p) => Date.parse(p.t));
  const deployments = timeline.deployments.filter((d) => d.status === "succeeded");
  return (
    <div className="chart" data-testid="accuracy-chart">
      {points.length === 0 && (
        <p className="muted">No accuracy or drift samples in the last {minutes} minutes.</p>
      )}
      <ResponsiveContainer width="100%" height={300}>
        <ComposedChart data={points} margin={{ top: 8, right: 8, bottom: 0, left: 0 }}>
          <CartesianGrid strokeDasharray="3 3" stroke="#e5e7eb" />
          <XAxis
            dataKey="t"
            type="number"
            scale="time"
            domain={[now - minutes * 60_000, now]}
            tickFormatter={(t: number) => clock(t)}
            minTickGap={40}
          />
          <YAxis
            yAxisId="accuracy"
            domain={[0, 100]}
            tickFormatter={(v: number) => `${v}%`}
            width={52}
          />
          <YAxis yAxisId="drift" orientation="right" width={52} />
          <Tooltip
            labelFormatter={(t) => clock(Number(t))}
            formatter={(value, name) =>
              name === "Accuracy" ? `${Number(value).toFixed(1)}%` : decimal(Number(value))
            }
          />
          <Legend />
          <Line
            yAxisId="accuracy"
            dataKey="accuracy"
            name="Accuracy"
            stroke={ACCURACY}
            dot={false}
            connectNulls
            isAnimationActive={false}
          />
          <Line
            yAxisId="drift"
            dataKey="drift"
            name="Drift magnitude"
            stroke={DRIFT}
            strokeDasharray="5 3"
            dot={false}
            connectNulls
            isAnimationActive={false}
          />
          {alarms.map((t, i) => (
            <ReferenceLine
              key={`alarm-${i}`}
              yAxisId="accuracy"
              x={t}
              stroke={ALARM}
              strokeDasharray="3 3"
            />
          ))}
          {deployments.map((d, i) => (
            <ReferenceLine
              key={`deploy-${i}`}
              yAxisId="accuracy"
              x={Date.parse(d.t)}
              stroke={DEPLOY}
              strokeWidth={2}
              label={{
                value: `v${d.version}`,
                position: "insideTopLeft",
                fill: DEPLOY,
                fontSize: 11,
              }}
            />
          ))}
        </ComposedChart>
      </ResponsiveContainer>
      <p className="chart-key muted">
        <span className="key key-alarm" /> drift alarm <span className="key key-deploy" />{" "}
        deployment
      </p>
    </div>
  );
}
