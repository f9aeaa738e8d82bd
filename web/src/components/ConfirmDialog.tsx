import { useEffect, useRef, type ReactNode } from "react";

interface Props {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  onConfirm: () => void;
  onCancel: () => void;
}

/** A modal question in the page (not window.confirm, which tests and some browsers suppress). */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onCancel }: Props) {
  const cancel = useRef<HTMLButtonElement>(null);
  const onCancelRef = useRef(onCancel);
  useEffect(() => {
    onCancelRef.current = onCancel;
  }, [onCancel]);
  // Once per opening: the parent re-renders on every poll and must not steal focus each time.
  useEffect(() => {
    cancel.current?.focus();
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") onCancelRef.current();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
  return (
    <div className="backdrop">
      <div
        className="panel dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby="confirm-title"
        data-testid="confirm-dialog"
      >
        <h2 id="confirm-title">{title}</h2>
        <div>{children}</div>
        <div className="row">
          <button type="button" className="danger" onClick={onConfirm} data-testid="confirm-yes">
            {confirmLabel}
          </button>
          <button type="button" ref={cancel} onClick={onCancel} data-testid="confirm-no">
            Cancel
          </button>
        </div>
      </div>
    </div>
  );
}
