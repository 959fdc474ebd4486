import { hash } from "node:crypto";
import type { TransitionRecord } from "../model/records.js";

/** Hash of the record before the first one. */
export const GENESIS_HASH = "0".repeat(64);

/** The fields of a transition that its hash covers: all of them but the hash itself. */
export type UnhashedTransition = Omit<TransitionRecord, "hash" | "data" | "detail"> & {
  dataJson: string;
  detailJson: string | null;
};

/**
 * Hash of one transition record, chained to the previous record's hash: changing, dropping or
 * reordering any record breaks every hash after it.
 */
export function transitionHash(prevHash: string, t: UnhashedTransition): string {
  // One-shot hash: it is on the hot path of every state change, and creating a Hash object per
  // record costs more than the digest itself.
  return hash(
    "sha256",
    `${prevHash}\n${t.seq}\n${t.at}\n${t.entity}\n${t.entityId}\n${t.workstreamId ?? ""}\n${t.from ?? ""}\n${t.to}\n${t.event}\n${t.severity}\n${t.actor}\n${t.dataJson}\n${t.detailJson ?? ""}`,
  );
}

/** Result of walking the chain. */
export interface ChainReport {
  ok: boolean;
  checked: number;
  /** First record whose hash or sequence does not follow from the one before. */
  brokenAt?: { seq: number; reason: string };
}

/** Streams records in seq order through the chain check. */
export class ChainVerifier {
  private prevHash = GENESIS_HASH;
  private prevSeq = 0;
  private count = 0;
  private broken: ChainReport["brokenAt"];

  /** Feeds the next record; returns false once the chain is broken. */
  push(t: UnhashedTransition & { hash: string }): boolean {
    if (this.broken) return false;
    if (t.seq !== this.prevSeq + 1) {
      this.broken = { seq: t.seq, reason: `expected seq ${this.prevSeq + 1}, found ${t.seq}` };
      return false;
    }
    const expected = transitionHash(this.prevHash, t);
    if (expected !== t.hash) {
      this.broken = { seq: t.seq, reason: "hash does not match the record and its predecessor" };
      return false;
    }
    this.prevHash = t.hash;
    this.prevSeq = t.seq;
    this.count++;
    return true;
  }

  report(): ChainReport {
    return this.broken
      ? { ok: false, checked: this.count, brokenAt: this.broken }
      : { ok: true, checked: this.count };
  }
}
