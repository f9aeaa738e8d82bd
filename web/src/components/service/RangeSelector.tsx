export const RANGES = [
  { minutes: 15, label: "15 min" },
  { minutes: 60, label: "1 h" },
  { minutes: 360, label: "6 h" },
  { minutes: 1440, label: "24 h" },
];

export function RangeSelector({
  value,
  onChange,
}: {
  value: number;
  onChange: (minutes: number) => void;
}) {
  return (
    <div className="segmented" role="group" aria-label="Time range">
      {RANGES.map((range) => (
        <button
          key={range.minutes}
          type="button"
          aria-pressed={range.minutes === value}
          onClick={() => onChange(range.minutes)}
        >
          {range.label}
        </button>
      ))}
    </div>
  );
}
