-- memstate-pg schema: tables, indexes and the triggers that keep the rules in the database.
--
-- Applied by alembic revision 0001 (memstate-pg migrate / MemoryStore.migrate()), or by hand:
--     psql "$DSN" -v ON_ERROR_STOP=1 -1 -f sql/schema.sql -f sql/functions.sql   (one transaction)
-- Everything lives in schema `memstate`; pgvector's `vector` type must be on the search_path
-- (CREATE EXTENSION vector puts it in `public` by default).

CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS memstate;

-- Settings that SQL callers and the Python API share (one row per key).
CREATE TABLE IF NOT EXISTS memstate.config (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);
INSERT INTO memstate.config (key, value) VALUES
    ('max_payload_bytes', '1048576'),
    ('max_content_bytes', '1048576'),
    ('search_exact_max', '2000'),
    ('strict_types', 'false')  -- true: unregistered fact types are refused (else stored as given)
ON CONFLICT (key) DO NOTHING;

-- Embedding models: a vector space with a fixed dimension. Each model gets its own partial
-- HNSW index (see memstate.register_model), so several models live side by side and a
-- search only ever compares vectors of one model.
CREATE TABLE IF NOT EXISTS memstate.embedding_models (
    model      text PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 100),
    dim        int  NOT NULL CHECK (dim BETWEEN 1 AND 16000),
    index_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A namespace's active embedding model, once a re-embed switched it (memstate.reembed_apply):
-- every live fact of the namespace has this model, writes and searches with another model are
-- refused. No row: no rule (any registered model, as before 0004).
CREATE TABLE IF NOT EXISTS memstate.namespace_models (
    namespace   text PRIMARY KEY,
    model       text NOT NULL REFERENCES memstate.embedding_models (model),
    switched_at timestamptz NOT NULL DEFAULT now()
);

-- A re-embed's staging: the new model's vector of a fact (at the version it was computed
-- for), written beside the current one batch by batch, so a killed run resumes; consumed by
-- memstate.reembed_apply. Written by the administrator (no tenant role holds a privilege).
CREATE TABLE IF NOT EXISTS memstate.reembed_vectors (
    model     text   NOT NULL REFERENCES memstate.embedding_models (model),
    fact_id   uuid   NOT NULL,
    namespace text   NOT NULL,
    version   int    NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (model, fact_id)
);
CREATE INDEX IF NOT EXISTS reembed_vectors_ns ON memstate.reembed_vectors (namespace, model);

