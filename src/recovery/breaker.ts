/**
 * The circuit breaker's state machine, pure: the store keeps each breaker's row and calls these
 * functions inside its transactions, so every worker sees and moves the same breaker. Time comes
 * in as a parameter.
 */
import type { Failure } from "../model/failure.js";
import type { BreakerRecord } from "../model/records.js";
import type { BreakerConfig } from "../model/spec.js";
import type { BreakerStatus } from "../model/states.js";

/** Defaults from seed 002: 5 failures in a row, open 5 minutes, 3 half-open calls. */
export const DEFAULT_BREAKER: Readonly<BreakerConfig> = Object.freeze({
  mode: "consecutive",
  failureThreshold: 5,
  failureRate: 0.5,
  windowMs: 60_000,
  minimumCalls: 10,
  openMs: 300_000,
  halfOpenMaxCalls: 3,
  successThreshold: 3,
});

/** Buckets the rate window is divided into: the window slides a tenth at a time. */
const WINDOW_BUCKETS = 10;

/**
 * Whether a failure says anything about the breaker's dependency. Only recoverable failures do:
 * a 400 is the caller's fault, and a lost worker is the worker's.
 */
export function countsForBreaker(failure: Failure): boolean {
  return failure.recoverable && failure.category !== "worker_lost";
}

/** The part of a breaker row its state machine reads and writes. */
export type BreakerState = Pick<
  BreakerRecord,
  "status" | "openedAt" | "openUntil" | "forced" | "closedAt" | "failures" | "successes" | "window"
>;

/** A status change the store must record as a transition, with why. */
export interface BreakerChange {
  to: BreakerStatus;
  reason: string;
}

/** What an outcome did: the new counters, and a status change when there is one. */
export interface BreakerStep {
  state: BreakerState;
  change: BreakerChange | null;
}

/** A closed breaker with clean counters; `closedAt` null for one that was never open. */
export function closedState(closedAt: number | null): BreakerState {
  return {
    status: "closed",
    openedAt: null,
    openUntil: null,
    forced: false,
    closedAt,
    failures: 0,
    successes: 0,
    window: [],
  };
}

/** An open breaker, probed again after `openMs` (or never, when a person forced it). */
export function openState(config: BreakerConfig, now: number, forced = false): BreakerState {
  return {
    status: "open",
    openedAt: now,
    openUntil: forced ? null : now + config.openMs,
    forced,
    closedAt: null,
    failures: 0,
    successes: 0,
    window: [],
  };
}

/**
 * Feeds one finished call to the breaker. `ok` is a success; a failure is only fed when
 * {@link countsForBreaker} says it counts. Outcomes of calls that started before the breaker
 * opened change nothing while it is open.
 */
export function recordOutcome(
  config: BreakerConfig,
  state: BreakerState,
  ok: boolean,
  now: number,
): BreakerStep {
  if (state.status === "open") return { state, change: null };
  if (state.status === "half_open") {
    if (!ok) {
      return {
        state: openState(config, now),
        change: { to: "open", reason: "a half-open probe failed" },
      };
    }
    const successes = state.successes + 1;
    if (successes >= config.successThreshold) {
      return {
        state: closedState(now),
        change: {
          to: "closed",
          reason: `${successes} half-open probe${successes === 1 ? "" : "s"} succeeded`,
        },
      };
    }
    return { state: { ...state, successes }, change: null };
  }
  if (config.mode === "consecutive") {
    const failures = ok ? 0 : state.failures + 1;
    if (failures >= config.failureThreshold) {
      return {
        state: openState(config, now),
        change: { to: "open", reason: `${failures} failures in a row` },
      };
    }
    return { state: { ...state, failures }, change: null };
  }
  const window = slide(config, state.window, now);
  const bucket = Math.floor(now / bucketMs(config));
  const last = window.at(-1);
  if (last && last[0] === bucket) {
    window[window.length - 1] = [bucket, last[1] + 1, last[2] + (ok ? 0 : 1)];
  } else {
    window.push([bucket, 1, ok ? 0 : 1]);
  }
  const calls = window.reduce((n, b) => n + b[1], 0);
  const failed = window.reduce((n, b) => n + b[2], 0);
  if (!ok && calls >= config.minimumCalls && failed / calls >= config.failureRate) {
    return {
      state: openState(config, now),
      change: {
        to: "open",
        reason: `${failed} of ${calls} calls failed in the last ${Math.round(config.windowMs / 1000)} s`,
      },
    };
  }
  return { state: { ...state, window }, change: null };
}

/** An open breaker whose time is up lets probes through; a forced one waits for a person. */
export function dueForProbe(state: BreakerState, now: number): boolean {
  return (
    state.status === "open" && !state.forced && state.openUntil !== null && state.openUntil <= now
  );
}

/** The half-open state an open breaker moves to when {@link dueForProbe}. */
export function halfOpenState(state: BreakerState): BreakerState {
  return { ...state, status: "half_open", successes: 0, failures: 0, window: [] };
}

/** How many more probes a half-open breaker lets start, with `running` of its tasks running. */
export function probeSlots(config: BreakerConfig, running: number): number {
  return Math.max(0, config.halfOpenMaxCalls - running);
}

function bucketMs(config: BreakerConfig): number {
  return Math.max(1, Math.ceil(config.windowMs / WINDOW_BUCKETS));
}

/** The window's buckets that still fall within `windowMs` of `now`. */
function slide(
  config: BreakerConfig,
  window: readonly [number, number, number][],
  now: number,
): [number, number, number][] {
  const oldest = Math.floor((now - config.windowMs) / bucketMs(config));
  return window.filter((b) => b[0] > oldest).map((b) => [b[0], b[1], b[2]]);
}
