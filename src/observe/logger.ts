import pino from "pino";

/** Structured log methods given to handlers as `ctx.log` and used by the engine. */
export interface Logger {
  debug(msg: string, data?: object): void;
  info(msg: string, data?: object): void;
  warn(msg: string, data?: object): void;
  error(msg: string, data?: object): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Log levels, quietest last. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/**
 * A JSON-lines logger on stderr (pino), so stdout stays free for command output and `--json`.
 * Level from the argument, then `MEND_LOG_LEVEL`, then `warn`.
 */
export function createLogger(level?: LogLevel): Logger {
  const resolved = level ?? (process.env.MEND_LOG_LEVEL as LogLevel | undefined) ?? "warn";
  return wrap(pino({ level: resolved, base: { pid: process.pid } }, pino.destination(2)));
}

function wrap(p: pino.Logger): Logger {
  return {
    debug: (msg, data) => p.debug(data ?? {}, msg),
    info: (msg, data) => p.info(data ?? {}, msg),
    warn: (msg, data) => p.warn(data ?? {}, msg),
    error: (msg, data) => p.error(data ?? {}, msg),
    child: (bindings) => wrap(p.child(bindings)),
  };
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};