-- Registered fact types: the shape of their payload (a JSON schema, checked in SQL by
-- memstate.validate_payload), and the constraints the database enforces.
CREATE TABLE IF NOT EXISTS memstate.types (
    type          text PRIMARY KEY CHECK (length(type) BETWEEN 1 AND 200),
    json_schema   jsonb,
    singleton_key text,
    immutable     boolean NOT NULL DEFAULT false,
    text_field    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per commit: a Postgres transaction's worth of fact changes, numbered by seq.
-- kind: commit | promote | discard are "counted" (undoable by rollback);
--       rollback | revert undo earlier commits (listed in `undoes`) and are not counted.
CREATE TABLE IF NOT EXISTS memstate.commits (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace       text NOT NULL,
    session_id      text,
    actor           text,
    reason          text,
    kind            text NOT NULL DEFAULT 'commit'
                    CHECK (kind IN ('commit', 'promote', 'discard', 'rollback', 'revert')),
    idempotency_key text,
    undoes          bigint[],
    undone_by       bigint REFERENCES memstate.commits (seq),
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (namespace, idempotency_key)
);
CREATE INDEX IF NOT EXISTS commits_in_effect
    ON memstate.commits (namespace, seq DESC) WHERE undone_by IS NULL;
CREATE INDEX IF NOT EXISTS commits_created_at ON memstate.commits (namespace, created_at);
-- The commits a commit marked undone (the foreign key undone_by -> seq): deleting a commit
-- (compaction) looks them up here instead of scanning every commit. Few rows: undone only.
CREATE INDEX IF NOT EXISTS commits_undone_by ON memstate.commits (undone_by)
    WHERE undone_by IS NOT NULL;

-- The compaction horizon of each namespace (memstate-pg compact, MemoryStore.compact): the
-- history at and before commit `horizon_seq` may have been pruned, so as_of(seq) needs
-- seq >= horizon_seq and rollback/revert only undo commits after it (else MSH01). Only grows.
-- Written by the owner's compaction functions (sql/functions.sql); no tenant role holds a
-- privilege on it (memstate._horizon reads one namespace's row for the checks).
CREATE TABLE IF NOT EXISTS memstate.compactions (
    namespace     text PRIMARY KEY,
    horizon_seq   bigint NOT NULL,
    horizon_at    timestamptz NOT NULL,  -- the start of the window kept (now() - older_than)
    keep_versions int NOT NULL CHECK (keep_versions >= 1),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

-- The append-only version log: every change of every fact (until the owner compacts history
-- older than a window, see memstate.compactions).
CREATE TABLE IF NOT EXISTS memstate.fact_versions (
    fact_id         uuid   NOT NULL,
    version         int    NOT NULL CHECK (version >= 1),
    seq             bigint NOT NULL REFERENCES memstate.commits (seq),
    namespace       text   NOT NULL,
    type            text   NOT NULL,
    session_id      text,
    op              text   NOT NULL CHECK (op IN ('put', 'update', 'delete')),
    payload         jsonb,
    content         text,
    embedding       vector,
    embedding_model text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (fact_id, version)
);
CREATE INDEX IF NOT EXISTS fact_versions_seq ON memstate.fact_versions (seq);
CREATE INDEX IF NOT EXISTS fact_versions_ns_seq ON memstate.fact_versions (namespace, seq);

-- Current state: one row per live fact, with its vector.
CREATE TABLE IF NOT EXISTS memstate.facts (
    fact_id         uuid PRIMARY KEY,
    namespace       text   NOT NULL,
    type            text   NOT NULL,  -- registered in memstate.types, or schemaless
    session_id      text,
    payload         jsonb  NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    content         text   NOT NULL,
    embedding       vector NOT NULL,
    embedding_model text   NOT NULL REFERENCES memstate.embedding_models (model),
    singleton_value text,
    version         int    NOT NULL,
    commit_seq      bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Set by a delete (the seq of the deleting commit): the facts_delete trigger removes the
    -- row at once. Writers hold no DELETE privilege on this table, since a table-level
    -- UPDATE or DELETE privilege also allows LOCK TABLE, which would stall every tenant.
    deleted_by      bigint
);
CREATE INDEX IF NOT EXISTS facts_ns_type ON memstate.facts (namespace, type);
CREATE INDEX IF NOT EXISTS facts_ns_session ON memstate.facts (namespace, session_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS facts_payload ON memstate.facts USING gin (payload jsonb_path_ops);
-- Singleton constraint: at most one live fact per (namespace, type, payload[singleton_key]).
-- singleton_value is filled by the facts_rules trigger from memstate.types, so the rule
-- holds for every writer, the SQL functions and raw INSERTs alike, in every process.
CREATE UNIQUE INDEX IF NOT EXISTS facts_singleton
    ON memstate.facts (namespace, type, singleton_value) WHERE singleton_value IS NOT NULL;

-- Mirrors: external vector stores fed from the outbox.
CREATE TABLE IF NOT EXISTS memstate.mirrors (
    name               text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    kind               text NOT NULL,
    enabled            boolean NOT NULL DEFAULT true,
    namespaces         text[],          -- NULL: every namespace
    types              text[],          -- NULL: every type
    metadata_fields    text[] NOT NULL DEFAULT '{}',
    options            jsonb  NOT NULL DEFAULT '{}',
    last_synced_seq    bigint,
    last_synced_at     timestamptz,
    last_reconciled_at timestamptz,
    last_reconcile     jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- where the points live, "kind|location|collection" (Mirror.store_key()); NULL for a
    -- store private to one process. Two mirrors writing one collection would take each
    -- other's points for ghosts, so a store is registered once.
    store              text,
    -- status() raises an alert for the mirror when more rows than this are pending
    max_pending        bigint NOT NULL DEFAULT 100000 CHECK (max_pending > 0),
    -- the embedding model whose versions this mirror takes (one vector space per store);
    -- NULL: every model (mirrors registered before 0004)
    model              text
);
CREATE UNIQUE INDEX IF NOT EXISTS mirrors_one_per_store ON memstate.mirrors (store);

-- The transactional outbox: one row per change per enabled mirror, written in the same
-- transaction as the change, deleted by a sync worker only after the mirror acknowledged.
CREATE TABLE IF NOT EXISTS memstate.outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mirror       text   NOT NULL REFERENCES memstate.mirrors (name) ON DELETE CASCADE,
    fact_id      uuid   NOT NULL,
    namespace    text   NOT NULL,
    seq          bigint NOT NULL,
    version      int    NOT NULL,
    op           text   NOT NULL,
    attempts     int    NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    dead_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- The claimable rows of a mirror in claiming order: the range `available_at <= now()` of
-- this index is exactly the ready rows, so a claim never reads the rows in backoff (an
-- index on (mirror, id) made an empty claim filter out every backed-off row, every poll).
CREATE INDEX IF NOT EXISTS outbox_claimable ON memstate.outbox (mirror, available_at, id)
    WHERE dead_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_dead ON memstate.outbox (mirror) WHERE dead_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_fact ON memstate.outbox (mirror, fact_id);

-- The per-fact locks of the sync path (sql/sync_queries.sql `lock_facts`): a worker batch or
-- a reconciliation repair holds the row of slot hash(mirror, fact) FOR UPDATE until it
-- commits, so no fact is written to one mirror by two writers at once. Row locks on a
-- table only memstate_sync may lock (sql/roles.sql): tenants can compute every slot, but
-- cannot take one (advisory locks, used before, are open to every login role). Two facts
-- sharing a slot only make one of them wait a batch.
CREATE TABLE IF NOT EXISTS memstate.sync_slots (
    slot int PRIMARY KEY CHECK (slot BETWEEN 0 AND 16383)
);
INSERT INTO memstate.sync_slots (slot) SELECT pg_catalog.generate_series(0, 16383)
ON CONFLICT (slot) DO NOTHING;
