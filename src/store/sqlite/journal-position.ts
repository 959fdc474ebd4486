/** SQL of the SQLite store's record of where its transition journal ends. */

/** Where the transition journal ends, as a `JournalPosition`; no row: the store has no journal yet. */
export const SELECT_JOURNAL_POSITION =
  "SELECT segment, offset, last_seq AS lastSeq FROM journal_position WHERE id = 1";

/** Records where the transition journal ends (segment, offset, last seq). */
export const SAVE_JOURNAL_POSITION = `INSERT INTO journal_position (id, segment, offset, last_seq) VALUES (1, ?, ?, ?)
  ON CONFLICT (id) DO UPDATE SET segment = excluded.segment, offset = excluded.offset, last_seq = excluded.last_seq`;
