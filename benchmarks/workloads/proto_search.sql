-- PROTOTYPE (benchmarks only): memstate.search with an exact pre-filtered path for
-- selective filters. Installed by benchmarks/workloads/filtered.py as bench_proto.search
-- in the benchmark database; proposed to replace memstate.search in sql/functions.sql.
--
-- Why: with a payload filter the planner puts the filter on top of an HNSW index scan.
-- Without hnsw.iterative_scan that returns fewer than k rows (recall 0.37 at 1% of 100k);
-- with it, the scan walks tens of thousands of tuples (≈ 120-200 ms at 100k). When the
-- filter is selective, the GIN index on payload finds the few candidates directly and an
-- exact distance sort over them is both faster and exact (recall 1.0). The candidate
-- count, capped at memstate.config 'search_exact_max' (default 2000 rows), picks the path
-- inside one statement; above the cap, the iterative HNSW scan as before.
CREATE SCHEMA IF NOT EXISTS bench_proto;

CREATE OR REPLACE FUNCTION bench_proto.search(
    namespace text, query vector, k int, filter jsonb DEFAULT NULL,
    fact_type text DEFAULT NULL, model text DEFAULT NULL, session text DEFAULT NULL)
RETURNS TABLE (fact_id uuid, score float8, type text, session_id text, payload jsonb, content text,
               embedding_model text, version int, commit_seq bigint, created_at timestamptz,
               updated_at timestamptz)
LANGUAGE plpgsql STABLE
SET hnsw.iterative_scan = 'relaxed_order'
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
BEGIN
    IF p_k IS NULL OR p_k NOT BETWEEN 1 AND 1000 THEN
        PERFORM memstate._fail('MSV01', format('k must be between 1 and 1000, not %s', p_k));
    END IF;
    IF p_filter IS NOT NULL AND jsonb_typeof(p_filter) <> 'object' THEN
        PERFORM memstate._fail('MSV01', 'filter must be a JSON object');
    END IF;
    IF v_model IS NULL THEN
        SELECT count(*), min(m.model) INTO v_n, v_model FROM memstate.embedding_models m
        WHERE m.dim = vector_dims(p_query);
        IF v_n = 0 THEN
            PERFORM memstate._fail('MSV01', format('no embedding model of dimension %s', vector_dims(p_query)));
        ELSIF v_n > 1 THEN
            PERFORM memstate._fail('MSV01', format('%s models have dimension %s: name one', v_n, vector_dims(p_query)));
        END IF;
    END IF;
    SELECT m.dim, m.index_name INTO v_dim, v_index FROM memstate.embedding_models m WHERE m.model = v_model;
    IF NOT FOUND THEN
        PERFORM memstate._fail('MSV01', format('unknown embedding model %L', v_model));
    END IF;
    IF vector_dims(p_query) <> v_dim THEN
        PERFORM memstate._fail('MSV01', format('query has %s dimensions, model %L has %s',
                                               vector_dims(p_query), v_model, v_dim));
    END IF;
    v_expr := CASE WHEN v_index IS NULL THEN 'f.embedding <=> $1'
                   WHEN v_dim <= 2000 THEN format('f.embedding::vector(%s) <=> $1::vector(%s)', v_dim, v_dim)
                   ELSE format('f.embedding::halfvec(%s) <=> $1::halfvec(%s)', v_dim, v_dim) END;
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
