/** Running the built CLI (`dist/cli/main.js`) as a child process. */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, onTestFinished } from "vitest";

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI = join(REPO_ROOT, "dist", "cli", "main.js");
export const FIXTURES = join(REPO_ROOT, "test", "fixtures");

/** Fails clearly when the CLI has not been built (`npm run build`). */
export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Killed (SIGKILL) and rejected after this long. Default 20 s. */
  timeoutMs?: number;
  /** Written to stdin, which is then closed (stdin is never a TTY here). */
  input?: string;
}

/** Environment for child processes: no inherited store or actor settings, quiet logs. */
function childEnv(extra: CliOptions["env"] = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, MEND_LOG_LEVEL: "warn" };
  delete env.MEND_STORE;
  delete env.MEND_ACTOR;
  delete env.NODE_OPTIONS;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Runs `node dist/cli/main.js ...args` to the end. */
export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  assertBuilt();
  const timeoutMs = options.timeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd ?? REPO_ROOT,
      env: childEnv(options.env),
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `mend ${args.join(" ")} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      );
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

/** A long-running CLI process (e.g. `mend worker`), with its output collected as it comes. */
export interface CliProcess {
  child: ChildProcess;
  readonly pid: number;
  stdout(): string;
  stderr(): string;
  /** Settles when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node dist/cli/main.js ...args` in the background; killed when the test finishes. */
export function spawnCli(args: string[], options: CliOptions = {}): CliProcess {
  assertBuilt();
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: childEnv(options.env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal }));
  });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  if (child.pid === undefined) throw new Error(`could not start mend ${args.join(" ")}`);
  return { child, pid: child.pid, stdout: () => out, stderr: () => err, exited };
}

/** Waits for a background process to exit, failing after `timeoutMs`. */
export async function waitExit(
  proc: CliProcess,
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `process ${proc.pid} did not exit within ${timeoutMs} ms\nstderr: ${proc.stderr()}`,
          ),
        ),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([proc.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The JSON a command printed, asserting it exited 0 (its stderr is the failure message). */
export function json<T = unknown>(r: CliResult): T {
  expect(r.code, `stderr: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as T;
}
