-- Named queries of the sync path: mirror registry, backfill, outbox claiming, reconciliation.
-- Loaded by memstate_pg.queries.load("sync_queries.sql"); `-- name: x` starts query `x`.
-- Every function is schema-qualified (pg_catalog.*, memstate.*) and every parameter cast:
-- an overload planted in a schema on a caller's search_path can never be picked (the
-- worker also pins search_path = pg_catalog, pg_temp on its connections).
--
-- The claiming protocol (memstate_pg/sync/worker.py): one transaction per batch per mirror.
--   claim         ready rows FOR UPDATE SKIP LOCKED (no row is claimed by two workers);
--   lock_facts    one row lock per fact in memstate.sync_slots, SKIP LOCKED (no fact is
--                 written to one mirror by two writers at once); rows of facts another
--                 writer holds are left alone and the claim moves on past them;
--   fact_sizes    what the facts weigh: a batch stops at the worker's byte budget, and a
--                 fact larger than the worker takes is parked dead (`park`);
--   fact_states   the CURRENT state of those facts, read AFTER the locks are held;
--   (the mirror is written)
--   ack / fail    delete the rows the mirror acknowledged, back off the others; COMMIT.
-- A worker that dies mid-batch aborts its transaction: its row locks vanish and the rows are
-- claimable again. Nothing is lost, and a retry is idempotent.
--
-- Keyset pages over facts use `fact_id >= start AND fact_id IS DISTINCT FROM exclude`
-- (start = the nil UUID and exclude = NULL for the first page, then start = exclude = the
-- last id): an index range condition in custom and generic plans alike, with no
-- `$1 IS NULL OR …` that would turn a prepared statement into a full scan per page.

-- name: upsert_mirror
-- (The unique index mirrors_one_per_store refuses a second name for one store; register
-- asks `mirror_on_store` first, for a clear error.)
-- `model`: the embedding model whose versions the mirror takes (NULL: every model).
INSERT INTO memstate.mirrors AS m (name, kind, enabled, namespaces, types, metadata_fields, options, store, model)
VALUES (%(name)s::text, %(kind)s::text, true, %(namespaces)s::text[], %(types)s::text[],
        %(metadata_fields)s::text[], %(options)s::jsonb, %(store)s::text, %(model)s::text)
ON CONFLICT (name) DO UPDATE SET
    kind = excluded.kind, enabled = true, namespaces = excluded.namespaces,
    types = excluded.types, metadata_fields = excluded.metadata_fields, options = excluded.options,
    store = excluded.store, model = excluded.model
RETURNING (xmax = 0) AS created

-- name: mirror_on_store
-- The other registered mirror that writes the store (kind, location, collection), if any.
SELECT m.name FROM memstate.mirrors m
WHERE m.store = %(store)s::text AND m.name <> %(name)s::text

-- name: delete_mirror
DELETE FROM memstate.mirrors WHERE name = %(name)s::text RETURNING name

-- name: mirror_config
SELECT name, kind, enabled, namespaces, types, metadata_fields, options, model,
       last_reconciled_at, extract(epoch FROM pg_catalog.clock_timestamp() - last_reconciled_at)::float8 AS reconciled_ago
FROM memstate.mirrors WHERE name = %(name)s::text

-- name: mirror_configs
SELECT name, kind, enabled, namespaces, types, metadata_fields, options, model,
       last_reconciled_at, extract(epoch FROM pg_catalog.clock_timestamp() - last_reconciled_at)::float8 AS reconciled_ago
FROM memstate.mirrors ORDER BY name

-- name: scope_count
SELECT pg_catalog.count(*) AS n FROM memstate.facts f
WHERE (%(namespaces)s::text[] IS NULL OR f.namespace = ANY (%(namespaces)s::text[]))
  AND (%(types)s::text[] IS NULL OR f.type = ANY (%(types)s::text[]))
  AND (%(model)s::text IS NULL OR f.embedding_model = %(model)s::text)

-- name: backfill_page
-- One keyset page of the live facts in the mirror's scope, enqueued unless the fact already
-- has a pending row for this mirror: a re-run (after a crash, or twice) enqueues only what
-- is missing. Each page is its own short transaction.
WITH page AS MATERIALIZED (
    SELECT f.fact_id, f.namespace, f.commit_seq, f.version
    FROM memstate.facts f
    WHERE f.fact_id >= %(start)s::uuid AND f.fact_id IS DISTINCT FROM %(exclude)s::uuid
      AND (%(namespaces)s::text[] IS NULL OR f.namespace = ANY (%(namespaces)s::text[]))
      AND (%(types)s::text[] IS NULL OR f.type = ANY (%(types)s::text[]))
      AND (%(model)s::text IS NULL OR f.embedding_model = %(model)s::text)
  AND (%(model)s::text IS NULL OR f.embedding_model = %(model)s::text)
    ORDER BY f.fact_id
    LIMIT %(limit)s::int
), queued AS (
    INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op)
    SELECT %(mirror)s::text, p.fact_id, p.namespace, p.commit_seq, p.version, 'backfill'
    FROM page p
    WHERE NOT EXISTS (SELECT 1 FROM memstate.outbox o
                      WHERE o.mirror = %(mirror)s::text AND o.fact_id = p.fact_id AND o.dead_at IS NULL)
    RETURNING 1
)
SELECT (SELECT pg_catalog.count(*) FROM page) AS scanned,
       (SELECT pg_catalog.count(*) FROM queued) AS queued,
       (SELECT p.fact_id FROM page p ORDER BY p.fact_id DESC LIMIT 1) AS last_id

