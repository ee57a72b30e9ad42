-- memstate-pg migration 0004_reembed (FROZEN once released: never edit after a release;
-- a later change goes into a new migration).
-- The embedding-model lifecycle (issue 12 item 4): a namespace's active model
-- (memstate.namespace_models), a re-embed's staging (memstate.reembed_vectors) and its
-- one-commit switch (memstate.reembed_apply); a mirror bound to one model
-- (memstate.mirrors.model). First the DDL, then the functions of sql/functions.sql that
-- this release added or changed, exactly as there. Applied in one transaction.

-- ==== DDL ====
ALTER TABLE memstate.mirrors ADD COLUMN IF NOT EXISTS model text;

CREATE TABLE IF NOT EXISTS memstate.namespace_models (
    namespace   text PRIMARY KEY,
    model       text NOT NULL REFERENCES memstate.embedding_models (model),
    switched_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS memstate.reembed_vectors (
    model     text   NOT NULL REFERENCES memstate.embedding_models (model),
    fact_id   uuid   NOT NULL,
    namespace text   NOT NULL,
    version   int    NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (model, fact_id)
);
CREATE INDEX IF NOT EXISTS reembed_vectors_ns ON memstate.reembed_vectors (namespace, model);

-- ==== sql/functions.sql: added or changed ====
-- The active embedding model of a namespace (memstate.namespace_models, set by a re-embed),
-- or NULL: no rule. SECURITY DEFINER and read-only, so that writers and readers need no
-- privilege on the table (whose rows name every switched namespace): it tells only the
-- model of the namespace asked about.
CREATE OR REPLACE FUNCTION memstate._active_model(p_namespace text)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT nm.model FROM memstate.namespace_models nm WHERE nm.namespace = p_namespace
$$;

-- On memstate.facts: payload and content within the size limits; vector dimension matches
-- the model; singleton key derived from the type; immutable facts refuse content changes; a
-- fact never changes namespace or type, and a fact id that has history belongs to the
-- namespace of that history. SECURITY DEFINER, because that history may be in a namespace
-- the writer cannot see (RLS would hide the conflict from the check); it only reads.
CREATE OR REPLACE FUNCTION memstate._facts_rules()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type memstate.types%ROWTYPE;
    v_dim  int;
    v_norm float8;
    v_ns   text;
    v_active text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.deleted_by := NULL;
    ELSIF NEW.deleted_by IS NOT NULL THEN  -- a delete: facts_delete removes the row right after
        IF OLD.deleted_by IS NOT NULL OR (NEW.fact_id, NEW.namespace, NEW.type) IS DISTINCT FROM (OLD.fact_id, OLD.namespace, OLD.type) THEN
            PERFORM memstate._fail('MSC01', 'a fact cannot change namespace or type');
        END IF;
        RETURN NEW;
    END IF;
    SELECT * INTO v_type FROM memstate.types WHERE type = NEW.type;
    IF NOT FOUND THEN
        PERFORM memstate._unknown_type(NEW.type);
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT v.namespace INTO v_ns FROM memstate.fact_versions v
        WHERE v.fact_id = NEW.fact_id ORDER BY v.version DESC LIMIT 1;
        IF FOUND AND v_ns IS DISTINCT FROM NEW.namespace THEN
            PERFORM memstate._fail('MSC01', format('fact id %s belongs to another namespace', NEW.fact_id));
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.payload IS DISTINCT FROM OLD.payload OR NEW.content IS DISTINCT FROM OLD.content THEN
        PERFORM memstate._check_sizes(NEW.payload, NEW.content);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.embedding_model IS DISTINCT FROM OLD.embedding_model
       OR NEW.embedding::float4[] IS DISTINCT FROM OLD.embedding::float4[] THEN
        SELECT dim INTO v_dim FROM memstate.embedding_models WHERE model = NEW.embedding_model;
        IF NOT FOUND THEN
            PERFORM memstate._fail('MSV01', format('unknown embedding model %L: register it first', NEW.embedding_model));
        END IF;
        IF memstate._vector_dims(NEW.embedding) <> v_dim THEN
            PERFORM memstate._fail('MSV01', pg_catalog.format('embedding has %s dimensions, model %L has %s',
                                   memstate._vector_dims(NEW.embedding), NEW.embedding_model, v_dim));
        END IF;
        v_norm := memstate._vector_norm(NEW.embedding);
        IF v_norm = 0 OR v_norm > 1e19 THEN
            PERFORM memstate._fail('MSV01', 'embedding is all zeros or too long (norm over 1e19): '
                                            'cosine needs a direction and a length float4 can square');
        END IF;
    END IF;
    -- One vector space per namespace once a re-embed switched it. Checked here, after the
    -- writer's lock on the table is granted, so a write racing memstate.reembed_apply (which
    -- holds a SHARE ROW EXCLUSIVE lock) sees the switch once it may proceed.
    v_active := memstate._active_model(NEW.namespace);
    IF v_active IS NOT NULL AND v_active IS DISTINCT FROM NEW.embedding_model THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format(
            'namespace %L uses embedding model %L (switched by a re-embed), not %L',
            NEW.namespace, v_active, NEW.embedding_model),
            pg_catalog.format('write with an embedder of model %L, or re-embed the namespace '
                              'to %L first (MemoryStore.reembed, memstate-pg reembed)',
                              v_active, NEW.embedding_model));
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.namespace <> OLD.namespace OR NEW.type <> OLD.type THEN
            PERFORM memstate._fail('MSC01', 'a fact cannot change namespace or type');
        END IF;
        -- (a new model's vector of the same content, a re-embed, is no change of the fact)
        IF v_type.immutable AND (NEW.payload IS DISTINCT FROM OLD.payload
                                 OR NEW.content IS DISTINCT FROM OLD.content
                                 OR (NEW.embedding_model = OLD.embedding_model
                                     AND NEW.embedding::float4[] IS DISTINCT FROM OLD.embedding::float4[])) THEN
            PERFORM memstate._fail('MSC01', format('facts of type %L are immutable', NEW.type),
                                   format('fact %s', NEW.fact_id));
        END IF;
    END IF;
    IF v_type.singleton_key IS NULL THEN
        NEW.singleton_value := NULL;
    ELSE
        NEW.singleton_value := NEW.payload ->> v_type.singleton_key;
        IF NEW.singleton_value IS NULL THEN
            PERFORM memstate._fail('MSV01', format('type %L needs payload field %I (its singleton key)',
                                                   NEW.type, v_type.singleton_key));
        END IF;
    END IF;
    RETURN NEW;
END $$;

-- The outbox: every new version becomes one row per enabled mirror that takes its
-- namespace, type and embedding model (a mirror holds one vector space: its `model`, NULL
-- for any), in the same transaction; one NOTIFY per statement wakes the workers (Postgres
-- folds identical notifications of one transaction into one).
--
-- SECURITY DEFINER: the writer need not (and, under RLS, may not) read the mirror registry,
-- whose rows name other tenants' namespaces; it only gets its own versions queued. The rows
-- come from the transition table, i.e. versions the writer just inserted under its policies.
CREATE OR REPLACE FUNCTION memstate._enqueue_versions()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op)
    SELECT m.name, n.fact_id, n.namespace, n.seq, n.version, n.op
    FROM new_rows n
    JOIN memstate.mirrors m
      ON m.enabled
     AND (m.namespaces IS NULL OR n.namespace = ANY (m.namespaces))
     AND (m.types IS NULL OR n.type = ANY (m.types))
     AND (m.model IS NULL OR m.model = n.embedding_model);
    IF FOUND THEN
        PERFORM pg_notify('memstate_outbox', '');
    END IF;
    RETURN NULL;
