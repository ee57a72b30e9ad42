-- Named queries of the sync path: mirror registry, backfill, outbox claiming, reconciliation.
-- Loaded by memstate_pg.queries.load("sync_queries.sql"); `-- name: x` starts query `x`.
--
-- The claiming protocol (memstate_pg/sync/worker.py): one transaction per batch per mirror.
--   claim     rows FOR UPDATE SKIP LOCKED, plus a transaction-level advisory lock per fact
--             (so no fact is written to one mirror by two workers at once);
--   fact_states   the CURRENT state of those facts, read AFTER the locks are held;
--   (the mirror is written)
--   ack / fail    delete the rows the mirror acknowledged, back off the others; COMMIT.
-- A worker that dies mid-batch aborts its transaction: row and advisory locks vanish and the
-- rows are claimable again. Nothing is lost, and a retry is idempotent.
--
-- Keyset pages over facts use `fact_id >= start AND fact_id IS DISTINCT FROM exclude`
-- (start = the nil UUID and exclude = NULL for the first page, then start = exclude = the
-- last id): an index range condition in custom and generic plans alike, with no
-- `$1 IS NULL OR …` that would turn a prepared statement into a full scan per page.

-- name: upsert_mirror
INSERT INTO memstate.mirrors AS m (name, kind, enabled, namespaces, types, metadata_fields, options)
VALUES (%(name)s, %(kind)s, true, %(namespaces)s::text[], %(types)s::text[],
        %(metadata_fields)s::text[], %(options)s::jsonb)
ON CONFLICT (name) DO UPDATE SET
    kind = excluded.kind, enabled = true, namespaces = excluded.namespaces,
    types = excluded.types, metadata_fields = excluded.metadata_fields, options = excluded.options
RETURNING (xmax = 0) AS created

-- name: delete_mirror
DELETE FROM memstate.mirrors WHERE name = %(name)s RETURNING name

-- name: mirror_config
SELECT name, kind, enabled, namespaces, types, metadata_fields, options,
       last_reconciled_at, extract(epoch FROM clock_timestamp() - last_reconciled_at)::float8 AS reconciled_ago
FROM memstate.mirrors WHERE name = %(name)s

-- name: mirror_configs
SELECT name, kind, enabled, namespaces, types, metadata_fields, options,
       last_reconciled_at, extract(epoch FROM clock_timestamp() - last_reconciled_at)::float8 AS reconciled_ago
FROM memstate.mirrors ORDER BY name

-- name: scope_count
SELECT count(*) AS n FROM memstate.facts f
WHERE (%(namespaces)s::text[] IS NULL OR f.namespace = ANY (%(namespaces)s::text[]))
  AND (%(types)s::text[] IS NULL OR f.type = ANY (%(types)s::text[]))

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
    ORDER BY f.fact_id
    LIMIT %(limit)s
), queued AS (
    INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op)
    SELECT %(mirror)s, p.fact_id, p.namespace, p.commit_seq, p.version, 'backfill'
    FROM page p
    WHERE NOT EXISTS (SELECT 1 FROM memstate.outbox o
                      WHERE o.mirror = %(mirror)s AND o.fact_id = p.fact_id AND o.dead_at IS NULL)
    RETURNING 1
)
SELECT (SELECT count(*) FROM page) AS scanned,
       (SELECT count(*) FROM queued) AS queued,
       (SELECT p.fact_id FROM page p ORDER BY p.fact_id DESC LIMIT 1) AS last_id

-- name: notify
SELECT pg_notify('memstate_outbox', '')

-- name: batch_settings
-- A batch's COMMIT only deletes acknowledged rows (and records failures): if a server crash
-- loses it, the rows come back and the current state is sent again, which is idempotent. So
-- it need not wait for the WAL flush (3-4 ms per batch measured on the embedded server).
SET LOCAL synchronous_commit TO off

