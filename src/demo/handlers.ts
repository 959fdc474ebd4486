/**
 * The demo's agents, as a handlers module: `mend worker --handlers dist/demo/handlers.js`. Each
 * agent does a little simulated work through a flaky tool (a model API or a search API) whose
 * faults come from the seeded injector; settings come from the environment (see `config.ts`).
 */
import type { HandlerMap, TaskContext } from "../model/handler.js";
import { type DemoHandlerConfig, demoConfigFromEnv } from "./config.js";
import { type CallSite, FlakyTool, seededRandom } from "./faults.js";
import { appendLedger } from "./ledger.js";
import {
  type PlanInput,
  RESEARCH_HANDLERS,
  type ResearchInput,
  type ReviewInput,
  researchQuery,
  type WriteInput,
} from "./research.js";

/** Tool calls one researcher makes per attempt. */
const SEARCH_CALLS = 3;
/** Model calls the writer makes per attempt (outline, then draft). */
const WRITE_CALLS = 2;

interface Tools {
  config: DemoHandlerConfig;
  llm: FlakyTool;
  search: FlakyTool;
}

let tools: Tools | undefined;

/** Read once per process, at the first task, so that importing the module has no side effects. */
function demoTools(): Tools {
  if (tools === undefined) {
    const config = demoConfigFromEnv();
    tools = {
      config,
      llm: new FlakyTool("llm", config, { minMs: 250, maxMs: 550 }),
      search: new FlakyTool("search", config, { minMs: 200, maxMs: 450 }, { file: config.outage }),
    };
  }
  return tools;
}

function callSite(ctx: TaskContext<unknown>): CallSite {
  // The key as written (`search-3`), not the globally unique id, keeps faults reproducible per seed.
  const taskKey = ctx.taskId.slice(ctx.taskId.lastIndexOf("/") + 1);
  return { taskKey, attempt: ctx.attempt, signal: ctx.signal };
}

/** Records the execution as a side effect an external system would see, then returns `output`. */
function succeed<O>(ctx: TaskContext<unknown>, output: O): O {
  const { ledger } = demoTools().config;
  if (ledger !== null) {
    appendLedger(ledger, {
      workstreamId: ctx.workstreamId,
      task: callSite(ctx).taskKey,
      idempotencyKey: ctx.idempotencyKey,
      attempt: ctx.attempt,
      pid: process.pid,
      at: Date.now(),
    });
  }
  return output;
}

async function plan(ctx: TaskContext<PlanInput>) {
  const { llm } = demoTools();
  const queries = await llm.call(callSite(ctx), 0, 1, () =>
    Array.from({ length: ctx.input.agents }, (_, i) => researchQuery(i + 1)),
  );
  return succeed(ctx, { topic: ctx.input.topic, queries });
}

async function research(ctx: TaskContext<ResearchInput>) {
  const { search, config } = demoTools();
  const site = callSite(ctx);
  const sources: { title: string; url: string; relevance: number }[] = [];
  for (let page = 0; page < SEARCH_CALLS; page++) {
    const random = seededRandom(config.seed, "source", site.taskKey, page);
    sources.push(
      await search.call(site, page, SEARCH_CALLS, () => ({
        title: `${ctx.input.query} — result ${page + 1}`,
        url: `https://example.org/agent-${ctx.input.agent}/result-${page + 1}`,
        relevance: Math.round(random() * 100) / 100,
      })),
    );
  }
  return succeed(ctx, { query: ctx.input.query, sources });
}

async function write(ctx: TaskContext<WriteInput>) {
  const { llm } = demoTools();
  const site = callSite(ctx);
  const outline = await llm.call(site, 0, WRITE_CALLS, () =>
    Array.from({ length: ctx.input.sources }, (_, i) => `Finding ${i + 1}`),
  );
  const words = await llm.call(site, 1, WRITE_CALLS, () => 400 + 120 * outline.length);
  return succeed(ctx, { title: ctx.input.topic, sections: outline.length, words });
}

async function review(ctx: TaskContext<ReviewInput>) {
  const { llm, config } = demoTools();
  const site = callSite(ctx);
  const score = await llm.call(site, 0, 1, () => {
    const random = seededRandom(config.seed, "review", ctx.input.topic);
    return Math.round((0.8 + random() * 0.2) * 100) / 100;
  });
  return succeed(ctx, { verdict: "approved", score });
}

/** The demo's handlers by name. */
const handlers: HandlerMap = {
  [RESEARCH_HANDLERS.plan]: plan,
  [RESEARCH_HANDLERS.research]: research,
  [RESEARCH_HANDLERS.write]: write,
  [RESEARCH_HANDLERS.review]: review,
};

export default handlers;
