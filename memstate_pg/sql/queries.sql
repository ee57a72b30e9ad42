-- Named queries of the Python API (memstate_pg/queries.py loads them by name).
-- Every write goes through a function of sql/functions.sql; these are its calls and the reads.

-- name: write_fact
SELECT fact_id, version, seq, replayed FROM memstate.write_fact(
    %(namespace)s, %(type)s, %(payload)s::jsonb, %(content)s, %(embedding)s::vector, %(model)s,
    %(session_id)s, %(fact_id)s::uuid, %(expected_version)s::int, %(actor)s, %(reason)s,
    %(idempotency_key)s, %(mode)s)

-- name: write_facts
-- (the text arrays travel in binary: psycopg's text array literal escapes each element
-- with a regular expression, milliseconds for a thousand payloads)
SELECT ord, fact_id, version, seq, replayed FROM memstate.write_facts(
    %(namespace)s, %(types)b::text[], %(payloads)b::text[]::jsonb[], %(contents)b::text[],
    %(embeddings)s::vector[], %(model)s, %(session_ids)b::text[], %(fact_ids)b::text[]::uuid[],
    %(actor)s, %(reason)s, %(idempotency_key)s, %(session_id)s)

-- name: delete_fact
SELECT memstate.delete_fact(%(fact_id)s::uuid, %(expected_version)s::int, %(actor)s, %(reason)s,
                            %(idempotency_key)s) AS seq

-- name: open_commit
SELECT seq, replayed, result FROM memstate.open_commit(
    %(namespace)s, %(session_id)s, %(actor)s, %(reason)s, %(idempotency_key)s)

-- name: rollback
SELECT memstate.rollback(%(namespace)s, %(steps)s, %(session_id)s, %(actor)s, %(reason)s) AS seq

-- name: revert
SELECT memstate.revert(%(seq)s, %(actor)s, %(reason)s) AS seq

-- name: promote_session
SELECT memstate.promote_session(%(namespace)s, %(session_id)s, %(actor)s, %(reason)s) AS seq

-- name: discard_session
SELECT memstate.discard_session(%(namespace)s, %(session_id)s, %(actor)s, %(reason)s) AS seq

-- name: register_type
SELECT memstate.register_type(%(type)s, %(json_schema)s::jsonb, %(singleton_key)s, %(immutable)s,
                              %(text_field)s)

-- name: register_model
SELECT memstate.register_model(%(model)s, %(dim)s, %(m)s, %(ef_construction)s)

-- name: get_type
SELECT type, json_schema, singleton_key, immutable, text_field FROM memstate.types WHERE type = %(type)s

-- name: get_fact
SELECT fact_id, namespace, type, session_id, payload, content, embedding_model, version,
       commit_seq, created_at, updated_at
FROM memstate.facts
WHERE fact_id = %(fact_id)s::uuid AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)

-- name: query_facts
SELECT fact_id, namespace, type, session_id, payload, content, embedding_model, version,
       commit_seq, created_at, updated_at
FROM memstate.facts
WHERE namespace = %(namespace)s
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(filter)s::jsonb IS NULL OR payload @> %(filter)s::jsonb)
  AND (%(session_id)s::text IS NULL OR session_id = %(session_id)s)
ORDER BY created_at, fact_id
LIMIT %(limit)s

-- name: search_model
-- What the direct search statement of one model needs (memstate_pg/_core/search_sql.py);
-- no row: the model was never registered, so no fact has a vector of it.
SELECT m.dim, m.index_name, memstate._vector_schema() AS vector_schema
FROM memstate.embedding_models m WHERE m.model = %(model)s

-- name: search
-- memstate.search itself: when the direct statement may have stopped short (search_sql.py).
SELECT fact_id, score, type, session_id, payload, content, embedding_model, version, commit_seq,
       created_at, updated_at
FROM memstate.search(%(namespace)s, %(query)s::vector, %(k)s, %(filter)s::jsonb, %(type)s,
                     %(model)s, %(session_id)s)