END $$;

-- The switch of a re-embed, in ONE commit: every live fact of `p_namespace` not yet in
-- `p_model` whose staged vector (memstate.reembed_vectors) was computed for its current
-- version gets a new version carrying that vector and the model (same payload and content;
-- history keeps the model of each version; the outbox trigger enqueues them), the namespace's
-- active model becomes `p_model`, and the used staging rows go. When some live fact lacks a
-- current staged vector (written or changed since it was staged), nothing is switched:
-- `missing` says how many, the caller stages those and calls again. Either every live fact
-- moves or none. The SHARE ROW EXCLUSIVE lock on memstate.facts holds writers off for the
-- length of this call (SECURITY INVOKER: for the administrator who runs re-embeds).
CREATE OR REPLACE FUNCTION memstate.reembed_apply(
    p_namespace text, p_model text, p_actor text DEFAULT NULL, p_reason text DEFAULT NULL,
    OUT switched int, OUT missing int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seq  bigint;
    v_todo int;
BEGIN
    IF p_namespace IS NULL OR length(p_namespace) NOT BETWEEN 1 AND 200 THEN
        PERFORM memstate._fail('MSV01', 'namespace must be 1 to 200 characters');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM memstate.embedding_models m WHERE m.model = p_model) THEN
        PERFORM memstate._fail('MSV01', format('unknown embedding model %L: register it first', p_model));
    END IF;
    IF coalesce(nullif(current_setting('memstate.open_commits', true), ''), '{}')::jsonb ? p_namespace THEN
        PERFORM memstate._fail('MSC01', format('a commit is open for namespace %L in this transaction', p_namespace));
    END IF;
    LOCK TABLE memstate.facts IN SHARE ROW EXCLUSIVE MODE;
    SELECT count(*) FILTER (WHERE r.fact_id IS NULL), count(*)
    INTO missing, v_todo
    FROM memstate.facts f
    LEFT JOIN memstate.reembed_vectors r
      ON r.model = p_model AND r.fact_id = f.fact_id AND r.version = f.version
    WHERE f.namespace = p_namespace AND f.embedding_model IS DISTINCT FROM p_model;
    switched := 0;
    IF missing > 0 THEN
        RETURN;
    END IF;
    INSERT INTO memstate.namespace_models AS nm (namespace, model) VALUES (p_namespace, p_model)
    ON CONFLICT (namespace) DO UPDATE SET model = excluded.model, switched_at = now()
    WHERE nm.model IS DISTINCT FROM excluded.model;
    IF v_todo > 0 THEN
        SELECT c.seq INTO v_seq
        FROM memstate._new_commit(p_namespace, NULL, p_actor,
                                  coalesce(p_reason, format('re-embed with model %s', p_model)),
                                  'commit', NULL) c;
        WITH moved AS (
            UPDATE memstate.facts f SET
                embedding = r.embedding, embedding_model = p_model, version = f.version + 1,
                commit_seq = v_seq, updated_at = now()
            FROM memstate.reembed_vectors r
            WHERE f.namespace = p_namespace AND f.embedding_model IS DISTINCT FROM p_model
              AND r.model = p_model AND r.fact_id = f.fact_id AND r.version = f.version
            RETURNING f.*)
        INSERT INTO memstate.fact_versions
            (fact_id, version, seq, namespace, type, session_id, op, payload, content, embedding,
             embedding_model)
        SELECT m.fact_id, m.version, v_seq, m.namespace, m.type, m.session_id, 'update', m.payload,
               m.content, m.embedding, m.embedding_model
        FROM moved m;
        GET DIAGNOSTICS switched = ROW_COUNT;
    END IF;
    DELETE FROM memstate.reembed_vectors r WHERE r.model = p_model AND r.namespace = p_namespace;
