import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { FAILURE_CATEGORIES, type FailureCategory } from "../src/model/failure.js";
import {
  type ClassifierRule,
  classifyError,
  DEFAULT_RECOVERABLE,
  TaskTimeoutError,
  WorkerLostError,
} from "../src/recovery/classify.js";

function withCode(code: string, message = `boom ${code}`): Error {
  return Object.assign(new Error(message), { code });
}

function httpError(field: "status" | "statusCode" | "response", status: number): Error {
  const err = new Error(`HTTP ${status}`);
  return Object.assign(err, field === "response" ? { response: { status } } : { [field]: status });
}

function named(name: string): Error {
  const err = new Error(`a ${name}`);
  err.name = name;
  return err;
}

const codeRows: [string, FailureCategory][] = [
  ["ECONNRESET", "network"],
  ["ECONNREFUSED", "network"],
  ["ECONNABORTED", "network"],
  ["ETIMEDOUT", "network"],
  ["EPIPE", "network"],
  ["EHOSTUNREACH", "network"],
  ["ENETUNREACH", "network"],
  ["ENETDOWN", "network"],
  ["EAI_AGAIN", "network"],
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
];

const statusRows: [number, FailureCategory, boolean][] = [
  [429, "rate_limited", true],
  [500, "external_service", true],
  [502, "external_service", true],
  [503, "external_service", true],
  [504, "external_service", true],
  [501, "external_service", true],
  [599, "external_service", true],
  [408, "timeout", true],
  [400, "logic", false],
  [401, "logic", false],
  [403, "logic", false],
  [404, "logic", false],
  [405, "logic", false],
  [409, "logic", false],
  [410, "logic", false],
  [422, "logic", false],
  [418, "logic", false],
  [302, "unknown", true],
];

describe("classifyError: error codes", () => {
  it.each(codeRows)("%s → %s, recoverable, code kept", (code, category) => {
    expect(classifyError(withCode(code))).toEqual({
      category,
      recoverable: true,
      message: `boom ${code}`,
      name: "Error",
      code,
    });
  });

  it("classifies the 'socket hang up' message, which Node gives no code", () => {
    expect(classifyError(new Error("socket hang up"))).toMatchObject({
      category: "network",
      recoverable: true,
    });
  });

  it("does not classify other messages by text", () => {
    expect(classifyError(new Error("connection reset by peer")).category).toBe("unknown");
  });

  it("ignores codes it does not know, and numeric codes", () => {
    expect(classifyError(withCode("ERR_SOMETHING")).category).toBe("unknown");
    expect(classifyError(Object.assign(new Error("x"), { code: 104 })).code).toBeUndefined();
    expect(classifyError(withCode("constructor")).category).toBe("unknown");
  });
});

describe("classifyError: HTTP status", () => {
  const cases = statusRows.flatMap(([status, category, recoverable]) =>
    (["status", "statusCode", "response"] as const).map(
      (field) => [status, field, category, recoverable] as const,
    ),
  );
  it.each(cases)("%d in %s → %s (recoverable %s)", (status, field, category, recoverable) => {
    const failure = classifyError(httpError(field, status));
    expect(failure.category).toBe(category);
    expect(failure.recoverable).toBe(recoverable);
    expect(failure.status).toBe(status);
  });

  it("ignores values that are not HTTP statuses", () => {
    expect(classifyError(Object.assign(new Error("x"), { status: "503" })).category).toBe(
      "unknown",
    );
    expect(classifyError(Object.assign(new Error("x"), { status: 700 })).status).toBeUndefined();
  });

  it("prefers an error code over a status", () => {
    const err = Object.assign(withCode("ECONNRESET"), { status: 400 });
    expect(classifyError(err).category).toBe("network");
  });
});