-- name: history_fact
SELECT %(fact_id)s::uuid AS fact_id, h.* FROM memstate.history(%(fact_id)s::uuid) h
WHERE %(namespace)s::text IS NULL OR h.namespace = %(namespace)s

-- name: history_namespace
SELECT v.fact_id, v.version, v.seq, v.op, c.kind, v.namespace, v.type, v.session_id, v.payload,
       v.content, v.embedding_model, c.actor, c.reason, v.created_at
FROM memstate.fact_versions v JOIN memstate.commits c ON c.seq = v.seq
WHERE v.namespace = %(namespace)s
ORDER BY v.seq, v.fact_id, v.version
LIMIT %(limit)s

-- name: as_of
SELECT fact_id, namespace, type, session_id, payload, content, embedding_model, version,
       commit_seq, created_at
FROM memstate.as_of(%(namespace)s, %(seq)s)

-- name: seq_at
-- (a time before the namespace's compaction horizon is refused, MSH01: the commits it would
-- find may be gone)
SELECT s.seq, memstate._check_horizon(s.namespace, coalesce(s.seq, 0), 'as_of') AS checked
FROM (SELECT %(namespace)s::text AS namespace, memstate.seq_at(%(namespace)s, %(at)s) AS seq) s

-- name: commits
SELECT seq, namespace, session_id, actor, reason, kind, idempotency_key, undoes, undone_by, created_at
FROM memstate.commits
WHERE namespace = %(namespace)s
ORDER BY seq DESC
LIMIT %(limit)s

-- name: commit_in_namespace
SELECT EXISTS (SELECT 1 FROM memstate.commits
               WHERE seq = %(seq)s AND namespace = %(namespace)s) AS found

-- name: mirror_kind
-- (use_mirror: the kind of a mirror the caller may know, tenants included)
SELECT kind FROM memstate.mirror_info WHERE name = %(name)s

-- name: mirror_status
-- (memstate.mirror_info: the mirrors as the caller may know them, see sql/functions.sql)
SELECT m.name, m.kind, m.enabled,
       count(o.id) FILTER (WHERE o.dead_at IS NULL) AS pending,
       count(o.id) FILTER (WHERE o.dead_at IS NOT NULL) AS dead,
       extract(epoch FROM now() - min(o.created_at) FILTER (WHERE o.dead_at IS NULL))::float8
           AS oldest_pending_age,
       m.last_synced_seq, m.last_synced_at, m.last_reconciled_at, m.last_reconcile,
       m.max_pending,
       count(o.id) FILTER (WHERE o.dead_at IS NULL) > m.max_pending AS backlog_alert
FROM memstate.mirror_info m
LEFT JOIN memstate.outbox o ON o.mirror = m.name
GROUP BY m.name, m.kind, m.enabled, m.last_synced_seq, m.last_synced_at, m.last_reconciled_at,
         m.last_reconcile, m.max_pending
ORDER BY m.name

-- name: history_namespace_newest
SELECT v.fact_id, v.version, v.seq, v.op, c.kind, v.namespace, v.type, v.session_id, v.payload,
       v.content, v.embedding_model, c.actor, c.reason, v.created_at
FROM memstate.fact_versions v JOIN memstate.commits c ON c.seq = v.seq
WHERE v.namespace = %(namespace)s
ORDER BY v.seq DESC, v.fact_id, v.version DESC
LIMIT %(limit)s

-- name: model_registered
SELECT EXISTS (SELECT 1 FROM memstate.embedding_models WHERE model = %(model)s) AS registered

-- name: reembed_todo
-- A re-embed's work left: the live facts of the namespace not yet in the new model, and those
-- of them without a vector staged for their current version.
SELECT count(*) AS total, count(*) FILTER (WHERE r.fact_id IS NULL) AS pending
FROM memstate.facts f
LEFT JOIN memstate.reembed_vectors r
  ON r.model = %(model)s AND r.fact_id = f.fact_id AND r.version = f.version
