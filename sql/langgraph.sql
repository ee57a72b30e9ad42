-- memstate-pg LangGraph tables and functions: the checkpointer's storage
-- (memstate_pg.langgraph.MemStateCheckpointer) and the SQL side of the store
-- (memstate_pg.langgraph.MemStateStore, whose items are ordinary memstate facts).
--
-- Applied by alembic revision 0002_langgraph, or by hand after schema.sql and functions.sql:
--     psql "$DSN" -v ON_ERROR_STOP=1 -f sql/langgraph.sql
-- Re-runnable: CREATE ... IF NOT EXISTS / CREATE OR REPLACE everywhere.
--
-- Identifiers that LangGraph compares and sorts (thread ids, checkpoint ids, channel
-- versions) are COLLATE "C": byte order, which for UTF-8 is code-point order, the order
-- Python sorts str in. Checkpoint ids are uuid6 strings, so "newest first" is
-- `ORDER BY checkpoint_id DESC` whatever the database's default collation.

CREATE SCHEMA IF NOT EXISTS memstate;

-- One row per checkpoint. `checkpoint` is the checkpoint *without* its channel values,
-- encoded by the saver's serializer (serde.dumps_typed -> checkpoint_type, checkpoint);
-- the values live in lg_blobs, one row per (channel, version), shared by every
-- checkpoint of the thread that holds that version. `channel_versions` repeats the
-- checkpoint's versions as JSON so SQL can join the blobs and find unreferenced ones.
CREATE TABLE IF NOT EXISTS memstate.lg_checkpoints (
    thread_id            text COLLATE "C" NOT NULL,
    checkpoint_ns        text COLLATE "C" NOT NULL DEFAULT '',
    checkpoint_id        text COLLATE "C" NOT NULL,
    parent_checkpoint_id text COLLATE "C",
    checkpoint_type      text  NOT NULL,
    checkpoint           bytea NOT NULL,
    channel_versions     jsonb NOT NULL DEFAULT '{}',
    metadata             jsonb NOT NULL DEFAULT '{}',
    run_id               text GENERATED ALWAYS AS (metadata ->> 'run_id') STORED,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS lg_checkpoints_run_id
    ON memstate.lg_checkpoints (run_id) WHERE run_id IS NOT NULL;

-- Channel values, written once per (thread, namespace, channel, version). type 'empty'
-- (blob NULL) records that the channel had no value at that version.
CREATE TABLE IF NOT EXISTS memstate.lg_blobs (
    thread_id     text COLLATE "C" NOT NULL,
    checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
    channel       text COLLATE "C" NOT NULL,
    version       text COLLATE "C" NOT NULL,
    type          text NOT NULL,
    blob          bytea,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);

-- Pending writes of the tasks of a step, read back with their checkpoint. Special
-- channels (ERROR, SCHEDULED, INTERRUPT, RESUME) use negative idx (WRITES_IDX_MAP), so a
-- task re-reporting one replaces it while ordinary writes are written once.
CREATE TABLE IF NOT EXISTS memstate.lg_writes (
    thread_id     text COLLATE "C" NOT NULL,
    checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
    checkpoint_id text COLLATE "C" NOT NULL,
    task_id       text COLLATE "C" NOT NULL,
    idx           int  NOT NULL,
    task_path     text COLLATE "C" NOT NULL DEFAULT '',
    channel       text NOT NULL,
    type          text NOT NULL,
    blob          bytea NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);

-- ---------------------------------------------------------------------------------------
-- Checkpointer maintenance: each is one call, hence one transaction
-- ---------------------------------------------------------------------------------------

-- Blobs of `p_thread_ids` that no checkpoint of their thread and namespace references.
CREATE OR REPLACE FUNCTION memstate.lg_collect_blobs(p_thread_ids text[])
RETURNS void LANGUAGE sql AS $$
    DELETE FROM memstate.lg_blobs b
    WHERE b.thread_id = ANY (p_thread_ids)
      AND NOT EXISTS (
          SELECT 1 FROM memstate.lg_checkpoints c
          WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
            AND c.channel_versions ->> b.channel = b.version)
$$;

-- Everything of one thread, every namespace.
CREATE OR REPLACE FUNCTION memstate.lg_delete_thread(p_thread_id text)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM memstate.lg_writes WHERE thread_id = p_thread_id;
    DELETE FROM memstate.lg_blobs WHERE thread_id = p_thread_id;
    DELETE FROM memstate.lg_checkpoints WHERE thread_id = p_thread_id;
$$;

-- Every checkpoint, blob and pending write of one thread, copied to another (rows the
-- target already has are kept). Checkpoint ids stay the same, so the copy keeps order,
-- parent pointers and time travel.
CREATE OR REPLACE FUNCTION memstate.lg_copy_thread(p_source text, p_target text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO memstate.lg_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT p_target, checkpoint_ns, channel, version, type, blob
    FROM memstate.lg_blobs WHERE thread_id = p_source
    ON CONFLICT DO NOTHING;
    INSERT INTO memstate.lg_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                         checkpoint_type, checkpoint, channel_versions, metadata)
    SELECT p_target, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint,
           channel_versions, metadata
    FROM memstate.lg_checkpoints WHERE thread_id = p_source
    ON CONFLICT DO NOTHING;
    INSERT INTO memstate.lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path,
                                    channel, type, blob)
    SELECT p_target, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
    FROM memstate.lg_writes WHERE thread_id = p_source
    ON CONFLICT DO NOTHING;
