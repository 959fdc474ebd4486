import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MendError } from "../src/errors.js";
import { formatDuration, parseDuration } from "../src/model/duration.js";

describe("parseDuration", () => {
  it.each([
    [0, 0],
    [250, 250],
    [12.6, 13],
    ["250", 250],
    ["250ms", 250],
    ["1s", 1000],
    ["1.5s", 1500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["1d", 86_400_000],
    ["1m30s", 90_000],
    ["1h30m", 5_400_000],
    ["1d2h3m4s5ms", 93_784_005],
    [" 30s ", 30_000],
    ["1m 30s", 90_000],
  ])("parses %j as %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    [""],
    ["   "],
    ["-1s"],
    [-5],
    [Number.NaN],
    [Number.POSITIVE_INFINITY],
    ["5x"],
    ["s"],
    ["1.s"],
    ["1w"],
    ["30s1m"],
    ["1s1s"],
    ["1 hour"],
    ["1e3ms"],
  ])("refuses %j with an invalid_argument MendError", (text) => {
    let thrown: unknown;
    try {
      parseDuration(text);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(MendError);
    expect((thrown as MendError).code).toBe("invalid_argument");
    expect((thrown as MendError).message).toBe(
      `invalid duration "${String(text)}": use a number of milliseconds or a value like 500ms, 30s, 5m, 1h`,
    );
  });
});

describe("formatDuration", () => {
  it.each([
    [0, "0ms"],
    [250, "250ms"],
    [999, "999ms"],
    [1000, "1s"],
    [1200, "1.2s"],
    [1249, "1.2s"],
    [30_000, "30s"],
    [59_960, "1m"],
    [90_000, "1m30s"],
    [2_700_000, "45m"],
    [5_400_000, "1h30m"],
    [93_784_000, "1d2h3m4s"],
    [-1500, "-1.5s"],
  ])("formats %d ms as %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it("refuses a non-finite number", () => {
    expect(() => formatDuration(Number.POSITIVE_INFINITY)).toThrow(MendError);
  });

  it("round-trips through parseDuration to within its rounding", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 * 86_400_000 }), (ms) => {
        const back = parseDuration(formatDuration(ms));
        const tolerance = ms < 1000 ? 0 : ms < 60_000 ? 50 : 500;
        expect(Math.abs(back - ms)).toBeLessThanOrEqual(tolerance);
      }),
    );
  });
});
