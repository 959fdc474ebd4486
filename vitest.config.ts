import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Real worker processes and real SQLite files: give them room, and keep files in separate
    // processes so one test's workers never share a module instance with another's.
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 30_000,
  },
});