END $$;

-- Nearest facts by cosine similarity (1 = same direction; higher is better), compared only
-- with vectors of the query's model (given, else the namespace's active model, else the one
-- registered model of that dimension); a namespace switched by a re-embed refuses any other.
-- Filters go into the same SQL: namespace, payload containment (@>), type, session.
-- Two plans: with a payload filter or session, the GIN/btree indexes first collect at most
-- memstate.config 'search_exact_max' candidates (default 2000) and those are sorted by
-- true distance (exact: a selective filter never cuts recall); when more rows match, the
-- model's HNSW index is walked with pgvector's iterative scan (relaxed order, re-sorted),
-- so the filter still yields k rows.
CREATE OR REPLACE FUNCTION memstate.search(
    namespace text, query vector, k int, filter jsonb DEFAULT NULL,
    fact_type text DEFAULT NULL, model text DEFAULT NULL, session text DEFAULT NULL)
RETURNS TABLE (fact_id uuid, score float8, type text, session_id text, payload jsonb, content text,
               embedding_model text, version int, commit_seq bigint, created_at timestamptz,
               updated_at timestamptz)
LANGUAGE plpgsql STABLE
SET hnsw.iterative_scan = 'relaxed_order'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_namespace  ALIAS FOR $1;
    p_query      ALIAS FOR $2;
    p_k          ALIAS FOR $3;
    p_filter     ALIAS FOR $4;
    p_type       ALIAS FOR $5;
    p_model      ALIAS FOR $6;
    p_session_id ALIAS FOR $7;
    v_model text := p_model;
    v_dim   int;
    v_index text;
    v_expr  text;
    v_where text;
    v_n     int;
    v_found boolean;
    v_max   int := coalesce(memstate._config_int('search_exact_max'), 2000);
    v_qdim  int;
    v_qnorm float8;
    v_active text := memstate._active_model(p_namespace);