-- name: notify
SELECT pg_catalog.pg_notify('memstate_outbox', '')

-- name: batch_settings
-- A batch's COMMIT only deletes acknowledged rows (and records failures): if a server crash
-- loses it, the rows come back and the current state is sent again, which is idempotent. So
-- it need not wait for the WAL flush (3-4 ms per batch measured on the embedded server).
SET LOCAL synchronous_commit TO off

-- name: claim
-- The next ready rows of one mirror, the longest ready first, skipping rows other workers
-- hold and the facts given in `skip` (already seen by this batch). The index outbox_claimable
-- gives them in this order, reading no row in backoff. The caller then takes the per-fact
-- locks (`lock_facts`) and leaves the rows of facts another writer holds alone.
-- The registry row is locked FOR KEY SHARE first (workers do not block each other): a
-- concurrent remove_mirror (DELETE, cascading to the outbox) then waits for the batch to
-- commit, instead of locking the registry row and deadlocking with the batch's ack.
WITH registered AS MATERIALIZED (
    SELECT m.name FROM memstate.mirrors m WHERE m.name = %(mirror)s::text FOR KEY SHARE
)
SELECT o.id, o.fact_id, o.seq, o.attempts
FROM memstate.outbox o
WHERE o.mirror = (SELECT r.name FROM registered r)
  AND o.dead_at IS NULL AND o.available_at <= pg_catalog.now()
  AND o.fact_id <> ALL (%(skip)s::uuid[])
ORDER BY o.available_at, o.id
LIMIT %(limit)s::int
FOR UPDATE OF o SKIP LOCKED

-- name: lock_facts
-- The per-fact locks of the worker and of reconciliation's repairs: the row of
-- memstate.sync_slots for hash(mirror, fact), FOR UPDATE SKIP LOCKED until the end of the
-- transaction (try, never wait). Returns the facts this transaction now holds; a fact whose
-- slot another writer holds is left to it. Only memstate_sync may lock those rows, so a
-- tenant cannot hold a fact (advisory locks, used before, are open to every login role).
WITH wanted AS MATERIALIZED (
    SELECT d.fact_id,
           pg_catalog.int4(pg_catalog.int8and(
               pg_catalog.hashtextextended(pg_catalog.concat(%(mirror)s::text, ':', d.fact_id), 0::int8),
               16383::int8)) AS slot
    FROM pg_catalog.unnest(%(ids)s::uuid[]) AS d(fact_id)
), held AS MATERIALIZED (
    SELECT s.slot FROM memstate.sync_slots s
    WHERE s.slot = ANY (ARRAY(SELECT w.slot FROM wanted w))
    FOR UPDATE SKIP LOCKED
)
SELECT w.fact_id FROM wanted w WHERE w.slot IN (SELECT h.slot FROM held h)

-- name: fact_sizes
-- What reading each fact costs the worker, in bytes (content, payload as JSON text, vector),
-- so a batch can stop before it holds too much in memory; computed by the server.
SELECT f.fact_id,
       pg_catalog.octet_length(f.content)::int8
       + pg_catalog.octet_length(f.payload::text)::int8
       + pg_catalog.pg_column_size(f.embedding)::int8 AS bytes
FROM memstate.facts f
WHERE f.fact_id = ANY (%(ids)s::uuid[])

-- name: park
-- Rows that can never be delivered (a fact larger than the worker takes): dead now, with
-- the reason, whatever their attempts.
UPDATE memstate.outbox o SET
    attempts = o.attempts + 1,
    last_error = %(error)s::text,
    dead_at = pg_catalog.clock_timestamp()
WHERE o.id = ANY (%(ids)s::int8[])

-- name: fact_states
-- Current state of the given facts; a fact that is absent was deleted (the mirror deletes it).
SELECT f.fact_id, f.namespace, f.type, f.payload, f.content, f.embedding, f.embedding_model,
       f.version, f.commit_seq
FROM memstate.facts f
WHERE f.fact_id = ANY (%(ids)s::uuid[])

