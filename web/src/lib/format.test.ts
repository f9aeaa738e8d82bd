import { describe, expect, it } from "vitest";
import {
  bytes,
  clock,
  decimal,
  duration,
  millis,
  percent,
  points,
  relativeTime,
  seconds,
  signedPoints,
} from "./format";

describe("format", () => {
  it("renders missing values as a dash", () => {
    for (const f of [percent, signedPoints, points, bytes, duration, decimal, seconds, millis])
      expect(f(null)).toBe("—");
    expect(relativeTime(null)).toBe("—");
  });

  it("formats accuracies, changes and sizes", () => {
    expect(percent(0.9234)).toBe("92.3%");
    expect(percent(1, 0)).toBe("100%");
    expect(signedPoints(0.032)).toBe("+3.2 pts");
    expect(signedPoints(-0.03)).toBe("-3.0 pts");
    expect(signedPoints(0)).toBe("±0.0 pts");
    expect(points(0.05)).toBe("5.0 pts");
    expect(bytes(512)).toBe("512 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(3 * 1024 ** 3)).toBe("3.0 GiB");
    expect(decimal(0.123456)).toBe("0.1235");
    expect(decimal(50)).toBe("50");
  });

  it("formats durations and times", () => {
    expect(duration(4.25)).toBe("4.3 s");
    expect(duration(42)).toBe("42 s");
    expect(duration(75)).toBe("1 min 15 s");
    expect(duration(3720)).toBe("1 h 2 min");
    expect(seconds(5.02)).toBe("5.0 s");
    expect(seconds(0)).toBe("0.0 s");
    expect(seconds(125.44)).toBe("125.4 s");
    expect(millis(9.7234)).toBe("9.72 ms");
    expect(millis(40)).toBe("40 ms");
    const now = Date.parse("2025-11-22T10:00:00Z");
    expect(relativeTime("2025-11-22T09:59:58Z", now)).toBe("just now");
    expect(relativeTime("2025-11-22T09:59:30Z", now)).toBe("30 s ago");
    expect(relativeTime("2025-11-22T09:57:00Z", now)).toBe("3 min ago");
    expect(relativeTime("2025-11-22T07:00:00Z", now)).toBe("3 h ago");
    expect(relativeTime("2025-11-20T10:00:00Z", now)).toBe("2 d ago");
    expect(clock(new Date(2025, 10, 22, 9, 5, 7).getTime())).toBe("09:05:07");
  });
});
