import { errorText } from "../lib/errors";

export function ErrorMessage({ error }: { error: unknown }) {
  return (
    <p className="error" role="alert" data-testid="error-message">
      {errorText(error)}
    </p>
  );
}