describe("classifyError: error names and shapes", () => {
  const zodLike = Object.assign(new Error("invalid input"), { issues: [{ path: ["a"] }] });
  const rows: [string, unknown, FailureCategory, boolean][] = [
    ["AbortError", named("AbortError"), "timeout", true],
    ["TimeoutError", named("TimeoutError"), "timeout", true],
    ["DOMException TimeoutError", new DOMException("late", "TimeoutError"), "timeout", true],
    ["TaskTimeoutError", new TaskTimeoutError(5000), "timeout", true],
    ["TypeError", new TypeError("x is not a function"), "logic", false],
    ["RangeError", new RangeError("bad length"), "logic", false],
    ["SyntaxError", new SyntaxError("Unexpected token"), "logic", false],
    ["ReferenceError", new ReferenceError("y is not defined"), "logic", false],
    ["ZodError by name", named("ZodError"), "logic", false],
    ["ZodError-like issues array", zodLike, "logic", false],
    ["WorkerLostError", new WorkerLostError("w_1"), "worker_lost", true],
    ["plain Error", new Error("what"), "unknown", true],
    ["thrown string", "just a string", "unknown", true],
    ["thrown undefined", undefined, "unknown", true],
  ];
  it.each(rows)("%s → %s (recoverable %s)", (_label, err, category, recoverable) => {
    const failure = classifyError(err);
    expect(failure.category).toBe(category);
    expect(failure.recoverable).toBe(recoverable);
  });

  it("keeps the error's name and message, or String() of a non-error", () => {
    expect(classifyError(new TypeError("x is not a function"))).toEqual({
      category: "logic",
      recoverable: false,
      message: "x is not a function",
      name: "TypeError",
    });
    expect(classifyError("just a string").message).toBe("just a string");
    expect(classifyError(42).message).toBe("42");
    expect(classifyError(new TaskTimeoutError(90_000)).message).toBe("timed out after 1m30s");
  });
});

describe("classifyError: declared category", () => {
  it("honours a tool's category and its recoverable flag", () => {
    const notRecoverable = Object.assign(new Error("tool said no"), {
      category: "tool_failure",
      recoverable: false,
    });
    const recoverable = Object.assign(new Error("tool hiccup"), {
      category: "tool_failure",
      recoverable: true,
    });
    expect(classifyError(notRecoverable)).toMatchObject({
      category: "tool_failure",
      recoverable: false,
    });
    expect(classifyError(recoverable)).toMatchObject({
      category: "tool_failure",
      recoverable: true,
    });
  });

  it("takes the category's default when no flag is given, and beats the tables", () => {
    const err = Object.assign(new TypeError("state mismatch"), { category: "invalid_state" });
    expect(classifyError(err)).toMatchObject({ category: "invalid_state", recoverable: false });
  });

  it("ignores a category that is not one of Mend's", () => {
    const err = Object.assign(new Error("x"), { category: "banana", recoverable: false });
    expect(classifyError(err)).toMatchObject({ category: "unknown", recoverable: true });
  });

  it("classifies an existing Failure as itself", () => {
    const first = classifyError(
      Object.assign(new Error("slow down"), { status: 429, headers: { "retry-after": "7" } }),
    );
    expect(classifyError(first)).toEqual(first);
  });
});

describe("classifyError: cause chain", () => {
  it("classifies by the cause when the wrapper says nothing", () => {
    const err = new TypeError("fetch failed", {
      cause: withCode("ECONNREFUSED", "connect refused"),
    });
    expect(classifyError(err)).toEqual({
      category: "network",
      recoverable: true,
      message: "fetch failed: connect refused",
      name: "TypeError",
      code: "ECONNREFUSED",
    });
  });

  it("survives a cyclic cause chain", () => {
    const a = new Error("a") as Error & { cause?: unknown };
    const b = new Error("b", { cause: a });
    a.cause = b;
    expect(classifyError(a)).toMatchObject({ category: "unknown", message: "a: b" });
  });

  it("classifies a real fetch to a closed port as network", async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const err = await fetch(`http://127.0.0.1:${port}/`).catch((e: unknown) => e);
    expect(classifyError(err)).toMatchObject({ category: "network", recoverable: true });
  });
});

