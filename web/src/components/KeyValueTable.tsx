import type { JsonObject } from "../api/types";
import { plain } from "../lib/format";

export function KeyValueTable({ values, empty }: { values: JsonObject; empty: string }) {
  const entries = Object.entries(values);
  if (entries.length === 0) return <p className="muted">{empty}</p>;
  return (
    <div className="table-wrap">
      <table className="kv">
        <tbody>
          {entries.map(([key, value]) => (
            <tr key={key}>
              <th scope="row">{key}</th>
              <td>{plain(value)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
