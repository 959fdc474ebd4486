/**
 * Durations as people write them in definitions and read them in output: `500ms`, `30s`, `1m30s`.
 */
import { MendError } from "../errors.js";

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const;
type Unit = keyof typeof UNIT_MS;

/** Largest unit first: segments must follow this order, each unit at most once. */
const UNIT_ORDER: readonly Unit[] = ["d", "h", "m", "s", "ms"];

const PLAIN_NUMBER = /^\d+(?:\.\d+)?$/;
const WHOLE = /^(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$/;
const SEGMENT = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/g;

function invalid(value: string | number): MendError {
  return new MendError(
    "invalid_argument",
    `invalid duration "${value}": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h`,
    { value },
  );
}

/**
 * Parses a duration into whole milliseconds.
 *
 * Accepts a non-negative number of milliseconds (as a number or a bare numeric string) or one or
 * more `<number><unit>` segments with units `ms`, `s`, `m`, `h`, `d`, largest first (`1h30m`,
 * `1.5s`). Fractions of a millisecond are rounded.
 *
 * @throws MendError `invalid_argument` for anything else: negative, empty, unknown or repeated unit.
 */
export function parseDuration(text: string | number): number {
  if (typeof text === "number") {
    if (Number.isFinite(text) && text >= 0) return Math.round(text);
    throw invalid(text);
  }
  const source = text.trim();
  if (PLAIN_NUMBER.test(source)) return Math.round(Number(source));
  if (!WHOLE.test(source)) throw invalid(text);

  let total = 0;
  let previousRank = -1;
  for (const [, amount, unit] of source.matchAll(SEGMENT)) {
    const rank = UNIT_ORDER.indexOf(unit as Unit);
    if (rank <= previousRank) throw invalid(text);
    previousRank = rank;
    total += Number(amount) * UNIT_MS[unit as Unit];
  }
  if (!Number.isFinite(total)) throw invalid(text);
  return Math.round(total);
}

/**
 * Formats milliseconds for people: `250ms` below a second, `1.2s` below a minute, then whole
 * units largest first (`45m`, `1h30m`, `2d3h`), rounded to the second.
 *
 * @throws MendError `invalid_argument` when `ms` is not a finite number.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) {
    throw new MendError("invalid_argument", `cannot format ${ms} as a duration`, { value: ms });
  }
  if (ms < 0) return `-${formatDuration(-ms)}`;
  const wholeMs = Math.round(ms);
  if (wholeMs < 1000) return `${wholeMs}ms`;
  const tenths = Math.round(ms / 100);
  if (tenths < 600) return `${tenths / 10}s`;

  let rest = Math.round(ms / 1000) * 1000;
  let text = "";
  for (const unit of UNIT_ORDER) {
    const count = Math.floor(rest / UNIT_MS[unit]);
    if (count > 0) text += `${count}${unit}`;
    rest -= count * UNIT_MS[unit];
  }
  return text;
}
