-- memstate-pg migration 0002_langgraph (FROZEN: never edit; a change goes into a new migration).
-- sql/langgraph.sql exactly as released at commit 058a291: the LangGraph checkpointer tables
-- and the store's lg_* functions.
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
        WHERE c.thread_id = ANY (v_threads) AND (c.run_id IS NULL OR c.run_id <> ALL (p_run_ids))
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

-- ---------------------------------------------------------------------------------------
-- MemStateStore: LangGraph's BaseStore over memstate facts
-- ---------------------------------------------------------------------------------------
-- An item is a live fact of type `lg_item` (by default) in one memstate namespace (by
-- default 'langgraph'), written through memstate.write_fact like any fact: versioned,
-- undoable, mirrored. Its payload is
--     {"ns": ["users", "42"], "key": "prefs", "ns_key": "[\"users\",\"42\",\"prefs\"]",
--      "prefixes": ["users", "users.42"], "value": {...}, "indexed": true, "ttl": 5.0}
-- `ns_key` is the type's singleton key, so (LangGraph namespace, key) names at most one
-- live fact and is looked up through the facts_singleton unique index; `prefixes` makes a
-- namespace-prefix search a GIN-indexed containment test (labels cannot contain '.').
-- The functions below are the store's reads; its writes are MemoryStore commits.

