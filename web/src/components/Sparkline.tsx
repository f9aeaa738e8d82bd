import type { DriftPoint } from "../api/types";

const WIDTH = 120;
const HEIGHT = 28;
const PAD = 3;

/** Drift magnitude as an inline SVG polyline, alarms as red dots (no chart library needed). */
export function Sparkline({ points }: { points: DriftPoint[] }) {
  if (points.length === 0) {
    return (
      <span className="muted" data-testid="sparkline">
        no drift data
      </span>
    );
  }
  const max = Math.max(...points.map((p) => p.magnitude), 1e-9);
  const step = points.length > 1 ? (WIDTH - 2 * PAD) / (points.length - 1) : 0;
  const xy = points.map((p, i) => ({
    x: PAD + i * step,
    y: HEIGHT - PAD - (Math.max(p.magnitude, 0) / max) * (HEIGHT - 2 * PAD),
    alarm: p.alarm,
  }));
  const alarms = points.filter((p) => p.alarm).length;
  return (
    <svg
      className="sparkline"
      data-testid="sparkline"
      width={WIDTH}
      height={HEIGHT}
      viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
      role="img"
      aria-label={`drift magnitude, ${points.length} points, ${alarms} alarms`}
    >
      <polyline
        points={xy.map((p) => `${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ")}
        fill="none"
        stroke="currentColor"
        strokeWidth="1.5"
      />
      {xy
        .filter((p) => p.alarm)
        .map((p, i) => (
          <circle key={i} className="alarm-dot" cx={p.x} cy={p.y} r="2.5" />
        ))}
    </svg>
  );
}
