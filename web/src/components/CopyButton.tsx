import { useState } from "react";

/** Copies `text`; the Clipboard API exists only in secure contexts (https or localhost). */
export function CopyButton({
  text,
  label,
  testId,
}: {
  text: string;
  label: string;
  testId?: string;
}) {
  const [state, setState] = useState<"idle" | "copied" | "failed">("idle");

  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setState("copied");
    } catch {
      setState("failed");
    }
  }

  return (
    <span className="row">
      <button type="button" onClick={() => void copy()} data-testid={testId}>
        {label}
      </button>
      {state === "copied" && <span role="status">Copied</span>}
      {state === "failed" && <span role="status">Copying is blocked here: select the text</span>}
    </span>
  );
}
