import { render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { JobLogLine } from "../../api/types";
import { mockApi } from "../../test/api";
import { JobLog } from "./JobLog";

const line = (seq: number): JobLogLine => ({
  job_id: "j1",
  seq,
  level: "INFO",
  message: `step ${seq}`,
  created_at: "2025-11-22T10:00:00+00:00",
});

describe("JobLog", () => {
  it("appends new lines across polls and stops once the finished job is drained", async () => {
    // What the server holds; the test adds lines between polls.
    const held = [line(0), line(1)];
    const { requests } = mockApi({
      "GET /api/jobs/j1/logs": ({ search }) =>
        held.filter((l) => l.seq > Number(search.get("after"))),
    });
    const view = render(<JobLog jobId="j1" finished={false} intervalMs={10} />);

    await waitFor(() => expect(screen.getByTestId("job-log")).toHaveTextContent("step 1"));
    held.push(line(2), line(3));
    await waitFor(() => expect(screen.getByTestId("job-log")).toHaveTextContent("step 3"));

    const shown = [...screen.getByTestId("job-log").querySelectorAll(".log-line")];
    expect(shown.map((el) => el.getAttribute("data-seq"))).toEqual(["0", "1", "2", "3"]);

    // The job ends having written one more line: it is read, then polling stops.
    held.push(line(4));
    view.rerender(<JobLog jobId="j1" finished={true} intervalMs={10} />);
    await waitFor(() => expect(screen.getByText("End of log.")).toBeInTheDocument());
    expect(screen.getByTestId("job-log").querySelectorAll(".log-line")).toHaveLength(5);
    // Each poll asked only for lines after the last one seen.
    const afters = requests.map((r) => r.search.get("after"));
    expect(afters[0]).toBe("-1");
    expect(afters).toEqual(expect.arrayContaining(["1", "3"]));
    const count = requests.length;
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(requests.length).toBe(count);
  });
});
