/**
 * Versioned schema for the SQLite store. Each entry is applied once, in order, inside a
 * transaction; `PRAGMA user_version` records how far a database has come.
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE workstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    on_failure TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX workstreams_name ON workstreams(name);

  CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    workstream_id TEXT NOT NULL REFERENCES workstreams(id),
    key TEXT NOT NULL,
    handler TEXT NOT NULL,
    input TEXT,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    retry TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    critical INTEGER NOT NULL,
    deps TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    lease_token INTEGER,
    lease_worker TEXT,
    lease_expires_at INTEGER,
    last_delay_ms INTEGER,
    worker_lost_streak INTEGER NOT NULL,
    output TEXT,
    last_error TEXT,
    idempotency_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX tasks_workstream ON tasks(workstream_id, status);
  CREATE INDEX tasks_ready ON tasks(priority DESC, run_at) WHERE status = 'queued';
  CREATE INDEX tasks_leases ON tasks(lease_expires_at) WHERE status = 'running';

  CREATE TABLE task_deps (
    task_id TEXT NOT NULL,
    dep_id TEXT NOT NULL,
    PRIMARY KEY (task_id, dep_id)
  ) WITHOUT ROWID;
  CREATE INDEX task_deps_dep ON task_deps(dep_id);

  CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    handlers TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
  );

  CREATE TABLE transitions (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    workstream_id TEXT,
    from_state TEXT,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    detail TEXT,
    hash TEXT NOT NULL
  );
  -- By workstream, not by entity: an entity-keyed index takes inserts all over the tree (task
  -- keys sort apart from the order tasks run in); this one is appended to, and an entity's
  -- history is found within its workstream.
  CREATE INDEX transitions_workstream ON transitions(workstream_id, seq);

  CREATE TABLE interventions (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    command TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT,
    before TEXT,
    after TEXT
  );

  CREATE TABLE leaders (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
  );
  `,
  // v2: where the transition journal (segment files beside the database) ends after the last
  // commit, so a writer can cut off records of a transaction whose commit never happened.
  `
  CREATE TABLE journal_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    segment TEXT NOT NULL,
    offset INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
  );
  `,
  // v3: materialized checkpoint folds (src/state/checkpoints.ts): a cache of the transition log,
  // written lazily when checkpoints are read, never on the hot path. `hash` is the hash of the
  // record at `seq`; a snapshot whose record no longer matches is ignored.
  `
  CREATE TABLE checkpoint_snapshots (
    workstream_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (workstream_id, seq)
  ) WITHOUT ROWID;
  `,
  // v4: recovery strategies (issue 4). Breakers, the degradation level and detected patterns are
  // entities with their own transitions; tasks name their breaker, fallbacks and compensation.
  `
  ALTER TABLE tasks ADD COLUMN deadline_ms INTEGER;
  ALTER TABLE tasks ADD COLUMN breaker TEXT;
  ALTER TABLE tasks ADD COLUMN revivals INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tasks ADD COLUMN fallbacks TEXT;
  ALTER TABLE tasks ADD COLUMN compensation TEXT;
  ALTER TABLE tasks ADD COLUMN quality REAL;
  ALTER TABLE tasks ADD COLUMN quality_threshold REAL;
  ALTER TABLE tasks ADD COLUMN escalation TEXT;
  -- The claim gate and half-open probe count look tasks up by breaker; most tasks have none.
  CREATE INDEX tasks_breaker ON tasks(breaker, status) WHERE breaker IS NOT NULL;
  -- Revival scans failed tasks only.
  CREATE INDEX tasks_failed ON tasks(updated_at) WHERE status = 'failed';

  ALTER TABLE workstreams ADD COLUMN revive INTEGER NOT NULL DEFAULT 1;
  ALTER TABLE workstreams ADD COLUMN compensation TEXT NOT NULL DEFAULT '{"on":["cancelled"],"order":"reverse"}';
  ALTER TABLE workstreams ADD COLUMN compensates TEXT;

  CREATE TABLE breakers (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    opened_at INTEGER,
    open_until INTEGER,
    forced INTEGER NOT NULL,
    closed_at INTEGER,
    failures INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    window TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );

  CREATE TABLE degradation (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    level INTEGER NOT NULL,
    name TEXT NOT NULL,
    quality REAL NOT NULL,
    capabilities TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );

  CREATE TABLE patterns (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    detector TEXT NOT NULL,
    subject TEXT NOT NULL,
    confidence REAL NOT NULL,
    message TEXT NOT NULL,
    action TEXT,
    detected_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX patterns_status ON patterns(status);
  `,

  // v5: workers' capabilities and operator control; tasks' required capabilities, resources and
  // stall detection; resources (a running task's `held` says what it holds).
  `
  ALTER TABLE workers ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]';
  ALTER TABLE workers ADD COLUMN supervised INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE workers ADD COLUMN control TEXT;

  ALTER TABLE tasks ADD COLUMN requires TEXT;
  ALTER TABLE tasks ADD COLUMN resources TEXT;
  ALTER TABLE tasks ADD COLUMN held TEXT;
  ALTER TABLE tasks ADD COLUMN progress_at INTEGER;
  ALTER TABLE tasks ADD COLUMN stall_after_ms INTEGER;
  ALTER TABLE tasks ADD COLUMN stalled_at INTEGER;

  CREATE TABLE resources (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    max_holders INTEGER NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );

  `,

  // v6: the claim walks the ready tasks of each of a worker's handlers, not all ready tasks:
  // a backlog for other workers' handlers no longer costs every claim a scan of it.
  `
  DROP INDEX tasks_ready;
  CREATE INDEX tasks_claim ON tasks(handler, priority DESC, run_at) WHERE status = 'queued';
  `,

  // v7: the monitor's sweep looks at queued tasks with a deadline, and the resource listing at
  // queued tasks that need resources, every second: both read all queued tasks without these
  // (100,000 queued: 11 and 10 ms a sweep on PostgreSQL), though few tasks have either.
  `
  CREATE INDEX tasks_deadline ON tasks(created_at) WHERE status = 'queued' AND deadline_ms IS NOT NULL;
  CREATE INDEX tasks_needing ON tasks(id) WHERE status = 'queued' AND resources IS NOT NULL;
  `,
];
