/** An independent MQTT client (mqtt.js over TLS) for the hub tests: a device with its own key and chain. */
import * as mqtt from "mqtt";
import type { TestDevice } from "./pki";

export interface Attempt {
  client?: mqtt.MqttClient;
  /** why it did not connect: the CONNACK code, a TLS alert, "closed" */
  error?: string;
  code?: number;
}

export function connectDevice(
  port: number,
  hubCaPem: string,
  device: Pick<TestDevice, "keyPem" | "chainPem" | "id">,
  clientId: string = device.id,
): Promise<Attempt> {
  return new Promise((resolve) => {
    const client = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
      key: device.keyPem,
      cert: device.chainPem,
      ca: hubCaPem,
      clientId,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      clean: true,
    });
    let settled = false;
    const settle = (a: Attempt) => {
      if (settled) return;
      settled = true;
      if (!a.client) client.end(true);
      resolve(a);
    };
    client.once("connect", () => settle({ client }));
    client.once("error", (e: Error & { code?: number }) =>
      settle({ error: e.message, ...(typeof e.code === "number" ? { code: e.code } : {}) }),
    );
    client.once("close", () => settle({ error: "closed" }));
  });
}

/** Wait until `cond()` holds, checking every 50 ms; fail after `ms` (a generous bound, not a threshold). */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  ms = 20_000,
  what = "condition",
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