WHERE f.namespace = %(namespace)s AND f.embedding_model IS DISTINCT FROM %(model)s

-- name: reembed_pending
-- One keyset page of the facts a re-embed still has to embed (no vector staged for their
-- current version), with the text to embed.
SELECT f.fact_id, f.version, f.content
FROM memstate.facts f
WHERE f.namespace = %(namespace)s AND f.embedding_model IS DISTINCT FROM %(model)s
  AND f.fact_id > %(after)s::uuid
  AND NOT EXISTS (SELECT 1 FROM memstate.reembed_vectors r
                  WHERE r.model = %(model)s AND r.fact_id = f.fact_id AND r.version = f.version)
ORDER BY f.fact_id
LIMIT %(limit)s

-- name: reembed_stage
INSERT INTO memstate.reembed_vectors AS r (model, fact_id, namespace, version, embedding)
VALUES (%(model)s, %(fact_id)s::uuid, %(namespace)s, %(version)s, %(embedding)s::vector)
ON CONFLICT (model, fact_id) DO UPDATE SET
    namespace = excluded.namespace, version = excluded.version, embedding = excluded.embedding
RETURNING r.fact_id

-- name: reembed_apply
SELECT switched, missing FROM memstate.reembed_apply(%(namespace)s, %(model)s, %(actor)s, %(reason)s)

-- name: judge_hits
-- Search served by a mirror (memstate_pg/_core/judged.py), ONE statement, run as the caller
-- (Row Level Security applies: a namespace the caller may not see answers like a deleted fact).
-- source 'hit': each candidate of the mirror, in its order, with the live row of the searched
-- namespace if any (NULL: deleted, moved or invisible), its current version, whether it passes
-- the search's model / type / filter / session, and then its exact cosine similarity (as
-- memstate.search computes it). source 'lag': the k nearest of the facts the mirror has not
-- received yet (an outbox row of the mirror is waiting for them: new, updated, restored),
-- scored exactly; the work is proportional to the worker's lag.
WITH h AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(versions)s::int[]) WITH ORDINALITY AS h(fact_id, version, pos)
), lag AS (
    SELECT DISTINCT o.fact_id FROM memstate.outbox o
    WHERE o.mirror = %(mirror)s AND o.namespace = %(namespace)s
), f AS (
    SELECT x.fact_id, x.version, x.embedding, x.type, x.session_id, x.payload, x.content,
           x.embedding_model, x.commit_seq, x.created_at, x.updated_at,
           (x.embedding_model = %(model)s
            AND (%(type)s::text IS NULL OR x.type = %(type)s)
            AND (%(filter)s::jsonb IS NULL OR x.payload @> %(filter)s::jsonb)
            AND (%(session_id)s::text IS NULL OR x.session_id = %(session_id)s)) AS matches
    FROM (SELECT h.fact_id FROM h UNION SELECT lag.fact_id FROM lag) i
    JOIN memstate.facts x ON x.fact_id = i.fact_id
    WHERE x.namespace = %(namespace)s
)
SELECT 'hit' AS source, h.pos, h.version AS hit_version, f.fact_id, f.version, f.matches,
       CASE WHEN f.matches THEN 1 - (f.embedding <=> %(query)s::vector) END AS score,
       f.type, f.session_id, f.payload, f.content, f.embedding_model, f.commit_seq,
       f.created_at, f.updated_at
FROM h LEFT JOIN f ON f.fact_id = h.fact_id
UNION ALL
(SELECT 'lag', NULL, NULL, f.fact_id, f.version, true, 1 - (f.embedding <=> %(query)s::vector),
        f.type, f.session_id, f.payload, f.content, f.embedding_model, f.commit_seq,
        f.created_at, f.updated_at
 FROM f
 WHERE f.matches AND f.fact_id IN (SELECT lag.fact_id FROM lag)
 ORDER BY f.embedding <=> %(query)s::vector, f.fact_id
 LIMIT %(k)s)
ORDER BY source, pos
