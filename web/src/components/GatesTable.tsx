import type { Gate } from "../api/types";
import { decimal } from "../lib/format";
import { StatusBadge } from "./StatusBadge";

export function GatesTable({ gates }: { gates: Gate[] }) {
  if (gates.length === 0) return <p className="muted">No gates were evaluated.</p>;
  return (
    <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th>Gate</th>
            <th className="num">Value</th>
            <th className="num">Threshold</th>
            <th>Result</th>
            <th>Detail</th>
          </tr>
        </thead>
        <tbody>
          {gates.map((gate) => (
            <tr key={gate.name} data-testid="gate-row" data-gate={gate.name}>
              <td>{gate.name}</td>
              <td className="num">{decimal(gate.value)}</td>
              <td className="num">{decimal(gate.threshold)}</td>
              <td>
                <StatusBadge value={gate.passed ? "passed" : "failed"}>
                  {gate.passed ? "pass" : "fail"}
                </StatusBadge>
              </td>
              <td>{gate.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