$$;

-- Deletes the checkpoints written by the given runs (metadata.run_id) with their pending
-- writes. A surviving checkpoint whose parent was deleted is re-parented to its nearest
-- surviving ancestor, so history stays a chain. Blobs nothing references any more go too.
CREATE OR REPLACE FUNCTION memstate.lg_delete_for_runs(p_run_ids text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_threads text[];
BEGIN
    SELECT array_agg(DISTINCT c.thread_id) INTO v_threads
    FROM memstate.lg_checkpoints c WHERE c.run_id = ANY (p_run_ids);
    IF v_threads IS NULL THEN
        RETURN;
    END IF;
    WITH RECURSIVE doomed AS MATERIALIZED (
        SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id
        FROM memstate.lg_checkpoints c WHERE c.run_id = ANY (p_run_ids)
    ), walk (thread_id, checkpoint_ns, checkpoint_id, ancestor, depth) AS (
        SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, d.parent_checkpoint_id, 1
        FROM memstate.lg_checkpoints c
        JOIN doomed d ON d.thread_id = c.thread_id AND d.checkpoint_ns = c.checkpoint_ns
                     AND d.checkpoint_id = c.parent_checkpoint_id
        WHERE c.thread_id = ANY (v_threads) AND c.run_id IS DISTINCT FROM ALL (p_run_ids)
        UNION ALL
        SELECT w.thread_id, w.checkpoint_ns, w.checkpoint_id, d.parent_checkpoint_id, w.depth + 1
        FROM walk w
        JOIN doomed d ON d.thread_id = w.thread_id AND d.checkpoint_ns = w.checkpoint_ns
                     AND d.checkpoint_id = w.ancestor
    ), nearest AS (
        SELECT DISTINCT ON (thread_id, checkpoint_ns, checkpoint_id) thread_id, checkpoint_ns, checkpoint_id, ancestor
        FROM walk ORDER BY thread_id, checkpoint_ns, checkpoint_id, depth DESC
    ), reparented AS (
        UPDATE memstate.lg_checkpoints c SET parent_checkpoint_id = n.ancestor
        FROM nearest n
        WHERE c.thread_id = n.thread_id AND c.checkpoint_ns = n.checkpoint_ns AND c.checkpoint_id = n.checkpoint_id
    ), writes AS (
        DELETE FROM memstate.lg_writes w USING doomed d
        WHERE w.thread_id = d.thread_id AND w.checkpoint_ns = d.checkpoint_ns AND w.checkpoint_id = d.checkpoint_id
    )
    DELETE FROM memstate.lg_checkpoints c USING doomed d
    WHERE c.thread_id = d.thread_id AND c.checkpoint_ns = d.checkpoint_ns AND c.checkpoint_id = d.checkpoint_id;
    PERFORM memstate.lg_collect_blobs(v_threads);
END $$;

-- Prunes threads. 'delete': everything of the threads. 'keep_latest': per namespace only
-- the latest checkpoint stays, with its pending writes and the blobs it references; it
-- loses its parent pointer. Pending writes of checkpoints not saved (yet) are left alone.
-- Threads that use a DeltaChannel are refused (SQLSTATE MSL01) for keep_latest, as
-- langgraph-checkpoint-postgres does: their latest value is rebuilt from the older
-- checkpoints' writes, which pruning would throw away.
CREATE OR REPLACE FUNCTION memstate.lg_prune(p_thread_ids text[], p_strategy text DEFAULT 'keep_latest')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_delta text;
BEGIN
    IF p_strategy IS NULL OR p_strategy NOT IN ('keep_latest', 'delete') THEN
        PERFORM memstate._fail('MSV01', format('unknown prune strategy %L', p_strategy));
    END IF;
    IF p_thread_ids IS NULL OR cardinality(p_thread_ids) = 0 THEN
        RETURN;
    END IF;
    IF p_strategy = 'delete' THEN
        DELETE FROM memstate.lg_writes WHERE thread_id = ANY (p_thread_ids);
        DELETE FROM memstate.lg_blobs WHERE thread_id = ANY (p_thread_ids);
        DELETE FROM memstate.lg_checkpoints WHERE thread_id = ANY (p_thread_ids);
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT c.thread_id, ', ') INTO v_delta
    FROM memstate.lg_checkpoints c
    WHERE c.thread_id = ANY (p_thread_ids)
      AND (c.metadata ? 'counters_since_delta_snapshot' OR c.metadata ? 'delta_writes_versioned');
    IF v_delta IS NOT NULL THEN
        PERFORM memstate._fail('MSL01', format('keep_latest cannot prune threads that use a DeltaChannel: %s', v_delta));
    END IF;
    WITH heads AS MATERIALIZED (
        SELECT DISTINCT ON (c.thread_id, c.checkpoint_ns) c.thread_id, c.checkpoint_ns, c.checkpoint_id
        FROM memstate.lg_checkpoints c
        WHERE c.thread_id = ANY (p_thread_ids)
        ORDER BY c.thread_id, c.checkpoint_ns, c.checkpoint_id DESC
    ), doomed AS MATERIALIZED (
        SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id
        FROM memstate.lg_checkpoints c
        WHERE c.thread_id = ANY (p_thread_ids)
          AND NOT EXISTS (SELECT 1 FROM heads h WHERE h.thread_id = c.thread_id
                          AND h.checkpoint_ns = c.checkpoint_ns AND h.checkpoint_id = c.checkpoint_id)
    ), writes AS (
        DELETE FROM memstate.lg_writes w USING doomed d
        WHERE w.thread_id = d.thread_id AND w.checkpoint_ns = d.checkpoint_ns AND w.checkpoint_id = d.checkpoint_id
    ), orphaned AS (
        UPDATE memstate.lg_checkpoints c SET parent_checkpoint_id = NULL
        FROM heads h
        WHERE c.thread_id = h.thread_id AND c.checkpoint_ns = h.checkpoint_ns
          AND c.checkpoint_id = h.checkpoint_id AND c.parent_checkpoint_id IS NOT NULL
    )
    DELETE FROM memstate.lg_checkpoints c USING doomed d
    WHERE c.thread_id = d.thread_id AND c.checkpoint_ns = d.checkpoint_ns AND c.checkpoint_id = d.checkpoint_id;
    PERFORM memstate.lg_collect_blobs(p_thread_ids);
END $$;
