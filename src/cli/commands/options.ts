import { InvalidArgumentError } from "commander";

/** Parses a positive integer option, refusing anything else as a usage error. */
export function parseIntOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  }
  return n;
}

/** Parses a whole number of at least 0 (e.g. `--limit`, where 0 means no limit). */
export function parseCountOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new InvalidArgumentError(`expected a whole number, got "${value}"`);
  }
  return n;
}
