/**
 * Turns whatever a handler threw into a {@link Failure} (DESIGN.md "Failure taxonomy").
 *
 * Classification is driven by the tables below, read in a fixed order of trust: user rules, a
 * category the error declares itself, its error code, its HTTP status, its class name, and last
 * the one message Node gives no code for. Each step looks at the error and then its `cause` chain,
 * so `fetch`'s `TypeError: fetch failed` is classified by the `ECONNREFUSED` inside it.
 */
import { formatDuration } from "../model/duration.js";
import {
  FAILURE_CATEGORIES,
  type Failure,
  type FailureCategory,
  failure,
} from "../model/failure.js";

/** A user-supplied classification, checked before the built-in tables. `match` must not throw. */
export interface ClassifierRule {
  match: (err: unknown) => boolean;
  category: FailureCategory;
  /** Defaults to {@link DEFAULT_RECOVERABLE} for the category. */
  recoverable?: boolean;
}

/** Options of {@link classifyError}. */
export interface ClassifyOptions {
  rules?: ClassifierRule[];
  /**
   * Current time in epoch ms. Needed only to turn a `Retry-After` HTTP date into a delay; without
   * it such dates are ignored (delay-seconds still work).
   */
  now?: number;
}

/**
 * Whether a failure of each category is worth retrying when nothing more specific is known.
 * `invalid_state` and `coordination` are not: they escalate to a person.
 */
export const DEFAULT_RECOVERABLE: Readonly<Record<FailureCategory, boolean>> = {
  network: true,
  rate_limited: true,
  external_service: true,
  timeout: true,
  resource_exhausted: true,
  worker_lost: true,
  tool_failure: true,
  quality: true,
  invalid_state: false,
  coordination: false,
  logic: false,
  data_corruption: false,
  unknown: true,
};

/** Node (libuv) and undici error codes. */
const CODE_CATEGORIES: ReadonlyMap<string, FailureCategory> = new Map<string, FailureCategory>([
  ["ECONNRESET", "network"],
  ["ECONNREFUSED", "network"],
  ["ECONNABORTED", "network"],
  ["ETIMEDOUT", "network"],
  ["EPIPE", "network"],
  ["EHOSTUNREACH", "network"],
  ["ENETUNREACH", "network"],
  ["ENETDOWN", "network"],
  ["EAI_AGAIN", "network"],
  // A typo'd host fails every time, but resolvers also answer ENOTFOUND during DNS outages, and
  // retries are bounded either way.
  ["ENOTFOUND", "network"],
  ["UND_ERR_CONNECT_TIMEOUT", "network"],
  ["UND_ERR_HEADERS_TIMEOUT", "network"],
  ["UND_ERR_BODY_TIMEOUT", "network"],
  ["UND_ERR_SOCKET", "network"],
  ["UND_ERR_CLOSED", "network"],
  ["ENOMEM", "resource_exhausted"],
  ["ENOSPC", "resource_exhausted"],
  ["EMFILE", "resource_exhausted"],
  ["ENFILE", "resource_exhausted"],
]);

/** HTTP statuses that do not follow their class (see {@link STATUS_CLASSES}). */
const STATUS_CATEGORIES: ReadonlyMap<number, FailureCategory> = new Map<number, FailureCategory>([
  [408, "timeout"],
  [429, "rate_limited"],
]);

/** HTTP status classes: the server's fault is worth retrying, the request's fault is not. */
const STATUS_CLASSES: ReadonlyArray<{ min: number; max: number; category: FailureCategory }> = [
  { min: 500, max: 599, category: "external_service" },
  { min: 400, max: 499, category: "logic" },
];

/** Error class names. `AbortError` and `TimeoutError` are what `AbortSignal.timeout()` raises. */
const NAME_CATEGORIES: ReadonlyMap<string, FailureCategory> = new Map<string, FailureCategory>([
  ["TimeoutError", "timeout"],
  ["AbortError", "timeout"],
  ["TypeError", "logic"],
  ["RangeError", "logic"],
  ["SyntaxError", "logic"],
  ["ReferenceError", "logic"],
  ["ZodError", "logic"],
]);

/** Messages matched as text: only those Node raises without a code. */
const MESSAGE_CATEGORIES: ReadonlyArray<{ pattern: RegExp; category: FailureCategory }> = [
  { pattern: /\bsocket hang up\b/i, category: "network" },
];

/** Causes followed at most; guards against cycles and absurdly deep wrapping. */
const MAX_CAUSE_DEPTH = 5;

type ErrorLike = Record<string, unknown>;
interface Detection {
  category: FailureCategory;
  recoverable?: boolean;
}

const KNOWN_CATEGORIES: ReadonlySet<string> = new Set(FAILURE_CATEGORIES);

/** Detectors in order of trust; the first to recognise any error of the chain decides. */
const DETECTORS: ReadonlyArray<(e: ErrorLike) => Detection | undefined> = [
  // How tools report `tool_failure` with their own recoverable flag; also accepts a Failure.
  (e) =>
    typeof e.category === "string" && KNOWN_CATEGORIES.has(e.category)
      ? {
          category: e.category as FailureCategory,
          ...(typeof e.recoverable === "boolean" ? { recoverable: e.recoverable } : {}),
        }
      : undefined,
  (e) => byCategory(typeof e.code === "string" ? CODE_CATEGORIES.get(e.code) : undefined),
  (e) => byCategory(statusCategory(statusOf(e))),
  (e) =>
    byCategory(
      (typeof e.name === "string" ? NAME_CATEGORIES.get(e.name) : undefined) ??
        // Zod-like validation errors that were renamed or wrapped.
        (Array.isArray(e.issues) ? "logic" : undefined),
    ),
  (e) =>
    byCategory(
      typeof e.message === "string"
        ? MESSAGE_CATEGORIES.find(({ pattern }) => pattern.test(e.message as string))?.category
        : undefined,
    ),
];

