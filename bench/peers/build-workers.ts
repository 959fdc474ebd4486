/**
 * The peers' worker entries as plain JavaScript, so that their worker processes run as
 * `node bench/.build/<entry>.js`, as Mend's run as `node dist/cli/main.js`: no TypeScript loader
 * (its memory, its startup, its compile on first import) in any measured process.
 *
 * Each entry and the local modules it imports (followed from its import statements) are
 * transpiled file by file with the TypeScript compiler (`transpileModule`: types erased, nothing
 * bundled) into bench/.build/, which is gitignored. The output keeps the `.js` specifiers the
 * sources already use; bench/package.json's `"type": "module"` makes the files ES modules, and
 * their package imports resolve from bench/node_modules, as the sources' do.
 *
 * The adapters import this module, and the worker entries import the adapters (for their
 * settings), so it is built and loaded in the workers too: it loads the compiler (`typescript`,
 * a root devDependency) only when it builds, never in a worker.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type * as TypeScript from "typescript";

const SOURCE_DIR = "bench/peers";
/** Where the JavaScript goes (relative to the repository root, where the runner runs). */
export const BUILD_DIR = "bench/.build";

/** The worker entries, by file name without `.ts`. */
export type WorkerEntry = "bullmq-worker" | "pgboss-worker" | "graphile-worker";
const ENTRIES: WorkerEntry[] = ["bullmq-worker", "pgboss-worker", "graphile-worker"];

let built = false;

/**
 * Transpiles every worker entry and the local modules it imports into {@link BUILD_DIR}, once
 * per process (later calls return at once). Throws on a syntax error, or on an import from
 * outside bench/peers, which would not resolve from bench/.build/.
 */
export function buildWorkers(): void {
  if (built) return;
  const ts = createRequire(import.meta.url)("typescript") as typeof TypeScript;
  const compilerOptions: TypeScript.CompilerOptions = {
    module: ts.ModuleKind.ESNext,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
  };
  mkdirSync(BUILD_DIR, { recursive: true });
  const todo = ENTRIES.map((e) => `${e}.ts`);
  const done = new Set<string>();
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (done.has(file)) continue;
    done.add(file);
    const source = readFileSync(join(SOURCE_DIR, file), "utf8");
    for (const { fileName } of ts.preProcessFile(source, true, true).importedFiles) {
      if (!fileName.startsWith(".")) continue; // a package: resolved from bench/node_modules
      if (!/^\.\/[^/]+\.js$/.test(fileName)) {
        throw new Error(`${SOURCE_DIR}/${file} imports ${fileName}: only ./x.js imports build`);
      }
      todo.push(fileName.slice(2).replace(/\.js$/, ".ts"));
    }
    const out = ts.transpileModule(source, {
      compilerOptions,
      fileName: file,
      reportDiagnostics: true,
    });
    if (out.diagnostics && out.diagnostics.length > 0) {
      throw new Error(
        `${SOURCE_DIR}/${file}: ${ts.formatDiagnostics(out.diagnostics, {
          getCanonicalFileName: (f) => f,
          getCurrentDirectory: () => process.cwd(),
          getNewLine: () => "\n",
        })}`,
      );
    }
    // Written whole and renamed, so a worker being spawned never reads half a file.
    const target = join(BUILD_DIR, file.replace(/\.ts$/, ".js"));
    writeFileSync(`${target}.${process.pid}.tmp`, out.outputText);
    renameSync(`${target}.${process.pid}.tmp`, target);
  }
  built = true;
}

/** The built entry to run with `node` (built first if this process has not built it yet). */
export function workerScript(entry: WorkerEntry): string {
  buildWorkers();
  return join(BUILD_DIR, `${entry}.js`);
}
