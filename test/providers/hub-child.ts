/**
 * A provider process of its own for test/providers/hub-runtime.test.ts: runs the hub provider's
 * update (what `pulumi up` calls) on the inputs in the JSON file argv[2], printing "start" first,
 * so that the test can kill -9 it part-way through a registration.
 */
import * as fs from "node:fs";
import { update } from "../../providers/runtime/hub";

async function main(): Promise<void> {
  const inputs = JSON.parse(fs.readFileSync(process.argv[2]!, "utf8"));
  process.stdout.write("start\n");
  await update(`${inputs.registration}/${inputs.batch}`, {}, inputs);
  process.stdout.write("done\n");
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(1);
});