function byCategory(category: FailureCategory | undefined): Detection | undefined {
  return category === undefined ? undefined : { category };
}

function statusCategory(status: number | undefined): FailureCategory | undefined {
  if (status === undefined) return undefined;
  return (
    STATUS_CATEGORIES.get(status) ??
    STATUS_CLASSES.find(({ min, max }) => status >= min && status <= max)?.category
  );
}

function isObject(value: unknown): value is ErrorLike {
  return (typeof value === "object" || typeof value === "function") && value !== null;
}

function causeChain(err: unknown): ErrorLike[] {
  const chain: ErrorLike[] = [];
  let current = err;
  while (isObject(current) && chain.length <= MAX_CAUSE_DEPTH && !chain.includes(current)) {
    chain.push(current);
    current = current.cause;
  }
  return chain;
}

function asStatus(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 100 && value <= 599
    ? value
    : undefined;
}

function statusOf(e: ErrorLike): number | undefined {
  const response = isObject(e.response) ? e.response : undefined;
  return asStatus(e.status) ?? asStatus(e.statusCode) ?? asStatus(response?.status);
}

/** Reads `retry-after` from a plain header object (any case) or a `Headers`-like `.get()`. */
function retryAfterHeader(headers: unknown): unknown {
  if (!isObject(headers)) return undefined;
  if (typeof headers.get === "function") {
    return (headers.get as (name: string) => unknown).call(headers, "retry-after") ?? undefined;
  }
  const key = Object.keys(headers).find((k) => k.toLowerCase() === "retry-after");
  const value = key === undefined ? undefined : headers[key];
  return Array.isArray(value) ? value[0] : value;
}

const DELAY_SECONDS = /^\d+(?:\.\d+)?$/;
/** IMF-fixdate, RFC 850 and asctime all start with a day name. */
const HTTP_DATE = /^[A-Za-z]{3}/;

/** `Retry-After` as delay-seconds or an HTTP date, in ms. */
function parseRetryAfter(value: unknown, now: number | undefined): number | undefined {
  if (typeof value === "number") {
    return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : undefined;
  }
  if (typeof value !== "string") return undefined;
  const text = value.trim();
  if (DELAY_SECONDS.test(text)) return Math.round(Number(text) * 1000);
  if (now === undefined || !HTTP_DATE.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function retryAfterOf(e: ErrorLike, now: number | undefined): number | undefined {
  if (typeof e.retryAfterMs === "number" && Number.isFinite(e.retryAfterMs)) {
    return e.retryAfterMs >= 0 ? Math.round(e.retryAfterMs) : undefined;
  }
  const response = isObject(e.response) ? e.response : undefined;
  return [e.retryAfter, retryAfterHeader(e.headers), retryAfterHeader(response?.headers)]
    .map((value) => parseRetryAfter(value, now))
    .find((ms) => ms !== undefined);
}

function stringify(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The error's message, followed by the messages of its causes that it does not already say. */
function describe(err: unknown, chain: ErrorLike[]): string {
  const [top, ...causes] = chain;
  let text = top !== undefined && typeof top.message === "string" ? top.message : "";
  if (text === "") text = err instanceof Error ? err.name : stringify(err);
  for (const cause of causes) {
    if (
      typeof cause.message === "string" &&
      cause.message !== "" &&
      !text.includes(cause.message)
    ) {
      text += `: ${cause.message}`;
    }
  }
  return text;
}

function firstDefined<T>(chain: ErrorLike[], read: (e: ErrorLike) => T | undefined): T | undefined {
  for (const e of chain) {
    const value = read(e);
    if (value !== undefined) return value;
  }
  return undefined;
}

function detect(err: unknown, chain: ErrorLike[], rules: ClassifierRule[]): Detection {
  const rule = rules.find((r) => r.match(err));
  if (rule) return rule;
  for (const detector of DETECTORS) {
    const found = firstDefined(chain, detector);
    if (found) return found;
  }
  return { category: "unknown" };
}

/**
 * Classifies a thrown value.
 *
 * Never throws (unless a user rule's `match` does). Values that are not errors classify as
 * `unknown`, recoverable, with `String(value)` as message.
 */
export function classifyError(err: unknown, options: ClassifyOptions = {}): Failure {
  const chain = causeChain(err);
  const { category, recoverable } = detect(err, chain, options.rules ?? []);
  const top = chain[0];
  const name = typeof top?.name === "string" ? top.name : undefined;
  const code = firstDefined(chain, (e) => (typeof e.code === "string" ? e.code : undefined));
  const status = firstDefined(chain, statusOf);
  const retryAfterMs = firstDefined(chain, (e) => retryAfterOf(e, options.now));
  return failure(category, recoverable ?? DEFAULT_RECOVERABLE[category], describe(err, chain), {
    ...(name === undefined ? {} : { name }),
    ...(code === undefined ? {} : { code }),
    ...(status === undefined ? {} : { status }),
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  });
}

/** Raised when a task or operation runs past its deadline; classifies as `timeout`. */
export class TaskTimeoutError extends Error {
  override readonly name = "TimeoutError";
  constructor(
    readonly timeoutMs: number,
    message = `timed out after ${formatDuration(timeoutMs)}`,
  ) {
    super(message);
  }
}

/** Raised when the worker running a task is gone (lease expired, unresponsive); `worker_lost`. */
export class WorkerLostError extends Error {
  override readonly name = "WorkerLostError";
  readonly category = "worker_lost" satisfies FailureCategory;
  readonly recoverable = true;
  constructor(
    readonly workerId: string,
    message = `worker ${workerId} was lost before the task finished`,
  ) {
    super(message);
  }
}
