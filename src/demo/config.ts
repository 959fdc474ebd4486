/**
 * The demo's settings as its worker processes see them. They travel in environment variables, so
 * that every worker, including one started after another was killed, injects the same faults.
 */
import { MendError } from "../errors.js";
import type { FaultConfig } from "./faults.js";

/** Environment variables the demo handlers read. */
export const DEMO_ENV = {
  seed: "MEND_DEMO_SEED",
  faultRate: "MEND_DEMO_FAULT_RATE",
  ledger: "MEND_DEMO_LEDGER",
  outage: "MEND_DEMO_OUTAGE",
} as const;

/** Seed used when none is given. */
export const DEFAULT_SEED = 42;
/** Fault rate used when none is given. */
export const DEFAULT_FAULT_RATE = 0.3;

/** What the demo handlers need to know. */
export interface DemoHandlerConfig extends FaultConfig {
  /** JSONL file each successful handler execution is appended to; null to keep no ledger. */
  ledger: string | null;
  /** While this file exists the search API is down (every call answers 503); null: never. */
  outage: string | null;
}

/** The environment variables that carry `config` to a worker process. */
export function demoEnv(config: DemoHandlerConfig): Record<string, string> {
  return {
    [DEMO_ENV.seed]: String(config.seed),
    [DEMO_ENV.faultRate]: String(config.rate),
    ...(config.ledger === null ? {} : { [DEMO_ENV.ledger]: config.ledger }),
    ...(config.outage === null ? {} : { [DEMO_ENV.outage]: config.outage }),
  };
}

/**
 * Reads the handlers' settings from `env`, with the demo's defaults for what is absent.
 *
 * @throws MendError `invalid_argument` naming the variable when a value is malformed.
 */
export function demoConfigFromEnv(env: NodeJS.ProcessEnv = process.env): DemoHandlerConfig {
  return {
    seed: parseSeed(env[DEMO_ENV.seed] ?? String(DEFAULT_SEED), DEMO_ENV.seed),
    rate: parseFaultRate(env[DEMO_ENV.faultRate] ?? String(DEFAULT_FAULT_RATE), DEMO_ENV.faultRate),
    ledger: env[DEMO_ENV.ledger] || null,
    outage: env[DEMO_ENV.outage] || null,
  };
}

/**
 * Parses a seed: any safe integer.
 *
 * @throws MendError `invalid_argument` naming `what`.
 */
export function parseSeed(value: string, what = "--seed"): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n)) {
    throw new MendError("invalid_argument", `${what} must be an integer, got "${value}"`, {
      [what]: value,
    });
  }
  return n;
}

/**
 * Parses a fault rate: a probability from 0 to 1.
 *
 * @throws MendError `invalid_argument` naming `what`.
 */
export function parseFaultRate(value: string, what = "--fault-rate"): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1) {
    throw new MendError(
      "invalid_argument",
      `${what} must be a probability from 0 to 1 (e.g. 0.3), got "${value}"`,
      { [what]: value },
    );
  }
  return n;
}
