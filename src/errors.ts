/**
 * Every error Mend raises on purpose is a {@link MendError}: a stable string code, a message a
 * person can act on, and the context (ids, values) as fields rather than baked into text.
 */

/** Stable error codes; each maps to one CLI exit code. */
export type MendErrorCode =
  | "invalid_definition"
  | "invalid_argument"
  | "illegal_transition"
  | "not_found"
  | "ambiguous_id"
  | "refused"
  | "lease_lost"
  | "store_incompatible"
  | "store_corrupt"
  | "store_unavailable"
  | "internal";

/** CLI exit codes from DESIGN.md: 0 ok, 1 ran and failed, 2 invalid input, 3 not found, 4 refused. */
export const EXIT_CODES: Record<MendErrorCode, number> = {
  invalid_definition: 2,
  invalid_argument: 2,
  illegal_transition: 4,
  not_found: 3,
  ambiguous_id: 2,
  refused: 4,
  lease_lost: 4,
  store_incompatible: 4,
  store_corrupt: 1,
  store_unavailable: 1,
  internal: 1,
};

/** The one error base class. `context` carries the ids and values involved. */
export class MendError extends Error {
  override readonly name = "MendError";
  constructor(
    readonly code: MendErrorCode,
    message: string,
    readonly context: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The CLI exit code for this error. */
  get exitCode(): number {
    return EXIT_CODES[this.code];
  }
}

/** Type guard usable across module copies (checks the shape, not the prototype). */
export function isMendError(err: unknown): err is MendError {
  return err instanceof MendError;
}
