/**
 * The demo's workstream: a planner fans out to N researcher agents, whose findings a writer turns
 * into a report that a reviewer checks.
 *
 * ```
 * plan ─┬─ search-1 ─┬─ write ── review
 *       ├─ …         │
 *       └─ search-N ─┘
 * ```
 */
import { defineWorkstream, type WorkstreamDefinition } from "../model/definition.js";

/** Name of the demo workstream. */
export const RESEARCH_WORKSTREAM = "research";

/** Handler names the demo workstream uses; the demo handlers module registers exactly these. */
export const RESEARCH_HANDLERS = {
  plan: "plan",
  research: "research",
  write: "write",
  review: "review",
} as const;

/** The circuit breaker guarding the search API, which every researcher calls. */
export const SEARCH_BREAKER = "search-api";

/** Most researcher agents the demo accepts. */
export const MAX_AGENTS = 64;

const TOPIC = "How do production multi-agent systems recover from failures?";

const ANGLES = [
  "retry policies and backoff for LLM tool calls",
  "handling HTTP 429 and Retry-After in agent frameworks",
  "leases and fencing tokens for crashed workers",
  "idempotency keys for at-least-once task execution",
  "circuit breakers shared across agent workers",
  "checkpointing long-running agent workflows",
  "classifying transient versus permanent failures",
  "dead-letter queues and quarantine of poison tasks",
  "timeouts and hung tool calls in agent pipelines",
  "operator interventions and audit logs for agents",
];

/** The research query of researcher `agent` (from 1). */
export function researchQuery(agent: number): string {
  const angle = ANGLES[(agent - 1) % ANGLES.length]!;
  const round = Math.floor((agent - 1) / ANGLES.length);
  return round === 0 ? angle : `${angle} (follow-up ${round})`;
}

/** Input of the `plan` task. */
export interface PlanInput {
  topic: string;
  agents: number;
}

/** Input of a `search-N` task. */
export interface ResearchInput {
  agent: number;
  query: string;
}

/** Input of the `write` task. */
export interface WriteInput {
  topic: string;
  sources: number;
}

/** Input of the `review` task. */
export interface ReviewInput {
  topic: string;
}

/**
 * The research workstream for `agents` researchers. Timeouts and retry delays are short so the
 * demo finishes in well under a minute while still showing every kind of recovery: a hung call
 * times out after 2 s, and six attempts outlast the two faulty ones plus a lost worker. A 503 gets
 * two attempts only, and only the staged outage makes the search API answer 503, so during the
 * outage some researchers fail for good, and are revived when the breaker guarding the API closes
 * again.
 */
export function researchWorkstream(agents: number): WorkstreamDefinition {
  const searches = Array.from({ length: agents }, (_, i) => `search-${i + 1}`);
  return defineWorkstream({
    name: RESEARCH_WORKSTREAM,
    // Small numbers so the outage plays out in seconds: 3 failures in a row open the breaker for
    // 2 s, then 2 probes must succeed to close it.
    breakers: {
      [SEARCH_BREAKER]: {
        failureThreshold: 3,
        open: "2s",
        halfOpenMaxCalls: 2,
        successThreshold: 2,
      },
    },
    defaults: {
      timeout: "2s",
      retry: {
        maxAttempts: 6,
        backoff: "exponential",
        initial: "200ms",
        factor: 2,
        max: "2s",
        jitter: "full",
        // The built-in timeout backoff starts at 2 s; a hung search is worth retrying sooner here.
        on: { timeout: { initial: "500ms" } },
      },
    },
    tasks: [
      {
        id: "plan",
        handler: RESEARCH_HANDLERS.plan,
        input: { topic: TOPIC, agents } satisfies PlanInput,
      },
      ...searches.map((id, i) => ({
        id,
        handler: RESEARCH_HANDLERS.research,
        deps: ["plan"],
        breaker: SEARCH_BREAKER,
        retry: { on: { external_service: { maxAttempts: 2 } } },
        input: { agent: i + 1, query: researchQuery(i + 1) } satisfies ResearchInput,
      })),
      {
        id: "write",
        handler: RESEARCH_HANDLERS.write,
        deps: searches,
        input: { topic: TOPIC, sources: agents } satisfies WriteInput,
      },
      {
        id: "review",
        handler: RESEARCH_HANDLERS.review,
        deps: ["write"],
        input: { topic: TOPIC } satisfies ReviewInput,
      },
    ],
  });
}