-- TTL clocks. Refreshing a TTL on read is not a change of the item, so it lives here, not
-- in the fact's history. A row counts only while the live fact's payload has a "ttl".
CREATE TABLE IF NOT EXISTS memstate.lg_ttl (
    fact_id     uuid PRIMARY KEY,
    ttl_minutes float8 NOT NULL CHECK (ttl_minutes > 0),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS lg_ttl_expires_at ON memstate.lg_ttl (expires_at);

-- Items by exact key (ns_key values); the TTL clocks of those in p_refresh_keys restart.
CREATE OR REPLACE FUNCTION memstate.lg_get(
    p_namespace text, p_type text, p_keys text[], p_refresh_keys text[] DEFAULT '{}',
    p_omit_expired boolean DEFAULT false)
RETURNS TABLE (fact_id uuid, version int, payload jsonb, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql VOLATILE AS $$
    WITH hits AS (
        SELECT f.fact_id, f.version, f.singleton_value, f.payload, f.created_at, f.updated_at
        FROM memstate.facts f
        WHERE f.namespace = p_namespace AND f.type = p_type AND f.singleton_value = ANY (p_keys)
          AND NOT (p_omit_expired AND f.payload ? 'ttl' AND EXISTS (
              SELECT 1 FROM memstate.lg_ttl t WHERE t.fact_id = f.fact_id AND t.expires_at <= now()))
    ), touched AS (
        UPDATE memstate.lg_ttl t SET expires_at = now() + t.ttl_minutes * interval '1 minute'
        FROM hits h
        WHERE t.fact_id = h.fact_id AND h.payload ? 'ttl' AND h.singleton_value = ANY (p_refresh_keys)
    )
    SELECT h.fact_id, h.version, h.payload, h.created_at, h.updated_at FROM hits h
$$;

-- Items under a namespace prefix (p_prefix: labels joined by '.', NULL: all), matching
-- `p_contains` (jsonb containment: the scalar equalities of the filter) and every
-- condition of `p_conditions`: [{"path": [...], "op": "eq|ne|gt|gte|lt|lte", "value": v}]
-- on payload paths. With `p_query`, nearest first by cosine similarity (HNSW index of
-- `p_model`, iterative scan so filters still fill the page), only items that were
-- indexed; else most recently updated first, score NULL.
CREATE OR REPLACE FUNCTION memstate.lg_search(
    p_namespace text, p_type text, p_prefix text, p_contains jsonb, p_conditions jsonb,
    p_limit int, p_offset int, p_query vector DEFAULT NULL, p_model text DEFAULT NULL,
    p_refresh boolean DEFAULT false, p_omit_expired boolean DEFAULT false)
RETURNS TABLE (fact_id uuid, payload jsonb, created_at timestamptz, updated_at timestamptz, score float8)
LANGUAGE plpgsql VOLATILE
SET hnsw.iterative_scan = 'relaxed_order'
AS $$
DECLARE
    v_where    text := '';
    v_contains jsonb := coalesce(p_contains, '{}'::jsonb);
    v_cond     jsonb;
    v_expr     text;
    v_op       text;
    v_sqlop    text;
    v_val      jsonb;
    v_dim      int;
    v_index    text;
    v_dist     text;
    v_hits     text;
BEGIN
    IF p_limit IS NULL OR p_limit < 0 OR p_offset IS NULL OR p_offset < 0 THEN
        PERFORM memstate._fail('MSV01', format('limit and offset must be non-negative, not %s and %s', p_limit, p_offset));
    END IF;
    IF jsonb_typeof(v_contains) <> 'object' THEN
        PERFORM memstate._fail('MSV01', 'p_contains must be a JSON object');
    END IF;
    IF p_prefix IS NOT NULL THEN
        v_contains := v_contains || jsonb_build_object('prefixes', jsonb_build_array(p_prefix));
    END IF;
    IF p_query IS NOT NULL THEN
        v_contains := v_contains || '{"indexed": true}'::jsonb;
    END IF;
    FOR v_cond IN SELECT c FROM jsonb_array_elements(coalesce(p_conditions, '[]'::jsonb)) c LOOP
        IF jsonb_typeof(v_cond -> 'path') IS DISTINCT FROM 'array' THEN
            PERFORM memstate._fail('MSV01', format('filter condition needs a path: %s', v_cond));
        END IF;
        v_expr := format('(f.payload #> %L::text[])', ARRAY(SELECT jsonb_array_elements_text(v_cond -> 'path')));
        v_op := v_cond ->> 'op';
        v_val := v_cond -> 'value';
        IF v_op = 'eq' THEN
            v_where := v_where || format(' AND %s = %L::jsonb', v_expr, v_val);
        ELSIF v_op = 'ne' THEN
            v_where := v_where || format(' AND %s IS DISTINCT FROM %L::jsonb', v_expr, v_val);
        ELSIF v_op IN ('gt', 'gte', 'lt', 'lte') THEN
            v_sqlop := CASE v_op WHEN 'gt' THEN '>' WHEN 'gte' THEN '>=' WHEN 'lt' THEN '<' ELSE '<=' END;
            IF jsonb_typeof(v_val) = 'number' THEN
                v_where := v_where || format(
                    ' AND CASE WHEN jsonb_typeof(%1$s) = ''number'' THEN (%1$s #>> ''{}'')::numeric %2$s %3$L::numeric ELSE false END',
                    v_expr, v_sqlop, v_val #>> '{}');
            ELSIF jsonb_typeof(v_val) = 'string' THEN
                v_where := v_where || format(
                    ' AND CASE WHEN jsonb_typeof(%1$s) = ''string'' THEN (%1$s #>> ''{}'') COLLATE "C" %2$s %3$L ELSE false END',
                    v_expr, v_sqlop, v_val #>> '{}');
            ELSE
                PERFORM memstate._fail('MSV01', format('$%s compares numbers or strings, not %s', v_op, v_val));
            END IF;
        ELSE
            PERFORM memstate._fail('MSV01', format('unknown filter operator %L', v_op));
        END IF;
    END LOOP;
    IF p_omit_expired THEN
        v_where := v_where || ' AND NOT (f.payload ? ''ttl'' AND EXISTS (SELECT 1 FROM memstate.lg_ttl t'
                           || ' WHERE t.fact_id = f.fact_id AND t.expires_at <= now()))';
    END IF;

    IF p_query IS NULL THEN
        v_hits := format(
            'SELECT f.fact_id, f.payload, f.created_at, f.updated_at, NULL::float8 AS score '
            'FROM memstate.facts f WHERE f.namespace = $1 AND f.type = $2 AND f.payload @> $3 %s '
            'ORDER BY f.updated_at DESC, f.fact_id LIMIT $4 OFFSET $5', v_where);
    ELSE
        SELECT m.dim, m.index_name INTO v_dim, v_index FROM memstate.embedding_models m WHERE m.model = p_model;
        IF NOT FOUND THEN
            RETURN;  -- nothing was ever embedded with this model: no hits
        END IF;
        IF vector_dims(p_query) <> v_dim THEN
            PERFORM memstate._fail('MSV01', format('query has %s dimensions, model %L has %s',
                                                   vector_dims(p_query), p_model, v_dim));
        END IF;
        -- the expression of memstate.register_model's partial HNSW index, so it is used
        v_dist := memstate._distance_sql(v_dim, v_index, '$6');
        v_hits := format(
            'SELECT s.fact_id, s.payload, s.created_at, s.updated_at, 1 - s.distance AS score FROM ('
            '  SELECT f.fact_id, f.payload, f.created_at, f.updated_at, %1$s AS distance '
            '  FROM memstate.facts f '
            '  WHERE f.namespace = $1 AND f.type = $2 AND f.embedding_model = %2$L AND f.payload @> $3 %3$s '
            '  ORDER BY %1$s LIMIT $4 + $5) s '
            'ORDER BY s.distance, s.fact_id LIMIT $4 OFFSET $5', v_dist, p_model, v_where);
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH hits AS MATERIALIZED (%s), touched AS ('
        '  UPDATE memstate.lg_ttl t SET expires_at = now() + t.ttl_minutes * interval ''1 minute'' '
        '  FROM hits h WHERE $7 AND t.fact_id = h.fact_id AND h.payload ? ''ttl'') '
        'SELECT h.fact_id, h.payload, h.created_at, h.updated_at, h.score FROM hits h', v_hits)
    USING p_namespace, p_type, v_contains, p_limit, p_offset, p_query, coalesce(p_refresh, false);
END $$;

-- The distinct LangGraph namespaces of the live items, sorted (code-point order), each
-- cut to `p_max_depth` labels. `p_prefix` / `p_suffix`: JSON arrays of labels, where "*"
-- matches any one label.
CREATE OR REPLACE FUNCTION memstate.lg_list_namespaces(
    p_namespace text, p_type text, p_prefix jsonb, p_suffix jsonb, p_max_depth int,
    p_limit int, p_offset int, p_omit_expired boolean DEFAULT false)
RETURNS TABLE (ns text[])
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT CASE WHEN p_max_depth IS NULL THEN i.ns ELSE i.ns[1:p_max_depth] END COLLATE "C" AS ns
    FROM (SELECT ARRAY(SELECT jsonb_array_elements_text(f.payload -> 'ns')) AS ns
          FROM memstate.facts f
          WHERE f.namespace = p_namespace AND f.type = p_type
            AND NOT (p_omit_expired AND f.payload ? 'ttl' AND EXISTS (
                SELECT 1 FROM memstate.lg_ttl t WHERE t.fact_id = f.fact_id AND t.expires_at <= now()))) i
    WHERE cardinality(i.ns) >= coalesce(jsonb_array_length(p_prefix), 0)
      AND cardinality(i.ns) >= coalesce(jsonb_array_length(p_suffix), 0)
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(coalesce(p_prefix, '[]')) WITH ORDINALITY p(label, n)
                      WHERE p.label <> '*' AND i.ns[p.n] IS DISTINCT FROM p.label)
      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(coalesce(p_suffix, '[]')) WITH ORDINALITY s(label, n)
                      WHERE s.label <> '*'
                        AND i.ns[cardinality(i.ns) - jsonb_array_length(p_suffix) + s.n] IS DISTINCT FROM s.label)
    ORDER BY 1
    LIMIT p_limit OFFSET p_offset
$$;

-- Live items whose TTL ran out: what MemStateStore.sweep_ttl deletes (through MemoryStore,
-- so each deletion is a versioned, undoable commit). Locks their clocks until the caller's
-- transaction ends, so a concurrent read cannot refresh an item being swept.
CREATE OR REPLACE FUNCTION memstate.lg_expired(p_namespace text, p_type text, p_limit int DEFAULT 1000)
RETURNS TABLE (fact_id uuid, version int)
LANGUAGE sql VOLATILE AS $$
    SELECT f.fact_id, f.version
    FROM memstate.lg_ttl t JOIN memstate.facts f ON f.fact_id = t.fact_id
    WHERE t.expires_at <= now() AND f.namespace = p_namespace AND f.type = p_type AND f.payload ? 'ttl'
    ORDER BY t.expires_at
    LIMIT p_limit
    FOR UPDATE OF t SKIP LOCKED
$$;

-- Clocks of items that are gone or were re-put without a TTL.
CREATE OR REPLACE FUNCTION memstate.lg_collect_ttl()
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM memstate.lg_ttl t
        WHERE NOT EXISTS (SELECT 1 FROM memstate.facts f WHERE f.fact_id = t.fact_id AND f.payload ? 'ttl')
        RETURNING 1)
    SELECT count(*) FROM gone
$$;
