/**
 * The shape every dynamic provider's `check()` shares: run each input's checks, turn a FleetError
 * into a check failure on that property (Pulumi shows it naming the property, no stack), and let
 * anything else, a defect, go on as an error.
 */
import { FleetError } from "../../core/errors";

export function checker(): {
  failures: Array<{ property: string; reason: string }>;
  at: (property: string, f: () => void) => void;
} {
  const failures: Array<{ property: string; reason: string }> = [];
  const at = (property: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      if (e instanceof FleetError) failures.push({ property, reason: e.message });
      else throw e;
    }
  };
  return { failures, at };
}