-- name: ack
-- The mirror acknowledged: the rows are done. last_synced_seq only moves forward, whatever
-- order concurrent workers commit in.
WITH done AS (
    DELETE FROM memstate.outbox o WHERE o.id = ANY (%(ids)s::bigint[]) RETURNING o.seq
)
UPDATE memstate.mirrors m
SET last_synced_seq = greatest(m.last_synced_seq, (SELECT pg_catalog.max(d.seq) FROM done d)),
    last_synced_at = pg_catalog.clock_timestamp()
WHERE m.name = %(mirror)s::text

-- name: fail
-- The mirror failed these rows: exponential backoff with jitter (0.5x to 1.5x), parked as
-- dead once `attempts` reaches max_attempts. `delay` is the seconds until each is retried.
UPDATE memstate.outbox o SET
    attempts = o.attempts + 1,
    last_error = e.error,
    available_at = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs =>
        least(%(backoff_max)s::float8, %(backoff_base)s::float8 * pg_catalog.power(2::float8, least(o.attempts, 60)::float8))
        * (0.5 + pg_catalog.random())),
    dead_at = CASE WHEN o.attempts + 1 >= %(max_attempts)s::int THEN pg_catalog.clock_timestamp() END
FROM ROWS FROM (pg_catalog.unnest(%(ids)s::bigint[]), pg_catalog.unnest(%(errors)s::text[])) AS e(id, error)
WHERE o.id = e.id
RETURNING o.id, o.dead_at IS NOT NULL AS dead,
          extract(epoch FROM o.available_at - pg_catalog.clock_timestamp())::float8 AS delay

-- name: requeue
WITH r AS (
    UPDATE memstate.outbox o SET dead_at = NULL, attempts = 0, available_at = pg_catalog.now()
    WHERE o.mirror = %(mirror)s::text
      AND (o.dead_at IS NOT NULL OR (NOT %(dead_only)s::boolean AND o.available_at > pg_catalog.now()))
    RETURNING 1
)
SELECT pg_catalog.count(*) AS n FROM r

-- name: pending
-- What is left for the given mirrors: rows not dead, how many are ready now, and the
-- seconds until the next one in backoff becomes ready.
SELECT pg_catalog.count(*) AS pending,
       pg_catalog.count(*) FILTER (WHERE o.available_at <= pg_catalog.now()) AS ready,
       extract(epoch FROM pg_catalog.min(o.available_at) FILTER (WHERE o.available_at > pg_catalog.now()) - pg_catalog.now())::float8
           AS next_in
FROM memstate.outbox o
WHERE o.mirror = ANY (%(mirrors)s::text[]) AND o.dead_at IS NULL

-- name: dead_rows
SELECT o.id, o.fact_id, o.seq, o.version, o.attempts, o.last_error, o.dead_at
FROM memstate.outbox o
WHERE o.mirror = %(mirror)s::text AND o.dead_at IS NOT NULL
ORDER BY o.id
LIMIT %(limit)s::int

-- name: live_page
-- Reconciliation pass 1: one keyset page of (fact_id, version) the mirror should hold.
SELECT f.fact_id, f.version
FROM memstate.facts f
WHERE f.fact_id >= %(start)s::uuid AND f.fact_id IS DISTINCT FROM %(exclude)s::uuid
  AND (%(namespaces)s::text[] IS NULL OR f.namespace = ANY (%(namespaces)s::text[]))
  AND (%(types)s::text[] IS NULL OR f.type = ANY (%(types)s::text[]))
  AND (%(model)s::text IS NULL OR f.embedding_model = %(model)s::text)
ORDER BY f.fact_id
LIMIT %(limit)s::int

-- name: live_versions
-- Reconciliation: the live facts among some ids, with what decides the mirror's scope.
SELECT f.fact_id, f.version, f.namespace, f.type, f.embedding_model
FROM memstate.facts f
WHERE f.fact_id = ANY (%(ids)s::uuid[])

-- name: save_reconcile
UPDATE memstate.mirrors SET last_reconciled_at = pg_catalog.clock_timestamp(), last_reconcile = %(report)s::jsonb
WHERE name = %(name)s::text

-- name: claim_reconcile
-- A reconciliation lease: the worker that moves last_reconciled_at (to now) runs the
-- scheduled reconciliation, the others see it was done within `every` seconds. A row
-- update only memstate_sync may make (an advisory lock, used before, is open to every
-- login role, which could hold it forever). save_reconcile sets it again at the end.
UPDATE memstate.mirrors m SET last_reconciled_at = pg_catalog.clock_timestamp()
WHERE m.name = %(mirror)s::text
  AND (m.last_reconciled_at IS NULL
       OR m.last_reconciled_at <= pg_catalog.clock_timestamp()
                                  - pg_catalog.make_interval(secs => %(every)s::float8))
RETURNING m.name
