/** The store conformance suite against the SQLite store: a fresh file in a temp dir per test. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/open.js";
import { describeStoreConformance } from "./conformance/store-suite.js";

describeStoreConformance("sqlite", async (clock) => {
  const dir = await mkdtemp(join(tmpdir(), "mend-conformance-"));
  const store = await openStore(`sqlite:${join(dir, "mend.db")}`, { clock });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
