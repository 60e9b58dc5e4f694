/**
 * Setup file of both test projects (vitest.config.ts): after every test, one turn of the event loop.
 * Vitest's worker reports results to the main process over an RPC that times out after 60 s
 * without an answer, and the answer is read only when the worker's event loop turns. A file whose
 * tests are all synchronous (spawnSync of the CLI, execFileSync of pulumi) never lets it turn
 * between tests: past 60 s for the whole file (test/cli/policy-review-program.test.ts on a slow
 * machine) the run ends with `Timeout calling "onTaskUpdate"` and fails although every test passed.
 */
import { afterEach } from "vitest";

afterEach(() => new Promise<void>((resolve) => setImmediate(resolve)));
