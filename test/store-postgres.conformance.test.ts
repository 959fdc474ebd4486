/** The store conformance suite against the PostgreSQL store: a fresh schema per test. */
import { openStore } from "../src/store/open.js";
import { describeStoreConformance } from "./conformance/store-suite.js";
import { freshSchema } from "./helpers/pg.js";

describeStoreConformance("postgres", async (clock) => {
  const { url, drop } = await freshSchema();
  const store = await openStore(url, { clock });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await drop();
    },
  };
});
