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
  /** How an array parameter for {@link SqlDialect.inArray} is passed. */
  arrayParam(values: readonly string[]): unknown;
}
