// Display helpers. Missing values (null/undefined) render as an em dash everywhere.
export const DASH = "—";

type Maybe<T> = T | null | undefined;

/** 0.923 -> "92.3%" */
export function percent(fraction: Maybe<number>, digits = 1): string {
  return fraction == null ? DASH : `${(fraction * 100).toFixed(digits)}%`;
}

/** A change given as a fraction, in signed percentage points: 0.032 -> "+3.2 pts". */
export function signedPoints(fraction: Maybe<number>): string {
  if (fraction == null) return DASH;
  const points = fraction * 100;
  const sign = points > 0 ? "+" : points < 0 ? "-" : "±";
  return `${sign}${Math.abs(points).toFixed(1)} pts`;
}

/** An unsigned amount in percentage points: 0.05 -> "5.0 pts". */
export function points(fraction: Maybe<number>): string {
  return fraction == null ? DASH : `${(fraction * 100).toFixed(1)} pts`;
}

export function num(value: Maybe<number>, digits?: number): string {
  if (value == null) return DASH;
  return digits === undefined ? value.toLocaleString("en-US") : value.toFixed(digits);
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 -> "1.5 KiB" */
export function bytes(value: Maybe<number>): string {
  if (value == null) return DASH;
  let amount = value;
  let unit = 0;
  while (Math.abs(amount) >= 1024 && unit < BYTE_UNITS.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${amount} B` : `${amount.toFixed(1)} ${BYTE_UNITS[unit]}`;
}

/** 75 -> "1 min 15 s" */
export function duration(seconds: Maybe<number>): string {
  if (seconds == null) return DASH;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  const whole = Math.round(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = whole % 60;
  return h > 0 ? `${h} h ${m} min` : `${m} min ${s} s`;
}

/** Seconds with a fixed number of decimals, never switching to minutes: 5.02 -> "5.0 s". */
export function seconds(value: Maybe<number>, digits = 1): string {
  return value == null ? DASH : `${value.toFixed(digits)} s`;
}

/** Milliseconds with at most 2 decimals, no trailing zeros: 9.7234 -> "9.72 ms". */
export function millis(value: Maybe<number>): string {
  return value == null ? DASH : `${Number(value.toFixed(2))} ms`;
}

/** Seconds between two ISO timestamps, or null when either is missing. */
export function secondsBetween(start: Maybe<string>, end: Maybe<string>): number | null {
  if (!start || !end) return null;
  return (Date.parse(end) - Date.parse(start)) / 1000;
}

/** "3 min ago"; future times (clock skew) read as "just now". */
export function relativeTime(iso: Maybe<string>, now: number = Date.now()): string {
  if (!iso) return DASH;
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  if (Number.isNaN(seconds)) return DASH;
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** Local wall-clock time HH:MM:SS of an epoch-milliseconds value. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Local date and time, for tooltips and detail fields. */
export function dateTime(iso: Maybe<string>): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return DASH;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d.getTime())}`;
}

export function versionLabel(version: Maybe<number>): string {
  return version == null ? DASH : `v${version}`;
}

/** Renders a scalar or a small object for a table cell. */
export function plain(value: unknown): string {
  if (value == null) return DASH;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A metric of unknown unit (gate values, thresholds): at most 4 decimals, no trailing zeros. */
export function decimal(value: Maybe<number>): string {
  return value == null ? DASH : String(Number(value.toFixed(4)));
}

/** A flat object as "key: value · key: value" (triggers and the like). */
export function keyValues(object: Maybe<Record<string, unknown>>): string {
  if (!object) return DASH;
  return Object.entries(object)
    .map(([key, value]) => `${key}: ${plain(value)}`)
    .join(" · ");
}
