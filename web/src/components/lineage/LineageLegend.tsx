const STATUSES = ["champion", "candidate", "rejected", "rolled_back", "retired"] as const;

export function LineageLegend() {
  return (
    <ul className="legend" aria-label="Legend">
      {STATUSES.map((status) => (
        <li key={status}>
          <span className={`legend-swatch lineage-${status}`} /> {status.replace("_", " ")}
        </li>
      ))}
    </ul>
  );
}
