import { defineConfig } from "vitest/config";

// Two projects: fast unit tests (core, devices, policies, components with mocks) and
// integration tests that start the real Pulumi engine and real servers.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: ["test/integration/**"],
          testTimeout: 60_000,
          setupFiles: ["test/helpers/yield-between-tests.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          testTimeout: 900_000,
          hookTimeout: 300_000,
          fileParallelism: false,
          setupFiles: ["test/helpers/yield-between-tests.ts"],
        },
      },
    ],
  },
});
