/** The statistics the benchmarks report. */

/** The `q` quantile of `xs` (nearest rank); NaN for none. */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** The median of `xs` (nearest rank: the lower middle one of an even count). */
export const median = (xs: readonly number[]): number => quantile(xs, 0.5);