describe("classifyError: user rules", () => {
  const quota: ClassifierRule = {
    match: (err) => err instanceof Error && err.message.includes("quota"),
    category: "resource_exhausted",
  };
  const fatal: ClassifierRule = {
    match: (err) => err instanceof Error && err.message.includes("fatal"),
    category: "network",
    recoverable: false,
  };

  it("checks rules before the tables, first match wins", () => {
    const err = Object.assign(new Error("quota exceeded, fatal"), { status: 400 });
    expect(classifyError(err, { rules: [quota, fatal] })).toMatchObject({
      category: "resource_exhausted",
      recoverable: true,
      status: 400,
    });
    expect(classifyError(err, { rules: [fatal, quota] })).toMatchObject({
      category: "network",
      recoverable: false,
    });
  });

  it("falls through to the tables when no rule matches", () => {
    expect(classifyError(new TypeError("nope"), { rules: [quota] }).category).toBe("logic");
  });
});

describe("classifyError: Retry-After", () => {
  const now = Date.UTC(2026, 0, 1, 12, 0, 0);
  const in90s = new Date(now + 90_000).toUTCString();
  const rateLimited = (extra: Record<string, unknown>) =>
    Object.assign(new Error("slow down"), { status: 429 }, extra);

  it.each([
    ["headers, seconds", { headers: { "retry-after": "30" } }, 30_000],
    ["headers, any case", { headers: { "Retry-After": "5" } }, 5000],
    ["headers, array value", { headers: { "retry-after": ["2"] } }, 2000],
    [
      "response.headers, plain",
      { response: { status: 429, headers: { "retry-after": "4" } } },
      4000,
    ],
    [
      "response.headers, Headers",
      { response: { status: 429, headers: new Headers({ "Retry-After": "6" }) } },
      6000,
    ],
    ["retryAfter seconds", { retryAfter: 3 }, 3000],
    ["retryAfter string", { retryAfter: "1.5" }, 1500],
    ["retryAfterMs", { retryAfterMs: 1234 }, 1234],
    ["HTTP date in headers", { headers: { "retry-after": in90s } }, 90_000],
    ["HTTP date in retryAfter", { retryAfter: in90s }, 90_000],
    [
      "HTTP date in Headers",
      { response: { headers: new Headers({ "retry-after": in90s }) } },
      90_000,
    ],
    [
      "HTTP date in the past",
      { headers: { "retry-after": new Date(now - 5000).toUTCString() } },
      0,
    ],
  ])("reads %s", (_label, extra, ms) => {
    expect(classifyError(rateLimited(extra), { now }).retryAfterMs).toBe(ms);
  });

  it.each([
    ["an HTTP date without now", { headers: { "retry-after": in90s } }],
    ["garbage", { headers: { "retry-after": "soon" } }],
    ["a negative number", { retryAfter: -3 }],
    ["a number that parses as a year", { headers: { "retry-after": "-5" } }],
    ["no header", { headers: new Headers() }],
  ])("ignores %s", (label, extra) => {
    const options = label === "an HTTP date without now" ? {} : { now };
    expect(classifyError(rateLimited(extra), options).retryAfterMs).toBeUndefined();
  });
});

describe("DEFAULT_RECOVERABLE", () => {
  it("covers every category and escalates the ones DESIGN.md says escalate", () => {
    expect(Object.keys(DEFAULT_RECOVERABLE).sort()).toEqual([...FAILURE_CATEGORIES].sort());
    const notRecoverable = FAILURE_CATEGORIES.filter((c) => !DEFAULT_RECOVERABLE[c]).sort();
    expect(notRecoverable).toEqual(["coordination", "data_corruption", "invalid_state", "logic"]);
  });
});
