/**
 * Errors of a Pulumi program that uses fleetguard's components. A bad declaration must stop the
 * run with a message a person reads (the field, what was got, what is wanted), not a Node stack
 * trace: Pulumi prints a RunError's message alone (sdk/nodejs/errors.ts). Key material never
 * reaches a message (core/errors' describe() redacts it before this point).
 */
import * as pulumi from "@pulumi/pulumi";
import { FleetError } from "../core/errors";

/** Run `build` (a component's argument checks); a FleetError or a component's own error becomes a RunError. */
export function declared<T>(component: string, name: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    throw asRunError(component, name, e);
  }
}

export function asRunError(component: string, name: string, e: unknown): unknown {
  if (pulumi.RunError.isInstance(e)) return e;
  if (e instanceof FleetError) return new pulumi.RunError(`${component} '${name}': ${e.message}`);
  return e; // a defect in fleetguard itself keeps its stack
}
