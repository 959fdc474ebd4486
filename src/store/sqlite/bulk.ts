/** Writing a database file that nothing uses yet (a rebuild's), as fast as SQLite allows. */
import Database from "better-sqlite3";

/** Opens a file being built: nothing in it is in use until it is installed and synced. */
export function openUnsynced(path: string): Database.Database {
  const db = new Database(path);
  db.pragma("journal_mode = OFF");
  db.pragma("synchronous = OFF");
  db.pragma("cache_size = -262144");
  return db;
}

/** Rows per multi-row INSERT: one statement call per hundred rows instead of per row. */
const ROWS_PER_INSERT = 100;

/** Inserts rows into `table` a hundred at a time; `flush` writes what is left. */
export function batchInsert(db: Database.Database, table: string, columns: string[]) {
  const row = `(${columns.map(() => "?").join(", ")})`;
  const head = `INSERT INTO ${table} (${columns.join(", ")}) VALUES `;
  const many = db.prepare(head + Array.from({ length: ROWS_PER_INSERT }, () => row).join(", "));
  const one = db.prepare(head + row);
  let values: unknown[] = [];
  let rows = 0;
  return {
    add(row: unknown[]) {
      for (const v of row) values.push(v);
      if (++rows === ROWS_PER_INSERT) {
        many.run(values);
        values = [];
        rows = 0;
      }
    },
    flush() {
      for (let i = 0; i < values.length; i += columns.length) {
        one.run(values.slice(i, i + columns.length));
      }
      values = [];
      rows = 0;
    },
  };
}
