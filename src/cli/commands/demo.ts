import type { Command } from "commander";

/** `mend demo` (being written). */
export function registerDemo(program: Command): void {
  program.command("demo").description("run the multi-agent research demo");
}