BEGIN
    IF p_k IS NULL OR p_k NOT BETWEEN 1 AND 1000 THEN
        PERFORM memstate._fail('MSV01', format('k must be between 1 and 1000, not %s', p_k));
    END IF;
    IF p_filter IS NOT NULL AND jsonb_typeof(p_filter) <> 'object' THEN
        PERFORM memstate._fail('MSV01', 'filter must be a JSON object');
    END IF;
    v_qnorm := memstate._vector_norm(p_query);
    IF v_qnorm = 0 OR v_qnorm > 1e19 THEN
        PERFORM memstate._fail('MSV01', 'query vector is all zeros or too long (norm over 1e19): '
                                        'cosine needs a direction and a length float4 can square');
    END IF;
    v_qdim := memstate._vector_dims(p_query);
    IF v_model IS NULL THEN
        v_model := v_active;  -- a switched namespace searches its active model
    END IF;
    IF v_active IS NOT NULL AND v_model IS DISTINCT FROM v_active THEN
        PERFORM memstate._fail('MSV01', format(
            'namespace %L uses embedding model %L (switched by a re-embed), not %L',
            p_namespace, v_active, v_model),
            format('search with an embedder of model %L (a search never mixes models)', v_active));
    END IF;
    IF v_model IS NULL THEN
        SELECT count(*), min(m.model) INTO v_n, v_model FROM memstate.embedding_models m
        WHERE m.dim = v_qdim;
        IF v_n = 0 THEN
            PERFORM memstate._fail('MSV01', format('no embedding model of dimension %s', v_qdim));
        ELSIF v_n > 1 THEN
            PERFORM memstate._fail('MSV01', format('%s models have dimension %s: name one', v_n, v_qdim));
        END IF;
    END IF;
    SELECT m.dim, m.index_name INTO v_dim, v_index FROM memstate.embedding_models m WHERE m.model = v_model;
    IF NOT FOUND THEN
        PERFORM memstate._fail('MSV01', format('unknown embedding model %L', v_model));
    END IF;
    IF v_qdim <> v_dim THEN
        PERFORM memstate._fail('MSV01', format('query has %s dimensions, model %L has %s',
                                               v_qdim, v_model, v_dim));
    END IF;
    v_expr := memstate._distance_sql(v_dim, v_index, '$1');
    v_where := format('f.embedding_model = %L AND f.namespace = $2 %s %s %s', v_model,
        CASE WHEN p_filter IS NOT NULL THEN 'AND f.payload @> $3' ELSE '' END,
        CASE WHEN p_type IS NOT NULL THEN 'AND f.type = $4' ELSE '' END,
        CASE WHEN p_session_id IS NOT NULL THEN 'AND f.session_id = $5' ELSE '' END);

    IF p_filter IS NOT NULL OR p_session_id IS NOT NULL THEN
        -- Selective filter: the GIN / btree indexes find at most `v_max` candidates; sort
        -- those by true distance (exact). One statement: the candidates' ctids are
        -- materialised (capped at v_max + 1), and the exact sort runs only if the cap was
        -- not hit (a one-time filter), so the planner cannot put the filter on top of HNSW.
        RETURN QUERY EXECUTE format(
            'WITH c AS MATERIALIZED (SELECT f.ctid AS t FROM memstate.facts f WHERE %2$s LIMIT %3$s) '
            'SELECT f.fact_id, 1 - (%1$s), f.type, f.session_id, f.payload, f.content, '
            '       f.embedding_model, f.version, f.commit_seq, f.created_at, f.updated_at '
            'FROM memstate.facts f '
            'WHERE f.ctid = ANY (ARRAY(SELECT c.t FROM c)) AND (SELECT count(*) FROM c) <= %4$s '
            'ORDER BY %1$s, f.fact_id LIMIT $6', v_expr, v_where, v_max + 1, v_max)
        USING p_query, p_namespace, p_filter, p_type, p_session_id, p_k;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n > 0 THEN
            RETURN;
        END IF;
        -- No row: either nothing matches (done), or more than v_max rows do (use HNSW).
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM memstate.facts f WHERE %s)', v_where)
        INTO v_found USING p_query, p_namespace, p_filter, p_type, p_session_id;
        IF NOT v_found THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT s.fact_id, 1 - s.distance, s.type, s.session_id, s.payload, s.content, s.embedding_model, '
        '       s.version, s.commit_seq, s.created_at, s.updated_at '
        'FROM (SELECT f.*, %1$s AS distance FROM memstate.facts f WHERE %2$s ORDER BY %1$s LIMIT $6) s '
        'ORDER BY s.distance, s.fact_id', v_expr, v_where)
    USING p_query, p_namespace, p_filter, p_type, p_session_id, p_k;
END $$;
