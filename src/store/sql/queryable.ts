/**
 * What the SQL stores' shared code needs of a database connection: three ways to run one
 * statement. SQL text uses `?` placeholders and the subset of SQL both SQLite and PostgreSQL
 * accept; what differs between them is behind {@link SqlDialect}.
 */

/** A result row, column name to value. */
export type Row = Record<string, unknown>;

/** Runs single statements, inside a transaction or on their own. */
export interface Queryable {
  /** The first row, or undefined. */
  get<T = Row>(sql: string, params?: readonly unknown[]): Promise<T | undefined>;
  all<T = Row>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Runs a write; returns how many rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>;
}

/** The few SQL expressions the two dialects spell differently. */
export interface SqlDialect {
  /** The JSON string at `path` (keys) in a text column, as text. */
  jsonText(column: string, path: readonly string[]): string;
  /** The JSON number at `path` in a text column, as a number. */
  jsonNumber(column: string, path: readonly string[]): string;
  /** The JSON boolean at `path` in a text column, as 1 or 0 (null when absent). */
  jsonFlag(column: string, path: readonly string[]): string;
  /** `column` is one of the values of an array parameter (`?` stands for the whole array). */
  inArray(column: string): string;
  /**
   * Every element of the JSON array in text column `column` is one of the elements of the JSON
   * array parameter (`?`, a JSON string).
   */
  jsonSubsetOf(column: string): string;
  /**
   * Each need in the JSON array of arrays in text column `column` has a resource that is not in
   * the JSON array parameter (`?`: the resources no task can take now).
   */
  needsMet(column: string): string;
  /** What locks the rows a SELECT reads until the transaction ends (empty where one writer). */
  lockRows: string;
  /** How an array parameter for {@link SqlDialect.inArray} is passed. */
  arrayParam(values: readonly string[]): unknown;
  /**
   * A table named `alias` of the rows in a JSON array parameter (`?`, a JSON string of objects),
   * with the given columns and their SQL types (`text`, `bigint`), for set-based statements.
   */
  jsonRows(
    alias: string,
    columns: readonly (readonly [name: string, type: "text" | "bigint"])[],
  ): string;
}
