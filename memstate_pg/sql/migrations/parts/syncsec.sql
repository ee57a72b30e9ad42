-- syncsec: the sync path's DDL delta for migration 0003 (issue 11 items 1, 8, 15).
-- Idempotent where PostgreSQL allows it. Function and query changes ride on the current
-- files (sync_queries.sql is read at run time; no function of functions.sql changed).

-- item 1: the per-fact locks of the sync path are rows only memstate_sync may lock
-- (advisory locks, used before, are open to every login role).
CREATE TABLE IF NOT EXISTS memstate.sync_slots (
    slot int PRIMARY KEY CHECK (slot BETWEEN 0 AND 16383)
);
INSERT INTO memstate.sync_slots (slot) SELECT pg_catalog.generate_series(0, 16383)
ON CONFLICT (slot) DO NOTHING;
-- (sql/roles.sql grants SELECT, UPDATE on it to memstate_sync; re-run `memstate-pg roles`.)

-- item 15: claims read the ready rows only (range on available_at), never the backoff.
CREATE INDEX IF NOT EXISTS outbox_claimable ON memstate.outbox (mirror, available_at, id)
    WHERE dead_at IS NULL;
DROP INDEX IF EXISTS memstate.outbox_ready;

-- item 8: one registered mirror per store (kind|location|collection); item 15: the pending
-- rows above which status() raises an alert for a mirror.
ALTER TABLE memstate.mirrors ADD COLUMN IF NOT EXISTS store text;
ALTER TABLE memstate.mirrors ADD COLUMN IF NOT EXISTS max_pending bigint NOT NULL DEFAULT 100000
    CHECK (max_pending > 0);
CREATE UNIQUE INDEX IF NOT EXISTS mirrors_one_per_store ON memstate.mirrors (store);
-- Mirrors registered before this migration have store = NULL (not checked) until they are
-- registered again with add_mirror(); their points are untagged, which reconciliation
-- treats as their own.