-- name: claim
-- The next ready rows of one mirror, oldest first, skipping rows other workers hold; then
-- one try-lock per distinct fact. `locked` is false for a fact another worker is writing
-- right now: the caller leaves those rows alone (they stay pending, for a later batch).
-- The registry row is locked FOR KEY SHARE first (workers do not block each other): a
-- concurrent remove_mirror (DELETE, cascading to the outbox) then waits for the batch to
-- commit, instead of locking the registry row and deadlocking with the batch's ack.
-- (A 64-bit hash collision between two facts' lock keys only makes one wait a batch.)
WITH registered AS MATERIALIZED (
    SELECT m.name FROM memstate.mirrors m WHERE m.name = %(mirror)s FOR KEY SHARE
), claimed AS MATERIALIZED (
    SELECT o.id, o.fact_id, o.seq, o.attempts
    FROM memstate.outbox o
    WHERE o.mirror = (SELECT r.name FROM registered r)
      AND o.dead_at IS NULL AND o.available_at <= now()
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), facts AS MATERIALIZED (
    SELECT d.fact_id,
           pg_try_advisory_xact_lock(hashtextextended(%(mirror)s || ':' || d.fact_id::text, 0)) AS locked
    FROM (SELECT DISTINCT c.fact_id FROM claimed c) d
)
SELECT c.id, c.fact_id, c.seq, c.attempts, f.locked
FROM claimed c JOIN facts f USING (fact_id)
ORDER BY c.id

-- name: lock_facts
-- Reconciliation's repairs take the same per-fact lock as the worker (try, never wait).
SELECT d.fact_id FROM unnest(%(ids)s::uuid[]) AS d(fact_id)
WHERE pg_try_advisory_xact_lock(hashtextextended(%(mirror)s || ':' || d.fact_id::text, 0))

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
SET last_synced_seq = greatest(m.last_synced_seq, (SELECT max(d.seq) FROM done d)),
    last_synced_at = clock_timestamp()
WHERE m.name = %(mirror)s

-- name: fail
-- The mirror failed these rows: exponential backoff with jitter (0.5x to 1.5x), parked as
-- dead once `attempts` reaches max_attempts. `delay` is the seconds until each is retried.
UPDATE memstate.outbox o SET
    attempts = o.attempts + 1,
    last_error = e.error,
    available_at = clock_timestamp() + make_interval(secs =>
        least(%(backoff_max)s::float8, %(backoff_base)s::float8 * power(2, least(o.attempts, 60)))
        * (0.5 + random())),
    dead_at = CASE WHEN o.attempts + 1 >= %(max_attempts)s THEN clock_timestamp() END
FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS e(id, error)
WHERE o.id = e.id
RETURNING o.id, o.dead_at IS NOT NULL AS dead,
          extract(epoch FROM o.available_at - clock_timestamp())::float8 AS delay

-- name: requeue
WITH r AS (
    UPDATE memstate.outbox o SET dead_at = NULL, attempts = 0, available_at = now()
    WHERE o.mirror = %(mirror)s
      AND (o.dead_at IS NOT NULL OR (NOT %(dead_only)s AND o.available_at > now()))
    RETURNING 1
)
SELECT count(*) AS n FROM r

-- name: pending
-- What is left for the given mirrors: rows not dead, how many are ready now, and the
-- seconds until the next one in backoff becomes ready.
SELECT count(*) AS pending,
       count(*) FILTER (WHERE o.available_at <= now()) AS ready,
       extract(epoch FROM min(o.available_at) FILTER (WHERE o.available_at > now()) - now())::float8
           AS next_in
FROM memstate.outbox o
WHERE o.mirror = ANY (%(mirrors)s::text[]) AND o.dead_at IS NULL

-- name: dead_rows
SELECT o.id, o.fact_id, o.seq, o.version, o.attempts, o.last_error, o.dead_at
FROM memstate.outbox o
WHERE o.mirror = %(mirror)s AND o.dead_at IS NOT NULL
ORDER BY o.id
LIMIT %(limit)s

-- name: live_page
-- Reconciliation pass 1: one keyset page of (fact_id, version) the mirror should hold.
SELECT f.fact_id, f.version
FROM memstate.facts f
WHERE f.fact_id >= %(start)s::uuid AND f.fact_id IS DISTINCT FROM %(exclude)s::uuid
  AND (%(namespaces)s::text[] IS NULL OR f.namespace = ANY (%(namespaces)s::text[]))
  AND (%(types)s::text[] IS NULL OR f.type = ANY (%(types)s::text[]))
ORDER BY f.fact_id
LIMIT %(limit)s

-- name: live_versions
-- Reconciliation: the live facts among some ids, with what decides the mirror's scope.
SELECT f.fact_id, f.version, f.namespace, f.type
FROM memstate.facts f
WHERE f.fact_id = ANY (%(ids)s::uuid[])

-- name: save_reconcile
UPDATE memstate.mirrors SET last_reconciled_at = clock_timestamp(), last_reconcile = %(report)s::jsonb
WHERE name = %(name)s

-- name: try_reconcile_lock
SELECT pg_try_advisory_lock(hashtextextended('memstate-reconcile:' || %(mirror)s, 0)) AS ok

-- name: reconcile_unlock
SELECT pg_advisory_unlock(hashtextextended('memstate-reconcile:' || %(mirror)s, 0)) AS ok
