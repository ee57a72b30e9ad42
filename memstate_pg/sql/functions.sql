-- memstate-pg functions and triggers. Every rule of the write path lives here, once: the
-- Python API calls these functions, and so can psql or any other language, with the same
-- validation, versioning, constraints and outbox rows.
--
-- Errors carry custom SQLSTATEs that the Python API maps to its exceptions:
--   MSV01 -> ValidationFailed   MSC01 -> ConflictError   MSN01 -> NotFound
--   MSH01 -> HistoryCompacted (older than the namespace's compaction horizon)
-- Functions are SECURITY INVOKER (they can do nothing the calling role could not), except
-- the few trigger functions marked SECURITY DEFINER below, which check what a tenant's view
-- under RLS cannot see; trigger functions cannot be called directly.
-- Every function pins `search_path = pg_catalog, pg_temp`: a caller's search_path (and any
-- function or operator a tenant could CREATE in a schema on it, such as `public` on
-- databases from PostgreSQL <= 14) never changes what runs inside. pgvector's functions and
-- operators live in the extension's schema, which is therefore NOT on the path: its few uses
-- are written with pg_catalog only (memstate._vector_dims/_vector_norm, comparisons through
-- float4[]), or qualified with the schema looked up at run time (memstate._distance_sql).
-- Type names in signatures (`vector`) are bound when the function is created.
-- Re-runnable (CREATE OR REPLACE); applied after sql/schema.sql. By hand, in ONE transaction
-- (psql -1), so that no statement runs against a half-applied file.

-- ---------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION memstate._fail(p_code text, p_message text, p_detail text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = coalesce(p_detail, '');
END $$;

CREATE OR REPLACE FUNCTION memstate._config_int(p_key text)
RETURNS bigint LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (value #>> '{}')::bigint FROM memstate.config WHERE key = p_key
$$;

-- The size limits of memstate.config ('max_payload_bytes', 'max_content_bytes', bytes of the
-- JSON text and of the content), for every writer: write_fact, and the triggers on facts and
-- fact_versions, so raw INSERTs and UPDATEs meet the same limits. Raises MSV01.
CREATE OR REPLACE FUNCTION memstate._check_sizes(p_payload jsonb, p_content text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n   bigint;
    v_max bigint;
BEGIN
    IF p_payload IS NOT NULL THEN
        v_n := octet_length(p_payload::text);
        v_max := memstate._config_int('max_payload_bytes');
        IF v_n > v_max THEN
            PERFORM memstate._fail('MSV01', pg_catalog.format('payload is %s bytes, over the limit of %s', v_n, v_max));
        END IF;
    END IF;
    IF p_content IS NOT NULL THEN
        v_n := octet_length(p_content);
        v_max := memstate._config_int('max_content_bytes');
        IF v_n > v_max THEN
            PERFORM memstate._fail('MSV01', pg_catalog.format('content is %s bytes, over the limit of %s', v_n, v_max));
        END IF;
    END IF;
END $$;

-- pgvector's vector_dims() and vector_norm(), without its schema on the path (see the top).
CREATE OR REPLACE FUNCTION memstate._vector_dims(p_vector vector)
RETURNS int LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.array_length(p_vector::pg_catalog.float4[], 1)
$$;

CREATE OR REPLACE FUNCTION memstate._vector_norm(p_vector vector)
RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.sqrt(pg_catalog.sum(x::float8 * x::float8))
    FROM pg_catalog.unnest(p_vector::pg_catalog.float4[]) AS x
$$;

-- The schema of the vector extension, to qualify pgvector's types and operators in dynamic
-- SQL (it is not on the pinned search_path).
CREATE OR REPLACE FUNCTION memstate._vector_schema()
RETURNS name LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'
$$;

-- The text that gets embedded when the caller gives none: payload[text_field] when that is a
-- string; without a text_field, payload.content or payload.text when a string; else the
-- payload's JSON text. (The Python API derives the same way before embedding.)
CREATE OR REPLACE FUNCTION memstate.derive_content(p_text_field text, p_payload jsonb)
RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_text_field IS NOT NULL AND jsonb_typeof(p_payload -> p_text_field) = 'string'
            THEN p_payload ->> p_text_field
        WHEN p_text_field IS NULL AND jsonb_typeof(p_payload -> 'content') = 'string'
            THEN p_payload ->> 'content'
        WHEN p_text_field IS NULL AND jsonb_typeof(p_payload -> 'text') = 'string'
            THEN p_payload ->> 'text'
        ELSE p_payload::text
    END
$$;

-- Schemaless by default: a fact type nobody registered is stored as given (a JSON object,
-- no singleton key, mutable). With config strict_types = true it is refused instead.
CREATE OR REPLACE FUNCTION memstate._unknown_type(p_type text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF coalesce((SELECT value = 'true'::jsonb FROM memstate.config WHERE key = 'strict_types'), false) THEN
        PERFORM memstate._fail('MSV01', format('unknown fact type %L: register it first '
                                               '(this database refuses unregistered types: strict_types)', p_type));
    END IF;
END $$;

-- Checks a payload against the subset of JSON Schema that describes its shape: the payload
-- is an object, `required` keys are present, each property's JSON type is allowed
-- (`type` or the types of `anyOf`/`oneOf` branches; integer = number without fraction), and
-- no unknown key when additionalProperties is false. Raises MSV01 naming the field.
CREATE OR REPLACE FUNCTION memstate.validate_payload(p_schema jsonb, p_payload jsonb)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key   text;
    v_prop  jsonb;
    v_types text[];
    v_kind  text;
    v_ok    boolean;
BEGIN
    IF p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
        PERFORM memstate._fail('MSV01', 'payload must be a JSON object');
    END IF;
    IF p_schema IS NULL THEN
        RETURN;
    END IF;
    FOR v_key IN SELECT jsonb_array_elements_text(coalesce(p_schema -> 'required', '[]')) LOOP
        IF NOT p_payload ? v_key THEN
            PERFORM memstate._fail('MSV01', format('payload is missing required field %I', v_key));
        END IF;
    END LOOP;
    FOR v_key, v_prop IN SELECT key, value FROM jsonb_each(p_payload) LOOP
        IF NOT coalesce(p_schema -> 'properties', '{}') ? v_key THEN
            IF p_schema -> 'additionalProperties' = 'false'::jsonb THEN
                PERFORM memstate._fail('MSV01', format('payload has unknown field %I', v_key));
            END IF;
            CONTINUE;
        END IF;
        SELECT array_agg(t) INTO v_types FROM (
            SELECT jsonb_array_elements_text(
                       CASE jsonb_typeof(b -> 'type') WHEN 'array' THEN b -> 'type'
                            WHEN 'string' THEN jsonb_build_array(b -> 'type') END) AS t
            FROM (SELECT p_schema -> 'properties' -> v_key AS b
                  UNION ALL
                  SELECT jsonb_array_elements(coalesce(p_schema -> 'properties' -> v_key -> 'anyOf',
                                                       p_schema -> 'properties' -> v_key -> 'oneOf',
                                                       '[]'))) branches
        ) types;
        IF v_types IS NULL THEN
            CONTINUE;  -- $ref, enum, const ...: shape not described by a plain type
        END IF;
        v_kind := jsonb_typeof(v_prop);
        v_ok := v_kind = ANY (v_types)
            OR (v_kind = 'number' AND 'integer' = ANY (v_types)
                AND (v_prop #>> '{}')::numeric = trunc((v_prop #>> '{}')::numeric));
        IF NOT v_ok THEN
            PERFORM memstate._fail('MSV01',
                format('payload field %I is %s, expected %s', v_key, v_kind, pg_catalog.array_to_string(v_types, ' or ')));
        END IF;
    END LOOP;
END $$;

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

-- The compaction horizon (memstate.compactions, written by the compaction functions at the
-- end of this file): as_of, rollback and revert call memstate._check_horizon, so a state
-- whose history compaction removed is refused with MSH01 instead of being rebuilt from what
-- is left. Here, ahead of those readers, because as_of is a SQL function (bodies are checked
-- when created).
--
-- The horizon of one namespace (NULLs: never compacted). SECURITY DEFINER and read-only, like
-- _active_model: no role but the owner holds a privilege on memstate.compactions; it tells
-- only the horizon of the namespace asked about.
CREATE OR REPLACE FUNCTION memstate._horizon(p_namespace text, OUT horizon_seq bigint, OUT horizon_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.horizon_seq, c.horizon_at FROM memstate.compactions c WHERE c.namespace = p_namespace
$$;

-- Raises MSH01 when the state of `p_namespace` right after commit `p_seq` is older than its
-- compaction horizon (that state needs history compaction removed); `p_what` names the
-- operation for the message.
CREATE OR REPLACE FUNCTION memstate._check_horizon(p_namespace text, p_seq bigint, p_what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_h record;
BEGIN
    SELECT h.horizon_seq, h.horizon_at INTO v_h FROM memstate._horizon(p_namespace) h;
    IF v_h.horizon_seq IS NOT NULL AND p_seq < v_h.horizon_seq THEN
        PERFORM memstate._fail('MSH01', pg_catalog.format(
            '%s needs history of namespace %L before its compaction horizon, commit %s '
            '(history older than %s was compacted)', p_what, p_namespace, v_h.horizon_seq,
            pg_catalog.to_char(v_h.horizon_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')),
            pg_catalog.format('as_of reaches commit %s and later, rollback and revert undo commits '
                              'after it; older states are only in a backup', v_h.horizon_seq));
    END IF;
END $$;

-- ---------------------------------------------------------------------------------------
-- Registration: embedding models and fact types
-- ---------------------------------------------------------------------------------------

-- Registers a vector space and builds its own partial HNSW index (cosine). Idempotent;
-- a known model with another dimension is refused. Vectors over 2000 dims are indexed as
-- halfvec (up to 4000); beyond that, search is exact.
CREATE OR REPLACE FUNCTION memstate.register_model(
    p_model text, p_dim int, p_m int DEFAULT 16, p_ef_construction int DEFAULT 64)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_dim   int;
    v_index text := 'facts_hnsw_' || pg_catalog.left(pg_catalog.md5(p_model), 16);
    v_cast  text;
    v_vs    name;
BEGIN
    IF p_model IS NULL OR length(p_model) NOT BETWEEN 1 AND 100 THEN
        PERFORM memstate._fail('MSV01', 'embedding model name must be 1 to 100 characters');
    END IF;
    IF p_dim IS NULL OR p_dim NOT BETWEEN 1 AND 16000 THEN
        PERFORM memstate._fail('MSV01', format('embedding dimension %s out of range 1..16000', p_dim));
    END IF;
    SELECT dim INTO v_dim FROM memstate.embedding_models WHERE model = p_model;
    IF FOUND THEN
        IF v_dim <> p_dim THEN
            PERFORM memstate._fail('MSV01', format('embedding model %L is registered with dimension %s, not %s',
                                                   p_model, v_dim, p_dim));
        END IF;
        RETURN;
    END IF;
    v_cast := CASE WHEN p_dim <= 2000 THEN 'vector' WHEN p_dim <= 4000 THEN 'halfvec' END;
    v_vs := memstate._vector_schema();
    INSERT INTO memstate.embedding_models (model, dim, index_name)
    VALUES (p_model, p_dim, CASE WHEN v_cast IS NOT NULL THEN v_index END)
    ON CONFLICT (model) DO NOTHING;
    IF v_cast IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON memstate.facts USING hnsw ((embedding::%I.%s(%s)) %I.%s) '
            'WITH (m = %s, ef_construction = %s) WHERE embedding_model = %L',
            v_index, v_vs, v_cast, p_dim, v_vs, v_cast || '_cosine_ops', p_m, p_ef_construction, p_model);
    END IF;
END $$;

-- Registers (or changes) a fact type. Changing singleton_key re-derives the key of every
-- live fact of the type, so an existing duplicate makes the change fail instead of hiding.
CREATE OR REPLACE FUNCTION memstate.register_type(
    p_type text, p_json_schema jsonb DEFAULT NULL, p_singleton_key text DEFAULT NULL,
    p_immutable boolean DEFAULT false, p_text_field text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old memstate.types%ROWTYPE;
BEGIN
    IF p_type IS NULL OR length(p_type) NOT BETWEEN 1 AND 200 THEN
        PERFORM memstate._fail('MSV01', 'type name must be 1 to 200 characters');
    END IF;
    IF p_json_schema IS NOT NULL AND jsonb_typeof(p_json_schema) <> 'object' THEN
        PERFORM memstate._fail('MSV01', 'json_schema must be a JSON object');
    END IF;
    SELECT * INTO v_old FROM memstate.types WHERE type = p_type FOR UPDATE;
    INSERT INTO memstate.types AS t (type, json_schema, singleton_key, immutable, text_field)
    VALUES (p_type, p_json_schema, p_singleton_key, coalesce(p_immutable, false), p_text_field)
    ON CONFLICT (type) DO UPDATE SET
        json_schema = excluded.json_schema, singleton_key = excluded.singleton_key,
        immutable = excluded.immutable, text_field = excluded.text_field, updated_at = now();
    IF v_old.type IS NOT NULL AND v_old.singleton_key IS DISTINCT FROM p_singleton_key THEN
        UPDATE memstate.facts SET type = type WHERE type = p_type;  -- facts_rules recomputes
    END IF;
END $$;

-- ---------------------------------------------------------------------------------------
-- Triggers: the rules that hold for every writer
-- ---------------------------------------------------------------------------------------

-- On memstate.facts: payload and content within the size limits; vector dimension matches
-- the model; singleton key derived from the type; immutable facts refuse content changes; a
-- fact never changes namespace or type, and a fact id that has history belongs to the
-- namespace of that history. SECURITY DEFINER, because that history may be in a namespace
-- the writer cannot see (RLS would hide the conflict from the check); it only reads.
-- It runs for every row written, so the checks of memstate._check_sizes, _vector_dims,
-- _vector_norm and _active_model are written out here, as the same expressions: each call
-- of a function with a pinned search_path costs a GUC save/restore and cannot be inlined.
CREATE OR REPLACE FUNCTION memstate._facts_rules()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type memstate.types%ROWTYPE;
    v_dim  int;
    v_vec  pg_catalog.float4[];
    v_norm float8;
    v_ns   text;
    v_active text;
    v_n    bigint;
    v_maxp bigint;
    v_maxc bigint;
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
        -- memstate._check_sizes(NEW.payload, NEW.content), written out
        v_maxp := (SELECT (c.value #>> '{}')::bigint FROM memstate.config c WHERE c.key = 'max_payload_bytes');
        v_maxc := (SELECT (c.value #>> '{}')::bigint FROM memstate.config c WHERE c.key = 'max_content_bytes');
        v_n := pg_catalog.octet_length(NEW.payload::text);
        IF v_n > v_maxp THEN
            PERFORM memstate._fail('MSV01', pg_catalog.format('payload is %s bytes, over the limit of %s', v_n, v_maxp));
        END IF;
        v_n := pg_catalog.octet_length(NEW.content);
        IF v_n > v_maxc THEN
            PERFORM memstate._fail('MSV01', pg_catalog.format('content is %s bytes, over the limit of %s', v_n, v_maxc));
        END IF;
    END IF;
    v_vec := NEW.embedding::pg_catalog.float4[];
    IF TG_OP = 'INSERT' OR NEW.embedding_model IS DISTINCT FROM OLD.embedding_model
       OR v_vec IS DISTINCT FROM OLD.embedding::pg_catalog.float4[] THEN
        SELECT dim INTO v_dim FROM memstate.embedding_models WHERE model = NEW.embedding_model;
        IF NOT FOUND THEN
            PERFORM memstate._fail('MSV01', format('unknown embedding model %L: register it first', NEW.embedding_model));
        END IF;
        -- memstate._vector_dims and memstate._vector_norm, written out
        IF pg_catalog.array_length(v_vec, 1) <> v_dim THEN
            PERFORM memstate._fail('MSV01', pg_catalog.format('embedding has %s dimensions, model %L has %s',
                                   pg_catalog.array_length(v_vec, 1), NEW.embedding_model, v_dim));
        END IF;
        v_norm := (SELECT pg_catalog.sqrt(pg_catalog.sum(x::float8 OPERATOR(pg_catalog.*) x::float8))
                   FROM pg_catalog.unnest(v_vec) AS x);
        IF v_norm = 0 OR v_norm > 1e19 THEN
            PERFORM memstate._fail('MSV01', 'embedding is all zeros or too long (norm over 1e19): '
                                            'cosine needs a direction and a length float4 can square');
        END IF;
    END IF;
    -- One vector space per namespace once a re-embed switched it. Checked here, after the
    -- writer's lock on the table is granted, so a write racing memstate.reembed_apply (which
    -- holds a SHARE ROW EXCLUSIVE lock) sees the switch once it may proceed.
    -- memstate._active_model(NEW.namespace), written out
    SELECT nm.model INTO v_active FROM memstate.namespace_models nm WHERE nm.namespace = NEW.namespace;
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
                                     AND v_vec IS DISTINCT FROM OLD.embedding::pg_catalog.float4[])) THEN
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

CREATE OR REPLACE TRIGGER facts_rules BEFORE INSERT OR UPDATE ON memstate.facts
    FOR EACH ROW EXECUTE FUNCTION memstate._facts_rules();

-- Deletes of facts: the writer marks the row (UPDATE ... SET deleted_by = its commit's seq,
-- under its RLS policy, so only a row it may change), and this trigger removes it with the
-- owner's rights. Writers hold INSERT and column-level UPDATE on memstate.facts, never
-- DELETE or table-level UPDATE: either would also let them LOCK TABLE memstate.facts and
-- stall every tenant. A trigger function cannot be called directly.
CREATE OR REPLACE FUNCTION memstate._facts_delete()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM memstate.facts f WHERE f.fact_id = NEW.fact_id AND f.deleted_by IS NOT NULL;
    IF NOT FOUND THEN  -- the owner is bound by FORCEd RLS without a grant of this namespace
        PERFORM memstate._fail('42501', format('the owner of memstate.facts cannot delete fact %s', NEW.fact_id),
                               'with FORCE ROW LEVEL SECURITY, grant the owner every namespace');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER facts_delete AFTER UPDATE OF deleted_by ON memstate.facts
    FOR EACH ROW WHEN (NEW.deleted_by IS NOT NULL) EXECUTE FUNCTION memstate._facts_delete();

-- History is append-only: versions are never changed or removed. A commit row is born with
-- empty bookkeeping (undoes, undone_by, result) and only ever gains it: `undoes` is set once
-- (by the rollback/revert commit itself); `result` (the fact ids of an idempotent commit, in
-- order) only grows; `undone_by` is set to a rollback/revert commit of the namespace that
-- lists this commit in its `undoes`, and cleared only when that commit is itself undone
-- (redo). So no writer can erase a rollback or change what an idempotency key replays.
-- The one exception is compaction (memstate.compact_versions / compact_commits, at the end
-- of this file): functions owned by the tables' owner, EXECUTE revoked from PUBLIC, which set
-- memstate.compacting around their own statements. Both are required: any role may set the
-- setting, but only code running as the owner (current_user) passes the second check, and
-- it may then only delete old versions and commits, or put a vector on a version that had
-- none (the convention of version vectors, see memstate.compact_versions).
CREATE OR REPLACE FUNCTION memstate._append_only()
RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n int;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND TG_TABLE_NAME IN ('fact_versions', 'commits')
       AND pg_catalog.current_setting('memstate.compacting', true) = 'on'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                   WHERE c.oid = TG_RELID AND c.relowner = (SELECT r.oid FROM pg_catalog.pg_roles r
                                                            WHERE r.rolname = current_user)) THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        IF TG_TABLE_NAME = 'fact_versions' THEN  -- nested: OLD.embedding exists only here
            IF OLD.embedding IS NULL AND NEW.embedding IS NOT NULL
               AND (NEW.fact_id, NEW.version, NEW.seq, NEW.namespace, NEW.type, NEW.session_id, NEW.op,
                    NEW.payload, NEW.content, NEW.embedding_model, NEW.created_at)
                   IS NOT DISTINCT FROM
                   (OLD.fact_id, OLD.version, OLD.seq, OLD.namespace, OLD.type, OLD.session_id, OLD.op,
                    OLD.payload, OLD.content, OLD.embedding_model, OLD.created_at) THEN
                RETURN NEW;
            END IF;
        END IF;
    END IF;
    IF TG_TABLE_NAME = 'commits' AND TG_OP = 'INSERT' THEN  -- nested: NEW.kind exists only here
        IF NEW.undoes IS NOT NULL OR NEW.undone_by IS NOT NULL OR NEW.result IS NOT NULL THEN
            PERFORM memstate._fail('MSC01', 'a new commit has no undoes, undone_by or result yet');
        END IF;
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME = 'commits' AND TG_OP = 'UPDATE' THEN
        IF (NEW.seq, NEW.namespace, NEW.session_id, NEW.actor, NEW.reason, NEW.kind,
            NEW.idempotency_key, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.seq, OLD.namespace, OLD.session_id, OLD.actor, OLD.reason, OLD.kind,
            OLD.idempotency_key, OLD.created_at) THEN
            IF OLD.undoes IS NOT NULL AND NEW.undoes IS DISTINCT FROM OLD.undoes THEN
                PERFORM memstate._fail('MSC01', format('commit %s: undoes is set once', OLD.seq));
            END IF;
            IF OLD.result IS NOT NULL AND NEW.result IS DISTINCT FROM OLD.result THEN
                v_n := CASE WHEN jsonb_typeof(OLD.result) = 'array' THEN jsonb_array_length(OLD.result) END;
                IF v_n IS NULL OR jsonb_typeof(NEW.result) IS DISTINCT FROM 'array'
                   OR (SELECT coalesce(jsonb_agg(e.value ORDER BY e.ordinality), '[]'::jsonb)
                       FROM jsonb_array_elements(NEW.result) WITH ORDINALITY e
                       WHERE e.ordinality <= v_n) IS DISTINCT FROM OLD.result THEN
                    PERFORM memstate._fail('MSC01', format('commit %s: result only grows', OLD.seq));
                END IF;
            END IF;
            IF NEW.undone_by IS DISTINCT FROM OLD.undone_by THEN
                IF NEW.undone_by IS NOT NULL THEN
                    IF OLD.undone_by IS NOT NULL OR NOT EXISTS (
                        SELECT 1 FROM memstate.commits c
                        WHERE c.seq = NEW.undone_by AND c.namespace = NEW.namespace
                          AND c.kind IN ('rollback', 'revert') AND NEW.seq = ANY (c.undoes)) THEN
                        PERFORM memstate._fail('MSC01', format(
                            'commit %s can only be marked undone by a rollback or revert that undoes it', OLD.seq));
                    END IF;
                ELSIF NOT EXISTS (SELECT 1 FROM memstate.commits c
                                  WHERE c.seq = OLD.undone_by AND c.undone_by IS NOT NULL) THEN
                    PERFORM memstate._fail('MSC01', format(
                        'commit %s is undone by commit %s, which is still in effect', OLD.seq, OLD.undone_by));
                END IF;
            END IF;
            RETURN NEW;
        END IF;
    END IF;
    PERFORM memstate._fail('MSC01', format('memstate.%s is append-only (%s refused)', TG_TABLE_NAME, TG_OP));
    RETURN NULL;
END $$;

-- On memstate.fact_versions: the size limits, and a fact id's versions are 1, 2, 3, ... in
-- one namespace, whoever writes them (raw INSERTs included), so no tenant can squat on
-- another namespace's fact id or next version number. SECURITY DEFINER, because those
-- versions may be in a namespace the writer cannot see; it only reads.
--
-- The version log stores a vector only when it changed: a new version whose vector and
-- embedding model equal its fact's effective vector and model so far is stored with
-- embedding NULL, meaning "the same vector as the previous version". The effective vector
-- of version v is the embedding of the newest version <= v whose embedding is not NULL
-- (memstate.version_embedding); a delete's NULL reads the same way. First versions, and
-- versions whose vector or model changed (re-embeds), carry theirs. Done here, so that
-- every writer (the functions, raw INSERTs) keeps the log in this form.
CREATE OR REPLACE FUNCTION memstate._versions_rules()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_last record;
    v_vec  pg_catalog.float4[];
    v_n    bigint;
    v_maxp bigint;
    v_maxc bigint;
BEGIN
    -- memstate._check_sizes(NEW.payload, NEW.content), written out (see _facts_rules)
    v_maxp := (SELECT (c.value #>> '{}')::bigint FROM memstate.config c WHERE c.key = 'max_payload_bytes');
    v_maxc := (SELECT (c.value #>> '{}')::bigint FROM memstate.config c WHERE c.key = 'max_content_bytes');
    v_n := pg_catalog.octet_length(NEW.payload::text);
    IF v_n > v_maxp THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('payload is %s bytes, over the limit of %s', v_n, v_maxp));
    END IF;
    v_n := pg_catalog.octet_length(NEW.content);
    IF v_n > v_maxc THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('content is %s bytes, over the limit of %s', v_n, v_maxc));
    END IF;
    SELECT v.namespace, v.version, v.embedding_model INTO v_last FROM memstate.fact_versions v
    WHERE v.fact_id = NEW.fact_id ORDER BY v.version DESC LIMIT 1;
    IF FOUND AND v_last.namespace IS DISTINCT FROM NEW.namespace THEN
        PERFORM memstate._fail('MSC01', format('fact id %s belongs to another namespace', NEW.fact_id));
    END IF;
    IF NEW.version IS DISTINCT FROM coalesce(v_last.version, 0) + 1 THEN
        PERFORM memstate._fail('MSC01', format('fact %s: version %s would not follow version %s',
                                               NEW.fact_id, NEW.version, coalesce(v_last.version, 0)));
    END IF;
    IF NEW.embedding IS NOT NULL AND NEW.op <> 'delete' AND v_last.version IS NOT NULL
       AND v_last.embedding_model IS NOT DISTINCT FROM NEW.embedding_model THEN
        SELECT v.embedding::pg_catalog.float4[] INTO v_vec FROM memstate.fact_versions v
        WHERE v.fact_id = NEW.fact_id AND v.embedding IS NOT NULL
        ORDER BY v.version DESC LIMIT 1;
        IF v_vec = NEW.embedding::pg_catalog.float4[] THEN
            NEW.embedding := NULL;  -- unchanged: the log keeps the earlier version's copy
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER fact_versions_rules BEFORE INSERT ON memstate.fact_versions
    FOR EACH ROW EXECUTE FUNCTION memstate._versions_rules();
CREATE OR REPLACE TRIGGER fact_versions_append_only BEFORE UPDATE OR DELETE ON memstate.fact_versions
    FOR EACH ROW EXECUTE FUNCTION memstate._append_only();
CREATE OR REPLACE TRIGGER fact_versions_no_truncate BEFORE TRUNCATE ON memstate.fact_versions
    FOR EACH STATEMENT EXECUTE FUNCTION memstate._append_only();
-- A new commit is born with empty bookkeeping: the WHEN clause tests that without calling
-- the function (once per commit, on the write path), which is only called to refuse one.
CREATE OR REPLACE TRIGGER commits_append_only BEFORE UPDATE OR DELETE ON memstate.commits
    FOR EACH ROW EXECUTE FUNCTION memstate._append_only();
CREATE OR REPLACE TRIGGER commits_born_empty BEFORE INSERT ON memstate.commits
    FOR EACH ROW WHEN (NEW.undoes IS NOT NULL OR NEW.undone_by IS NOT NULL OR NEW.result IS NOT NULL)
    EXECUTE FUNCTION memstate._append_only();

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

CREATE OR REPLACE TRIGGER fact_versions_outbox AFTER INSERT ON memstate.fact_versions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION memstate._enqueue_versions();

-- ---------------------------------------------------------------------------------------
-- Commits
-- ---------------------------------------------------------------------------------------

-- Inserts a commit row. With an idempotency key already used in this namespace, writes
-- nothing and returns the earlier commit with replayed = true.
CREATE OR REPLACE FUNCTION memstate._new_commit(
    p_namespace text, p_session_id text, p_actor text, p_reason text, p_kind text,
    p_idempotency_key text,
    OUT seq bigint, OUT replayed boolean, OUT result jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_namespace IS NULL OR length(p_namespace) NOT BETWEEN 1 AND 200 THEN
        PERFORM memstate._fail('MSV01', 'namespace must be 1 to 200 characters');
    END IF;
    IF length(p_session_id) > 200 OR length(p_actor) > 200 OR length(p_idempotency_key) > 200 THEN
        PERFORM memstate._fail('MSV01', 'session_id, actor and idempotency_key are limited to 200 characters');
    END IF;
    IF length(p_reason) > 2000 THEN
        PERFORM memstate._fail('MSV01', 'reason is limited to 2000 characters');
    END IF;
    replayed := false;
    INSERT INTO memstate.commits AS c (namespace, session_id, actor, reason, kind, idempotency_key)
    VALUES (p_namespace, p_session_id, p_actor, p_reason, p_kind, p_idempotency_key)
    ON CONFLICT (namespace, idempotency_key) DO NOTHING
    RETURNING c.seq INTO seq;
    IF seq IS NULL THEN
        SELECT c.seq, c.result INTO seq, result
        FROM memstate.commits c
        WHERE c.namespace = p_namespace AND c.idempotency_key = p_idempotency_key;
        replayed := true;
    END IF;
END $$;

-- Opens one commit for the rest of the transaction: every write in `p_namespace` until
-- COMMIT shares its seq. Returns the seq (the earlier one when the idempotency key was
-- used before: see memstate.open_commit for the replay flag).
CREATE OR REPLACE FUNCTION memstate.open_commit(
    p_namespace text, p_session_id text DEFAULT NULL, p_actor text DEFAULT NULL,
    p_reason text DEFAULT NULL, p_idempotency_key text DEFAULT NULL,
    OUT seq bigint, OUT replayed boolean, OUT result jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_open jsonb := coalesce(nullif(current_setting('memstate.open_commits', true), ''), '{}')::jsonb;
BEGIN
    IF v_open ? p_namespace THEN
        PERFORM memstate._fail('MSC01', format('a commit is already open for namespace %L in this transaction', p_namespace));
    END IF;
    SELECT c.seq, c.replayed, c.result INTO seq, replayed, result
    FROM memstate._new_commit(p_namespace, p_session_id, p_actor, p_reason, 'commit', p_idempotency_key) c;
    IF NOT replayed THEN
        PERFORM set_config('memstate.open_commits',
                           jsonb_set(v_open, ARRAY[p_namespace],
                                     jsonb_build_object('seq', seq, 'keyed', p_idempotency_key IS NOT NULL))::text,
                           true);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION memstate.begin_commit(
    namespace text, session_id text DEFAULT NULL, actor text DEFAULT NULL,
    reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS bigint LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.seq FROM memstate.open_commit($1, $2, $3, $4, $5) o
$$;

-- The commit a write belongs to: the one opened in this transaction for the namespace, or
-- a new one of its own.
CREATE OR REPLACE FUNCTION memstate._commit_for(
    p_namespace text, p_session_id text, p_actor text, p_reason text, p_idempotency_key text,
    OUT seq bigint, OUT replayed boolean, OUT result jsonb, OUT keyed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_open jsonb := nullif(current_setting('memstate.open_commits', true), '')::jsonb -> p_namespace;
BEGIN
    IF v_open IS NOT NULL THEN
        seq := (v_open ->> 'seq')::bigint;
        replayed := false;
        keyed := (v_open ->> 'keyed')::boolean;
        RETURN;
    END IF;
    SELECT c.seq, c.replayed, c.result INTO seq, replayed, result
    FROM memstate._new_commit(p_namespace, p_session_id, p_actor, p_reason, 'commit', p_idempotency_key) c;
    keyed := p_idempotency_key IS NOT NULL;
END $$;

-- Appends a version row (the outbox trigger fires on it).
CREATE OR REPLACE FUNCTION memstate._log_version(p_fact memstate.facts, p_seq bigint, p_op text)
RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO memstate.fact_versions
        (fact_id, version, seq, namespace, type, session_id, op, payload, content, embedding, embedding_model)
    VALUES (p_fact.fact_id, p_fact.version, p_seq, p_fact.namespace, p_fact.type, p_fact.session_id, p_op,
            p_fact.payload, p_fact.content,
            CASE WHEN p_op = 'delete' THEN NULL ELSE p_fact.embedding END, p_fact.embedding_model)
$$;

-- The one write path for facts. Creates a fact, or updates it when `p_fact_id` names a
-- live fact or the type's singleton key matches a live fact; `p_mode = 'update'` requires
-- a live fact. Returns the fact id, its new version, the commit seq, and whether this was
-- an idempotent replay (then nothing was written and version is NULL).
CREATE OR REPLACE FUNCTION memstate.write_fact(
    p_namespace text, p_type text, p_payload jsonb, p_content text, p_embedding vector,
    p_embedding_model text, p_session_id text DEFAULT NULL, p_fact_id uuid DEFAULT NULL,
    p_expected_version int DEFAULT NULL, p_actor text DEFAULT NULL, p_reason text DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL, p_mode text DEFAULT 'put',
    OUT fact_id uuid, OUT version int, OUT seq bigint, OUT replayed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type    memstate.types%ROWTYPE;
    v_content text;
    v_commit  record;
    v_row     memstate.facts;
    v_cur     record;
    v_fid     uuid := p_fact_id;
    v_max     int;
    v_op      text;
    v_try     int := 0;
BEGIN
    SELECT * INTO v_type FROM memstate.types t WHERE t.type = p_type;
    IF NOT FOUND THEN
        PERFORM memstate._unknown_type(p_type);
    END IF;
    PERFORM memstate.validate_payload(v_type.json_schema, p_payload);
    v_content := coalesce(p_content, memstate.derive_content(v_type.text_field, p_payload));
    PERFORM memstate._check_sizes(p_payload, v_content);
    IF p_embedding IS NULL OR p_embedding_model IS NULL THEN
        PERFORM memstate._fail('MSV01', 'embedding and embedding_model are required');
    END IF;
    IF p_mode NOT IN ('put', 'update') THEN
        PERFORM memstate._fail('MSV01', format('unknown write mode %L', p_mode));
    END IF;

    SELECT * INTO v_commit FROM memstate._commit_for(p_namespace, p_session_id, p_actor, p_reason, p_idempotency_key);
    seq := v_commit.seq;
    IF v_commit.replayed THEN
        fact_id := (v_commit.result ->> 0)::uuid;
        replayed := true;
        RETURN;
    END IF;
    replayed := false;

    LOOP
        v_try := v_try + 1;
        IF v_try > 20 THEN
            PERFORM memstate._fail('MSC01', 'could not settle the target fact after 20 attempts (heavy contention)');
        END IF;
        IF v_fid IS NULL AND v_type.singleton_key IS NOT NULL THEN
            SELECT f.fact_id INTO v_fid FROM memstate.facts f
            WHERE f.namespace = p_namespace AND f.type = p_type
              AND f.singleton_value = p_payload ->> v_type.singleton_key;
        END IF;
        IF v_fid IS NOT NULL THEN
            UPDATE memstate.facts f SET
                payload = p_payload, content = v_content, embedding = p_embedding,
                embedding_model = p_embedding_model, session_id = p_session_id,
                version = f.version + 1, commit_seq = seq, updated_at = now()
            WHERE f.fact_id = v_fid AND f.namespace = p_namespace AND f.type = p_type
              AND (p_expected_version IS NULL OR f.version = p_expected_version)
            RETURNING f.* INTO v_row;
            IF FOUND THEN
                v_op := 'update';
                EXIT;
            END IF;
            SELECT f.version, f.namespace, f.type INTO v_cur FROM memstate.facts f WHERE f.fact_id = v_fid;
            IF FOUND THEN
                IF v_cur.namespace <> p_namespace THEN
                    PERFORM memstate._fail('MSN01', format('fact %s is not in namespace %L', v_fid, p_namespace));
                ELSIF v_cur.type <> p_type THEN
                    PERFORM memstate._fail('MSC01', format('fact %s has type %L, not %L', v_fid, v_cur.type, p_type));
                ELSIF p_expected_version IS NOT NULL THEN
                    PERFORM memstate._fail('MSC01', format('fact %s is at version %s, expected %s',
                                                           v_fid, v_cur.version, p_expected_version));
                END IF;
                CONTINUE;  -- changed under us between UPDATE and SELECT: try again
            END IF;
            IF p_mode = 'update' THEN
                PERFORM memstate._fail('MSN01', format('no live fact %s', v_fid));
            END IF;
            IF p_fact_id IS NULL THEN
                v_fid := NULL;  -- the singleton holder vanished: look again
                CONTINUE;
            END IF;
            IF p_expected_version IS NOT NULL AND p_expected_version <> 0 THEN
                PERFORM memstate._fail('MSC01', format('fact %s is not live, expected version %s',
                                                       v_fid, p_expected_version));
            END IF;
            -- (re)create under a caller-chosen id: versions continue after its history
            SELECT max(v.version) INTO v_max FROM memstate.fact_versions v WHERE v.fact_id = v_fid;
            IF v_max IS NOT NULL AND (SELECT v.namespace FROM memstate.fact_versions v
                                      WHERE v.fact_id = v_fid LIMIT 1) <> p_namespace THEN
                PERFORM memstate._fail('MSC01', format('fact id %s belongs to another namespace', v_fid));
            END IF;
            INSERT INTO memstate.facts AS f
                (fact_id, namespace, type, session_id, payload, content, embedding, embedding_model,
                 version, commit_seq)
            VALUES (v_fid, p_namespace, p_type, p_session_id, p_payload, v_content, p_embedding,
                    p_embedding_model, coalesce(v_max, 0) + 1, seq)
            ON CONFLICT DO NOTHING
            RETURNING f.* INTO v_row;
            IF FOUND THEN
                v_op := 'put';
                EXIT;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM memstate.facts f WHERE f.fact_id = v_fid) THEN
                PERFORM memstate._fail('MSC01', format('singleton key %s = %L of type %L is held by another fact',
                                                       v_type.singleton_key, p_payload ->> v_type.singleton_key, p_type));
            END IF;
            CONTINUE;  -- someone created this id concurrently: update it
        END IF;
        INSERT INTO memstate.facts AS f
            (fact_id, namespace, type, session_id, payload, content, embedding, embedding_model,
             version, commit_seq)
        VALUES (gen_random_uuid(), p_namespace, p_type, p_session_id, p_payload, v_content, p_embedding,
                p_embedding_model, 1, seq)
        ON CONFLICT DO NOTHING
        RETURNING f.* INTO v_row;
        IF FOUND THEN
            v_op := 'put';
            EXIT;
        END IF;
        -- lost the race for a singleton key: the winner's fact is now an update target
    END LOOP;

    -- memstate._log_version(v_row, seq, v_op), written out (its call, once per write, is
    -- not inlined: it pins search_path); v_op is 'put' or 'update', so the vector goes in
    INSERT INTO memstate.fact_versions
        (fact_id, version, seq, namespace, type, session_id, op, payload, content, embedding, embedding_model)
    VALUES (v_row.fact_id, v_row.version, seq, v_row.namespace, v_row.type, v_row.session_id, v_op,
            v_row.payload, v_row.content, v_row.embedding, v_row.embedding_model);
    fact_id := v_row.fact_id;
    version := v_row.version;
    IF v_commit.keyed THEN
        UPDATE memstate.commits c SET result = coalesce(c.result, '[]'::jsonb) || to_jsonb(fact_id::text)
        WHERE c.seq = write_fact.seq;
    END IF;
END $$;

-- Many facts of one namespace in one commit (MemoryStore.commit_many): the same rules and
-- results as one memstate.write_fact call per element, in order, with mode 'put' and one
-- commit: the one open in this transaction for the namespace, else a new one (session
-- `p_session_id`, actor, reason, idempotency key), which stays open for the rest of the
-- transaction, as after memstate.begin_commit; `p_session_ids` are the facts' sessions.
-- Set-based when no element names a fact id and no singleton key appears twice: one
-- INSERT of the new facts, one UPDATE of the singleton holders, one INSERT of their
-- versions (so one outbox statement), instead of a function call and its statements per
-- fact. When a concurrent writer took a singleton key (or changed its holder) meanwhile,
-- that attempt is rolled back and made again (at most 20 times, then element by element
-- through write_fact). Returns one row per element: its position (1-based), fact id, new
-- version, the commit seq, and whether the commit was an idempotent replay (then nothing
-- was written, version is NULL and fact_id the replayed commit's id at that position).
CREATE OR REPLACE FUNCTION memstate.write_facts(
    p_namespace text, p_types text[], p_payloads jsonb[], p_contents text[],
    p_embeddings vector[], p_embedding_model text, p_session_ids text[] DEFAULT NULL,
    p_fact_ids uuid[] DEFAULT NULL, p_actor text DEFAULT NULL, p_reason text DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL, p_session_id text DEFAULT NULL)
RETURNS TABLE (ord int, fact_id uuid, version int, seq bigint, replayed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n      int := coalesce(pg_catalog.cardinality(p_types), 0);
    v_open   jsonb;
    v_seq    bigint;
    v_keyed  boolean;
    v_result jsonb;
    v_ids      uuid[];
    v_vers     int[];
    v_targets  uuid[];
    v_keys     text[];
    v_contents text[];
    v_added    int;
    v_set      boolean;
    v_done     boolean := false;
    v_try      int;
    v_t      record;
    v_i      int;
    v_w      record;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF coalesce(pg_catalog.cardinality(p_payloads), 0) <> v_n
       OR coalesce(pg_catalog.cardinality(p_contents), v_n) <> v_n
       OR coalesce(pg_catalog.cardinality(p_embeddings), 0) <> v_n
       OR coalesce(pg_catalog.cardinality(p_session_ids), v_n) <> v_n
       OR coalesce(pg_catalog.cardinality(p_fact_ids), v_n) <> v_n THEN
        PERFORM memstate._fail('MSV01', 'write_facts: the arrays must have one element per fact');
    END IF;
    IF p_embedding_model IS NULL OR pg_catalog.array_position(p_embeddings, NULL) IS NOT NULL THEN
        PERFORM memstate._fail('MSV01', 'embedding and embedding_model are required');
    END IF;
    v_open := nullif(current_setting('memstate.open_commits', true), '')::jsonb -> p_namespace;
    IF v_open IS NULL THEN
        SELECT o.seq, o.replayed, o.result INTO v_w
        FROM memstate.open_commit(p_namespace, p_session_id, p_actor, p_reason, p_idempotency_key) o;
        IF v_w.replayed THEN
            RETURN QUERY SELECT e.ordinality::int, (e.value #>> '{}')::uuid, NULL::int, v_w.seq, true
                         FROM jsonb_array_elements(coalesce(v_w.result, '[]')) WITH ORDINALITY e;
            RETURN;
        END IF;
        v_open := nullif(current_setting('memstate.open_commits', true), '')::jsonb -> p_namespace;
    END IF;
    v_seq := (v_open ->> 'seq')::bigint;
    v_keyed := (v_open ->> 'keyed')::boolean;

    -- Set-based unless an element names a fact id or a singleton key repeats.
    v_set := p_fact_ids IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p_fact_ids) x WHERE x IS NOT NULL);
    IF v_set THEN
        FOR v_t IN
            SELECT u.type, t.json_schema, t.singleton_key, t.text_field, t.type IS NOT NULL AS known,
                   count(*) AS n,
                   count(DISTINCT u.payload ->> t.singleton_key) AS keys
            FROM ROWS FROM (pg_catalog.unnest(p_types), pg_catalog.unnest(p_payloads)) AS u(type, payload)
            LEFT JOIN memstate.types t ON t.type = u.type
            GROUP BY u.type, t.type, t.json_schema, t.singleton_key, t.text_field
        LOOP
            IF v_t.singleton_key IS NOT NULL AND v_t.keys < v_t.n THEN
                v_set := false;  -- the same key twice: each write sees the one before it
            END IF;
        END LOOP;
    END IF;

    FOR v_try IN 1 .. CASE WHEN v_set THEN 20 ELSE 0 END LOOP
        BEGIN
            -- the checks of write_fact, for every element, before any write
            FOR v_t IN
                SELECT DISTINCT u.type FROM pg_catalog.unnest(p_types) AS u(type)
                WHERE NOT EXISTS (SELECT 1 FROM memstate.types t WHERE t.type = u.type)
            LOOP
                PERFORM memstate._unknown_type(v_t.type);
            END LOOP;
            PERFORM memstate.validate_payload(t.json_schema, u.payload)
            FROM ROWS FROM (pg_catalog.unnest(p_types), pg_catalog.unnest(p_payloads)) AS u(type, payload)
            LEFT JOIN memstate.types t ON t.type = u.type;
            SELECT pg_catalog.array_agg(coalesce(u.content, memstate.derive_content(t.text_field, u.payload)) ORDER BY u.ord),
                   pg_catalog.array_agg(CASE WHEN t.singleton_key IS NOT NULL THEN u.payload ->> t.singleton_key END ORDER BY u.ord),
                   pg_catalog.array_agg(f.fact_id ORDER BY u.ord),
                   pg_catalog.array_agg(coalesce(f.fact_id, pg_catalog.gen_random_uuid()) ORDER BY u.ord)
            INTO v_contents, v_keys, v_targets, v_ids
            FROM ROWS FROM (pg_catalog.unnest(p_types), pg_catalog.unnest(p_payloads), pg_catalog.unnest(p_contents)) WITH ORDINALITY AS u(type, payload, content, ord)
            LEFT JOIN memstate.types t ON t.type = u.type
            LEFT JOIN memstate.facts f
              ON t.singleton_key IS NOT NULL AND f.namespace = p_namespace AND f.type = u.type
             AND f.singleton_value = u.payload ->> t.singleton_key;
            v_vers := pg_catalog.array_fill(NULL::int, ARRAY[v_n]);
            -- the live holders of singleton keys: a new version each, locked in fact id
            -- order (and new keys inserted in key order), so that batches racing for the
            -- same keys wait for each other instead of deadlocking
            PERFORM 1 FROM memstate.facts f
            WHERE f.fact_id = ANY (v_targets) ORDER BY f.fact_id FOR UPDATE;
            FOR v_w IN
                UPDATE memstate.facts f SET
                    payload = p_payloads[u.ord], content = v_contents[u.ord], embedding = p_embeddings[u.ord],
                    embedding_model = p_embedding_model, session_id = p_session_ids[u.ord],
                    version = f.version + 1, commit_seq = v_seq, updated_at = now()
                FROM pg_catalog.unnest(v_targets) WITH ORDINALITY AS u(target, ord)
                WHERE u.target IS NOT NULL AND f.fact_id = u.target AND f.namespace = p_namespace
                  AND f.type = p_types[u.ord] AND f.singleton_value = v_keys[u.ord]
                RETURNING u.ord, f.version
            LOOP
                v_vers[v_w.ord] := v_w.version;
            END LOOP;
            -- the new facts
            INSERT INTO memstate.facts AS f
                (fact_id, namespace, type, session_id, payload, content, embedding, embedding_model,
                 version, commit_seq)
            SELECT v_ids[u.ord], p_namespace, p_types[u.ord], p_session_ids[u.ord], p_payloads[u.ord],
                   v_contents[u.ord], p_embeddings[u.ord], p_embedding_model, 1, v_seq
            FROM pg_catalog.generate_series(1, v_n) AS u(ord)
            WHERE v_targets[u.ord] IS NULL
            ORDER BY p_types[u.ord], v_keys[u.ord], u.ord
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS v_added = ROW_COUNT;
            IF v_added < (SELECT count(*) FROM pg_catalog.unnest(v_targets) x WHERE x IS NULL)
               OR (SELECT count(*) FROM pg_catalog.unnest(v_vers) x WHERE x IS NOT NULL)
                  < (SELECT count(*) FROM pg_catalog.unnest(v_targets) x WHERE x IS NOT NULL) THEN
                -- a holder went, or a key was taken, concurrently: undo, look again
                RAISE EXCEPTION USING ERRCODE = 'MSR01', MESSAGE = 'write_facts: retry one by one';
            END IF;
            v_vers := ARRAY(SELECT coalesce(v_vers[u.ord], 1) FROM pg_catalog.generate_series(1, v_n) AS u(ord)
                            ORDER BY u.ord);
            INSERT INTO memstate.fact_versions
                (fact_id, version, seq, namespace, type, session_id, op, payload, content, embedding,
                 embedding_model)
            SELECT v_ids[u.ord], v_vers[u.ord], v_seq, p_namespace, p_types[u.ord], p_session_ids[u.ord],
                   CASE WHEN v_targets[u.ord] IS NULL THEN 'put' ELSE 'update' END, p_payloads[u.ord],
                   v_contents[u.ord], p_embeddings[u.ord], p_embedding_model
            FROM pg_catalog.generate_series(1, v_n) AS u(ord)
            ORDER BY u.ord;
            v_done := true;
            EXIT;
        EXCEPTION WHEN SQLSTATE 'MSR01' THEN
            NULL;  -- rolled back to the start of this attempt
        END;
    END LOOP;

    IF NOT v_done THEN  -- not set-based, or still racing after 20 attempts
        v_ids := '{}';
        v_vers := '{}';
        FOR v_i IN 1 .. v_n LOOP
            SELECT w.fact_id, w.version INTO v_w
            FROM memstate.write_fact(p_namespace, p_types[v_i], p_payloads[v_i], p_contents[v_i],
                                     p_embeddings[v_i], p_embedding_model, p_session_ids[v_i],
                                     p_fact_ids[v_i], NULL, p_actor, p_reason, NULL, 'put') w;
            v_ids := v_ids || v_w.fact_id;
            v_vers := v_vers || v_w.version;
        END LOOP;
    ELSIF v_keyed THEN
        UPDATE memstate.commits c SET result = coalesce(c.result, '[]'::jsonb) || pg_catalog.to_jsonb(v_ids::text[])
        WHERE c.seq = v_seq;
    END IF;
    RETURN QUERY SELECT x.ord::int, x.id, x.ver, v_seq, false
                 FROM ROWS FROM (pg_catalog.unnest(v_ids), pg_catalog.unnest(v_vers)) WITH ORDINALITY AS x(id, ver, ord);
END $$;

-- DESIGN.md's entry point for SQL callers: create or update a fact, returns its id.
CREATE OR REPLACE FUNCTION memstate.commit_fact(
    namespace text, type text, payload jsonb, content text, embedding vector,
    embedding_model text, session_id text DEFAULT NULL, fact_id uuid DEFAULT NULL,
    expected_version int DEFAULT NULL, actor text DEFAULT NULL, reason text DEFAULT NULL,
    idempotency_key text DEFAULT NULL)
RETURNS uuid LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT w.fact_id FROM memstate.write_fact(
        namespace, type, payload, content, embedding, embedding_model, session_id, fact_id,
        expected_version, actor, reason, idempotency_key, 'put') w
$$;

-- Deletes a live fact (history keeps every version). Returns the commit seq.
CREATE OR REPLACE FUNCTION memstate.delete_fact(
    fact_id uuid, expected_version int DEFAULT NULL, actor text DEFAULT NULL,
    reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_fact_id          ALIAS FOR $1;
    p_expected_version ALIAS FOR $2;
    p_actor            ALIAS FOR $3;
    p_reason           ALIAS FOR $4;
    p_idempotency_key  ALIAS FOR $5;
    v_ns     text;
    v_commit record;
    v_row    memstate.facts;
BEGIN
    SELECT f.namespace INTO v_ns FROM memstate.facts f WHERE f.fact_id = p_fact_id;
    IF NOT FOUND THEN
        PERFORM memstate._fail('MSN01', format('no live fact %s', p_fact_id));
    END IF;
    SELECT * INTO v_commit FROM memstate._commit_for(v_ns, NULL, p_actor, p_reason, p_idempotency_key);
    IF v_commit.replayed THEN
        RETURN v_commit.seq;
    END IF;
    UPDATE memstate.facts f SET deleted_by = v_commit.seq  -- facts_delete removes the row
    WHERE f.fact_id = p_fact_id AND (p_expected_version IS NULL OR f.version = p_expected_version)
    RETURNING f.* INTO v_row;
    IF NOT FOUND THEN
        IF p_expected_version IS NOT NULL AND EXISTS (SELECT 1 FROM memstate.facts f WHERE f.fact_id = p_fact_id) THEN
            PERFORM memstate._fail('MSC01', format('fact %s is not at version %s', p_fact_id, p_expected_version));
        END IF;
        PERFORM memstate._fail('MSN01', format('no live fact %s (deleted concurrently)', p_fact_id));
    END IF;
    v_row.version := v_row.version + 1;
    PERFORM memstate._log_version(v_row, v_commit.seq, 'delete');
    IF v_commit.keyed THEN
        UPDATE memstate.commits c SET result = coalesce(c.result, '[]'::jsonb) || to_jsonb(p_fact_id::text)
        WHERE c.seq = v_commit.seq;
    END IF;
    RETURN v_commit.seq;
END $$;

-- ---------------------------------------------------------------------------------------
-- Undo: rollback, revert, sessions
-- ---------------------------------------------------------------------------------------

-- The vector of version `p_version` of a fact: the version log stores a vector only when
-- it changed (see memstate._versions_rules), so this is the embedding of the newest version
-- at or before it that carries one. NULL: no such version (or not visible to the caller).
CREATE OR REPLACE FUNCTION memstate.version_embedding(p_fact_id uuid, p_version int)
RETURNS vector LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.embedding FROM memstate.fact_versions v
    WHERE v.fact_id = p_fact_id AND v.version <= p_version AND v.embedding IS NOT NULL
    ORDER BY v.version DESC LIMIT 1
$$;

-- Writes, as commit `p_seq`, the state each fact touched by the commits `p_targets` had
-- just before the first of them. Refuses (MSC01) when a later counted commit that is still
-- in effect changed such a fact: undoing would silently throw that change away.
CREATE OR REPLACE FUNCTION memstate._restore(p_seq bigint, p_targets bigint[])
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_f       record;
    v_prev    memstate.fact_versions;
    v_cur     memstate.facts;
    v_blocker bigint;
    v_max     int;
    v_n       int := 0;
BEGIN
    FOR v_f IN
        SELECT v.fact_id, min(v.version) AS first_version, max(v.version) AS last_version
        FROM memstate.fact_versions v WHERE v.seq = ANY (p_targets)
        GROUP BY v.fact_id ORDER BY v.fact_id
    LOOP
        SELECT * INTO v_cur FROM memstate.facts f WHERE f.fact_id = v_f.fact_id FOR UPDATE;
        SELECT c.seq INTO v_blocker
        FROM memstate.fact_versions v JOIN memstate.commits c ON c.seq = v.seq
        WHERE v.fact_id = v_f.fact_id AND v.version > v_f.last_version
          AND NOT (v.seq = ANY (p_targets)) AND v.seq <> p_seq
          AND c.kind IN ('commit', 'promote', 'discard') AND c.undone_by IS NULL
        LIMIT 1;
        IF v_blocker IS NOT NULL THEN
            PERFORM memstate._fail('MSC01',
                format('fact %s was changed again by commit %s, which is still in effect', v_f.fact_id, v_blocker),
                'undo or revert that commit first');
        END IF;
        SELECT * INTO v_prev FROM memstate.fact_versions v
        WHERE v.fact_id = v_f.fact_id AND v.version = v_f.first_version - 1;
        IF v_prev.fact_id IS NOT NULL AND v_prev.op <> 'delete' AND v_prev.embedding IS NULL THEN
            v_prev.embedding := memstate.version_embedding(v_prev.fact_id, v_prev.version);
        END IF;

        IF v_prev.fact_id IS NULL OR v_prev.op = 'delete' THEN
            IF v_cur.fact_id IS NOT NULL THEN          -- did not exist before: delete it
                UPDATE memstate.facts f SET deleted_by = p_seq WHERE f.fact_id = v_cur.fact_id;  -- facts_delete
                v_cur.version := v_cur.version + 1;
                PERFORM memstate._log_version(v_cur, p_seq, 'delete');
                v_n := v_n + 1;
            END IF;
        ELSIF v_cur.fact_id IS NOT NULL THEN           -- live: bring back the earlier state
            IF (v_cur.payload, v_cur.content, v_cur.embedding::float4[], v_cur.embedding_model, v_cur.session_id)
               IS NOT DISTINCT FROM
               (v_prev.payload, v_prev.content, v_prev.embedding::float4[], v_prev.embedding_model, v_prev.session_id) THEN
                CONTINUE;
            END IF;
            UPDATE memstate.facts f SET
                payload = v_prev.payload, content = v_prev.content, embedding = v_prev.embedding,
                embedding_model = v_prev.embedding_model, session_id = v_prev.session_id,
                version = f.version + 1, commit_seq = p_seq, updated_at = now()
            WHERE f.fact_id = v_cur.fact_id
            RETURNING f.* INTO v_cur;
            PERFORM memstate._log_version(v_cur, p_seq, 'update');
            v_n := v_n + 1;
        ELSE                                           -- deleted since: re-create it
            SELECT max(v.version) INTO v_max FROM memstate.fact_versions v WHERE v.fact_id = v_f.fact_id;
            INSERT INTO memstate.facts AS f
                (fact_id, namespace, type, session_id, payload, content, embedding, embedding_model,
                 version, commit_seq)
            VALUES (v_prev.fact_id, v_prev.namespace, v_prev.type, v_prev.session_id, v_prev.payload,
                    v_prev.content, v_prev.embedding, v_prev.embedding_model, v_max + 1, p_seq)
            ON CONFLICT DO NOTHING
            RETURNING f.* INTO v_cur;
            IF NOT FOUND THEN  -- re-created (or its singleton key taken) by a concurrent commit
                PERFORM memstate._fail('MSC01',
                    format('fact %s was written by a concurrent commit while this one restored it', v_f.fact_id),
                    'try again');
            END IF;
            PERFORM memstate._log_version(v_cur, p_seq, 'put');
            v_n := v_n + 1;
        END IF;
    END LOOP;
    RETURN v_n;
END $$;

-- Undo: the last `p_steps` counted commits of the scope still in effect are undone by one
-- new commit (kind 'rollback'). Rollback and revert commits are not counted, so calling
-- rollback(ns, 1) twice goes back two steps. Returns the new commit's seq.
CREATE OR REPLACE FUNCTION memstate.rollback(
    namespace text, steps int DEFAULT 1, session_id text DEFAULT NULL,
    actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_namespace  ALIAS FOR $1;
    p_steps      ALIAS FOR $2;
    p_session_id ALIAS FOR $3;
    p_actor      ALIAS FOR $4;
    p_reason     ALIAS FOR $5;
    v_targets bigint[];
    v_seq     bigint;
BEGIN
    IF p_steps IS NULL OR p_steps < 1 THEN
        PERFORM memstate._fail('MSV01', format('steps must be at least 1, not %s', p_steps));
    END IF;
    SELECT array_agg(t.seq ORDER BY t.seq) INTO v_targets FROM (
        SELECT c.seq FROM memstate.commits c
        WHERE c.namespace = p_namespace AND c.undone_by IS NULL
          AND c.kind IN ('commit', 'promote', 'discard')
          AND (p_session_id IS NULL OR c.session_id = p_session_id)
        ORDER BY c.seq DESC LIMIT p_steps
        FOR UPDATE
    ) t;
    IF v_targets IS NULL THEN
        PERFORM memstate._fail('MSN01', format('nothing to roll back in namespace %L%s', p_namespace,
                               CASE WHEN p_session_id IS NULL THEN '' ELSE format(', session %L', p_session_id) END));
    END IF;
    PERFORM memstate._check_horizon(p_namespace, v_targets[1] - 1, 'rollback');  -- compacted: MSH01
    SELECT c.seq INTO v_seq FROM memstate._new_commit(p_namespace, p_session_id, p_actor, p_reason, 'rollback', NULL) c;
    UPDATE memstate.commits c SET undoes = v_targets WHERE c.seq = v_seq;
    PERFORM memstate._restore(v_seq, v_targets);
    UPDATE memstate.commits c SET undone_by = v_seq WHERE c.seq = ANY (v_targets);
    PERFORM memstate._check_horizon(p_namespace, v_targets[1] - 1, 'rollback');  -- compacted meanwhile
    RETURN v_seq;
END $$;

-- Undoes one given commit. Reverting a rollback or revert is redo: the commits it undid are
-- back in effect. Returns the new commit's seq.
CREATE OR REPLACE FUNCTION memstate.revert(
    seq bigint, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_seq    ALIAS FOR $1;
    p_actor  ALIAS FOR $2;
    p_reason ALIAS FOR $3;
    v_c   memstate.commits;
    v_seq bigint;
BEGIN
    SELECT * INTO v_c FROM memstate.commits c WHERE c.seq = p_seq FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM memstate._fail('MSN01', format('no commit %s', p_seq));
    END IF;
    IF v_c.undone_by IS NOT NULL THEN
        PERFORM memstate._fail('MSC01', format('commit %s is already undone by commit %s', p_seq, v_c.undone_by));
    END IF;
    PERFORM memstate._check_horizon(v_c.namespace, p_seq - 1, 'revert');  -- compacted: MSH01
    SELECT c.seq INTO v_seq FROM memstate._new_commit(v_c.namespace, v_c.session_id, p_actor, p_reason, 'revert', NULL) c;
    UPDATE memstate.commits c SET undoes = ARRAY[p_seq] WHERE c.seq = v_seq;
    PERFORM memstate._restore(v_seq, ARRAY[p_seq]);
    PERFORM memstate._check_horizon(v_c.namespace, p_seq - 1, 'revert');  -- compacted meanwhile
    UPDATE memstate.commits c SET undone_by = v_seq WHERE c.seq = p_seq;
    IF v_c.kind IN ('rollback', 'revert') THEN
        UPDATE memstate.commits c SET undone_by = NULL WHERE c.seq = ANY (v_c.undoes) AND c.undone_by = p_seq;
    END IF;
    RETURN v_seq;
END $$;

-- Working memory -> long-term memory: the session's live facts lose their session_id.
-- Returns the commit seq, or NULL when the session holds no live fact.
CREATE OR REPLACE FUNCTION memstate.promote_session(
    namespace text, session_id text, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_namespace  ALIAS FOR $1;
    p_session_id ALIAS FOR $2;
    p_actor      ALIAS FOR $3;
    p_reason     ALIAS FOR $4;
    v_seq bigint;
    v_row memstate.facts;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM memstate.facts f WHERE f.namespace = p_namespace AND f.session_id = p_session_id) THEN
        RETURN NULL;
    END IF;
    SELECT c.seq INTO v_seq FROM memstate._new_commit(p_namespace, p_session_id, p_actor, p_reason, 'promote', NULL) c;
    FOR v_row IN
        UPDATE memstate.facts f SET session_id = NULL, version = f.version + 1, commit_seq = v_seq, updated_at = now()
        WHERE f.namespace = p_namespace AND f.session_id = p_session_id
        RETURNING f.*
    LOOP
        PERFORM memstate._log_version(v_row, v_seq, 'update');
    END LOOP;
    RETURN v_seq;
END $$;

-- Drops a session's working memory: its live facts are deleted (history keeps them).
CREATE OR REPLACE FUNCTION memstate.discard_session(
    namespace text, session_id text, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_namespace  ALIAS FOR $1;
    p_session_id ALIAS FOR $2;
    p_actor      ALIAS FOR $3;
    p_reason     ALIAS FOR $4;
    v_seq bigint;
    v_row memstate.facts;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM memstate.facts f WHERE f.namespace = p_namespace AND f.session_id = p_session_id) THEN
        RETURN NULL;
    END IF;
    SELECT c.seq INTO v_seq FROM memstate._new_commit(p_namespace, p_session_id, p_actor, p_reason, 'discard', NULL) c;
    FOR v_row IN
        UPDATE memstate.facts f SET deleted_by = v_seq  -- facts_delete removes the rows
        WHERE f.namespace = p_namespace AND f.session_id = p_session_id
        RETURNING f.*
    LOOP
        v_row.version := v_row.version + 1;
        PERFORM memstate._log_version(v_row, v_seq, 'delete');
    END LOOP;
    RETURN v_seq;
END $$;

-- ---------------------------------------------------------------------------------------
-- Re-embedding: switching a namespace to another embedding model
-- ---------------------------------------------------------------------------------------

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

-- ---------------------------------------------------------------------------------------
-- Reads
-- ---------------------------------------------------------------------------------------

-- With the caller's rights (security_invoker, PostgreSQL 15+), so Row Level Security
-- (sql/rls.sql) applies through the view too. ONE statement: `CREATE OR REPLACE VIEW` resets
-- the view's options, so a separate `ALTER VIEW ... SET (security_invoker = true)` would
-- leave a window in which the view showed every namespace to every reader.
DO $view$
DECLARE
    v_path text := pg_catalog.current_setting('search_path');
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    EXECUTE 'CREATE OR REPLACE VIEW memstate.current_facts'
         || CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 150000
                 THEN ' WITH (security_invoker = true)' ELSE '' END
         || ' AS SELECT fact_id, namespace, type, session_id, payload, content, embedding_model,'
            '          version, commit_seq, created_at, updated_at'
            ' FROM memstate.facts';
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
$view$;

-- How much of a mirror the current role may know: 'all' when it may touch every namespace
-- the mirror covers (and always where RLS does not bind it), 'some' when it may touch one of
-- them (or the mirror covers every namespace), NULL when none. Uses the helpers of
-- sql/rls.sql when installed (resolved at run time); without them there is no boundary.
CREATE OR REPLACE FUNCTION memstate._mirror_access(p_namespaces text[])
RETURNS text LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.to_regprocedure('memstate.sees_all(text[])') IS NULL
       OR pg_catalog.to_regprocedure('memstate.may_access(text)') IS NULL THEN
        RETURN 'all';
    END IF;
    IF memstate.sees_all(p_namespaces) THEN
        RETURN 'all';
    END IF;
    IF p_namespaces IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.unnest(p_namespaces) AS n(ns)
                                       WHERE memstate.may_access(n.ns)) THEN
        RETURN 'some';
    END IF;
    RETURN NULL;
END $$;

-- The mirrors as the current role may know them (memstate.status() reads this): those that
-- cover a namespace it may touch; their namespace list and last reconciliation report (counts
-- over every namespace they cover) only when it may touch all of them, else NULL. Runs with
-- its owner's rights on memstate.mirrors (not security_invoker: tenants hold no privilege on
-- the registry, whose rows name other tenants' namespaces); the functions it calls run as
-- the caller, so the filter is the caller's. ONE statement (see current_facts).
CREATE OR REPLACE VIEW memstate.mirror_info WITH (security_barrier = true) AS
    SELECT m.name, m.kind, m.enabled,
           CASE WHEN a.access = 'all' THEN m.namespaces END AS namespaces,
           m.last_synced_seq, m.last_synced_at, m.last_reconciled_at,
           CASE WHEN a.access = 'all' THEN m.last_reconcile END AS last_reconcile,
           m.max_pending
    FROM memstate.mirrors m
    CROSS JOIN LATERAL (SELECT memstate._mirror_access(m.namespaces) AS access) a
    WHERE a.access IS NOT NULL;

-- The cosine-distance expression of memstate.register_model's partial HNSW index for a
-- model of `p_dim` dimensions (so a query written with it can use the index), comparing
-- f.embedding with the query parameter `p_param` (e.g. '$1'). No index: exact distance.
CREATE OR REPLACE FUNCTION memstate._distance_sql(p_dim int, p_index text, p_param text)
RETURNS text LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_index IS NULL THEN pg_catalog.format('f.embedding OPERATOR(%I.<=>) %s', s.nspname, p_param)
                WHEN p_dim <= 2000 THEN pg_catalog.format(
                    'f.embedding::%3$I.vector(%1$s) OPERATOR(%3$I.<=>) %2$s::%3$I.vector(%1$s)', p_dim, p_param, s.nspname)
                ELSE pg_catalog.format(
                    'f.embedding::%3$I.halfvec(%1$s) OPERATOR(%3$I.<=>) %2$s::%3$I.halfvec(%1$s)', p_dim, p_param, s.nspname)
           END
    FROM (SELECT memstate._vector_schema() AS nspname) s
$$;

-- The model rule of a search: a namespace switched by a re-embed searches only its active
-- model (MSV01 for any other). True otherwise. memstate.search calls it, and so does the
-- statement the Python stores run directly (memstate_pg/_core/search_sql.py), as a one-time
-- filter.
CREATE OR REPLACE FUNCTION memstate._search_check(p_namespace text, p_model text)
RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_active text := memstate._active_model(p_namespace);
BEGIN
    IF v_active IS NOT NULL AND p_model IS DISTINCT FROM v_active THEN
        PERFORM memstate._fail('MSV01', format(
            'namespace %L uses embedding model %L (switched by a re-embed), not %L',
            p_namespace, v_active, p_model),
            format('search with an embedder of model %L (a search never mixes models)', v_active));
    END IF;
    RETURN true;
END $$;

-- Nearest facts by cosine similarity (1 = same direction; higher is better), compared only
-- with vectors of the query's model (given, else the namespace's active model, else the one
-- registered model of that dimension); a namespace switched by a re-embed refuses any other.
-- Filters go into the same SQL: namespace, payload containment (@>), type, session.
-- Two plans: the GIN/btree indexes first collect at most memstate.config 'search_exact_max'
-- candidates (default 2000) of the namespace and filters, and those are sorted by true
-- distance (exact: a selective filter or a small namespace never cuts recall); when more
-- rows match, the model's HNSW index is walked with pgvector's iterative scan (relaxed
-- order, re-sorted), so the filter still yields k rows.
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
    v_exact text;
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
    PERFORM memstate._search_check(p_namespace, v_model);
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
    -- the exact plan's distance: the plain operator (the same value as the index's
    -- vector(dim) expression, without a cast per row); above 2000 dimensions the index's
    -- halfvec expression, so a score never depends on the plan
    v_exact := CASE WHEN v_index IS NOT NULL AND v_dim > 2000 THEN v_expr
                    ELSE memstate._distance_sql(v_dim, NULL, '$1') END;
    v_where := format('f.embedding_model = %L AND f.namespace = $2 %s %s %s', v_model,
        CASE WHEN p_filter IS NOT NULL THEN 'AND f.payload @> $3' ELSE '' END,
        CASE WHEN p_type IS NOT NULL THEN 'AND f.type = $4' ELSE '' END,
        CASE WHEN p_session_id IS NOT NULL THEN 'AND f.session_id = $5' ELSE '' END);

    -- At most `v_max` candidates (a selective filter, or a small namespace): the GIN /
    -- btree indexes find them and they are sorted by true distance (exact: recall 1.0).
    -- One statement: the candidates' ctids, ids and distances are materialised (capped at
    -- v_max + 1; only the k nearest are read again, for their columns), and the exact
    -- sort runs only if the cap was not hit (a one-time filter), so the planner
    -- cannot put the filter on top of HNSW. Without a payload filter or session the
    -- candidates come in the (namespace, type) btree's order, so a generic plan (the
    -- stores prepare this statement, memstate_pg/_core/search_sql.py) walks that index.
    RETURN QUERY EXECUTE format(
        'WITH c AS MATERIALIZED (SELECT f.ctid AS t, f.fact_id AS id, %1$s AS d '
        '                        FROM memstate.facts f WHERE %2$s%5$s LIMIT %3$s) '
        'SELECT f.fact_id, 1 - (%1$s), f.type, f.session_id, f.payload, f.content, '
        '       f.embedding_model, f.version, f.commit_seq, f.created_at, f.updated_at '
        'FROM memstate.facts f '
        'WHERE (SELECT count(*) FROM c) <= %4$s '
        '  AND f.ctid = ANY (ARRAY(SELECT c.t FROM c ORDER BY c.d, c.id LIMIT $6)) '
        'ORDER BY %1$s, f.fact_id LIMIT $6', v_exact, v_where, v_max + 1, v_max,
        CASE WHEN p_filter IS NULL AND p_session_id IS NULL
             THEN ' ORDER BY f.namespace, f.type' ELSE '' END)
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
    RETURN QUERY EXECUTE format(
        'SELECT s.fact_id, 1 - s.distance, s.type, s.session_id, s.payload, s.content, s.embedding_model, '
        '       s.version, s.commit_seq, s.created_at, s.updated_at '
        'FROM (SELECT f.*, %1$s AS distance FROM memstate.facts f WHERE %2$s ORDER BY %1$s LIMIT $6) s '
        'ORDER BY s.distance, s.fact_id', v_expr, v_where)
    USING p_query, p_namespace, p_filter, p_type, p_session_id, p_k;
END $$;

-- Every version of one fact, oldest first, with the commit that wrote it.
CREATE OR REPLACE FUNCTION memstate.history(fact_id uuid)
RETURNS TABLE (version int, seq bigint, op text, kind text, namespace text, type text,
               session_id text, payload jsonb, content text, embedding_model text, actor text,
               reason text, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.version, v.seq, v.op, c.kind, v.namespace, v.type, v.session_id, v.payload,
           v.content, v.embedding_model, c.actor, c.reason, v.created_at
    FROM memstate.fact_versions v JOIN memstate.commits c ON c.seq = v.seq
    WHERE v.fact_id = $1
    ORDER BY v.version
$$;

-- The live facts of a namespace as they stood right after commit `p_seq`.
CREATE OR REPLACE FUNCTION memstate.as_of(p_namespace text, p_seq bigint)
RETURNS TABLE (fact_id uuid, namespace text, type text, session_id text, payload jsonb, content text,
               embedding_model text, version int, commit_seq bigint, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT memstate._check_horizon(p_namespace, p_seq, 'as_of');  -- compacted history: MSH01
    SELECT s.fact_id, s.namespace, s.type, s.session_id, s.payload, s.content, s.embedding_model,
           s.version, s.seq, s.created_at
    FROM (SELECT DISTINCT ON (v.fact_id) v.*
          FROM memstate.fact_versions v
          WHERE v.namespace = p_namespace AND v.seq <= p_seq
          ORDER BY v.fact_id, v.version DESC) s
    WHERE s.op <> 'delete'
    ORDER BY s.fact_id
$$;

-- The last commit of a namespace made at or before a point in time (NULL: none yet).
CREATE OR REPLACE FUNCTION memstate.seq_at(p_namespace text, p_at timestamptz)
RETURNS bigint LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT max(c.seq) FROM memstate.commits c WHERE c.namespace = p_namespace AND c.created_at <= p_at
$$;

-- ---------------------------------------------------------------------------------------
-- Retention: compaction of the version log (memstate-pg compact, MemoryStore.compact)
-- ---------------------------------------------------------------------------------------
-- For long-running agents. A compaction with window start T (now() - older_than) and
-- keep N gives each namespace in scope the horizon H = its newest commit created before T
-- (memstate.compactions; a horizon only grows) and then, batch by batch, each batch its own
-- short transaction (writers keep writing: only old rows nobody else writes are touched):
--   * of a fact whose last version is a delete at or before H (deleted before the window),
--     every version but that tombstone (which keeps the fact id in its namespace and the
--     version numbering going);
--   * of every other fact, the versions at or before H that are neither among its N newest
--     nor its newest at or before H (the state as_of(H) reads);
--   * before deleting, the vector is put on each kept version whose vector was only carried
--     by a removed one (version rows store a vector only when it changed: the effective
--     vector of a version is that of its newest version at or below it that has one);
--   * then the commits at or before H that no longer have any version (their idempotency
--     keys go with them).
-- So as_of(seq >= H), rollback and revert of commits after H, and current state are exactly
-- as before; earlier points raise MSH01 (memstate._check_horizon). Owner-only: SECURITY
-- DEFINER, EXECUTE revoked from PUBLIC (see memstate._append_only for the path they use).

-- The horizon a compaction with window start `p_before` gives each namespace in scope: its
-- newest commit created before `p_before` (namespaces without one are not in scope).
CREATE OR REPLACE FUNCTION memstate._compact_targets(p_namespace text, p_before timestamptz)
RETURNS TABLE (namespace text, horizon_seq bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.namespace, pg_catalog.max(c.seq)
    FROM memstate.commits c
    WHERE c.created_at < p_before AND (p_namespace IS NULL OR c.namespace = p_namespace)
    GROUP BY c.namespace
$$;

-- The versions of up to `p_limit` facts with ids after `p_after` in the namespaces `p_ns`
-- (horizons `p_hz`), each with whether compaction removes it (`doomed`) and, for a kept
-- version whose effective vector is carried by a removed one, that version (`vector_from`).
CREATE OR REPLACE FUNCTION memstate._compact_classify(
    p_ns text[], p_hz bigint[], p_keep int, p_after uuid, p_limit int)
RETURNS TABLE (fact_id uuid, version int, seq bigint, namespace text, doomed boolean, vector_from int)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH h AS (
        SELECT u.namespace, u.horizon_seq FROM ROWS FROM (pg_catalog.unnest(p_ns), pg_catalog.unnest(p_hz)) AS u(namespace, horizon_seq)),
    ids AS (
        SELECT DISTINCT v.fact_id FROM memstate.fact_versions v
        WHERE v.fact_id > p_after AND v.namespace = ANY (p_ns)
        ORDER BY v.fact_id LIMIT p_limit),
    w AS (
        SELECT v.fact_id, v.version, v.seq, v.namespace, v.embedding IS NOT NULL AS has_vector,
               h.horizon_seq,
               pg_catalog.row_number() OVER newest AS rn,
               pg_catalog.first_value(v.op) OVER newest AS last_op,
               pg_catalog.first_value(v.seq) OVER newest AS last_seq,
               pg_catalog.max(v.version) FILTER (WHERE v.seq <= h.horizon_seq)
                   OVER (PARTITION BY v.fact_id) AS base,
               pg_catalog.max(v.version) FILTER (WHERE v.embedding IS NOT NULL)
                   OVER (PARTITION BY v.fact_id ORDER BY v.version
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS vector_source
        FROM ids
        JOIN memstate.fact_versions v ON v.fact_id = ids.fact_id
        JOIN h ON h.namespace = v.namespace
        WINDOW newest AS (PARTITION BY v.fact_id ORDER BY v.version DESC)),
    d AS (
        SELECT w.*,
               w.seq <= w.horizon_seq AND CASE
                   WHEN w.last_op = 'delete' AND w.last_seq <= w.horizon_seq THEN w.rn > 1
                   ELSE w.rn > p_keep AND w.version < w.base END AS doomed
        FROM w)
    SELECT d.fact_id, d.version, d.seq, d.namespace, d.doomed,
           CASE WHEN NOT d.doomed AND NOT d.has_vector AND s.doomed
                     AND NOT EXISTS (SELECT 1 FROM d k  -- (the lowest kept one above it gets it)
                                     WHERE k.fact_id = d.fact_id AND NOT k.doomed
                                       AND k.version > d.vector_source AND k.version < d.version)
                THEN d.vector_source END
    FROM d
    LEFT JOIN d s ON s.fact_id = d.fact_id AND s.version = d.vector_source
$$;

-- What a compaction would do, per namespace in scope, without changing anything (dry run):
-- its horizon (the recorded one when later), the facts and versions there, and how many
-- versions and commits would go.
CREATE OR REPLACE FUNCTION memstate.compact_plan(p_namespace text, p_keep int, p_before timestamptz)
RETURNS TABLE (namespace text, horizon_seq bigint, facts bigint, versions bigint,
               versions_deleted bigint, commits_deleted bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ns text[];
    v_hz bigint[];
BEGIN
    IF p_keep IS NULL OR p_keep < 1 THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('keep_versions must be at least 1, not %s', p_keep));
    END IF;
    SELECT pg_catalog.array_agg(t.namespace), pg_catalog.array_agg(GREATEST(t.horizon_seq, c.horizon_seq))
    INTO v_ns, v_hz
    FROM memstate._compact_targets(p_namespace, p_before) t
    LEFT JOIN memstate.compactions c ON c.namespace = t.namespace;
    IF v_ns IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH k AS MATERIALIZED (
        SELECT * FROM memstate._compact_classify(v_ns, v_hz, p_keep,
                                                 '00000000-0000-0000-0000-000000000000'::uuid,
                                                 2147483647)),
    h AS (SELECT u.namespace, u.horizon_seq FROM ROWS FROM (pg_catalog.unnest(v_ns), pg_catalog.unnest(v_hz)) AS u(namespace, horizon_seq))
    SELECT h.namespace, h.horizon_seq,
           (SELECT pg_catalog.count(DISTINCT k.fact_id) FROM k WHERE k.namespace = h.namespace),
           (SELECT pg_catalog.count(*) FROM k WHERE k.namespace = h.namespace),
           (SELECT pg_catalog.count(*) FROM k WHERE k.namespace = h.namespace AND k.doomed),
           (SELECT pg_catalog.count(*) FROM memstate.commits c
            WHERE c.namespace = h.namespace AND c.seq <= h.horizon_seq
              AND NOT EXISTS (SELECT 1 FROM k WHERE k.seq = c.seq AND NOT k.doomed))
    FROM h ORDER BY h.namespace;
END $$;

-- Starts a compaction: records the horizon of each namespace in scope (memstate.compactions;
-- a horizon only grows), in its own transaction before anything is removed, so an as_of or
-- an undo that could need what goes is refused from then on. Returns the horizons.
CREATE OR REPLACE FUNCTION memstate.compact_begin(p_namespace text, p_keep int, p_before timestamptz)
RETURNS TABLE (namespace text, horizon_seq bigint, horizon_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_keep IS NULL OR p_keep < 1 THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('keep_versions must be at least 1, not %s', p_keep));
    END IF;
    IF p_before IS NULL OR p_before > pg_catalog.now() THEN
        PERFORM memstate._fail('MSV01', 'the window must start in the past (older_than > 0)');
    END IF;
    RETURN QUERY
    INSERT INTO memstate.compactions AS c (namespace, horizon_seq, horizon_at, keep_versions)
    SELECT t.namespace, t.horizon_seq, p_before, p_keep FROM memstate._compact_targets(p_namespace, p_before) t
    ON CONFLICT ON CONSTRAINT compactions_pkey DO UPDATE SET
        horizon_seq = GREATEST(c.horizon_seq, excluded.horizon_seq),
        horizon_at = CASE WHEN excluded.horizon_seq > c.horizon_seq THEN excluded.horizon_at ELSE c.horizon_at END,
        keep_versions = excluded.keep_versions, started_at = pg_catalog.now(), finished_at = NULL
    RETURNING c.namespace, c.horizon_seq, c.horizon_at;
END $$;

-- One batch of a compaction's version phase, in the caller's (short) transaction: the facts
-- with ids after `p_after` (up to `p_limit`) in the recorded namespaces in scope. Returns
-- the last fact id of the batch (NULL: none left), how many facts it covered, the versions
-- it removed and the vectors it materialised.
CREATE OR REPLACE FUNCTION memstate.compact_versions(
    p_namespace text, p_keep int, p_after uuid, p_limit int,
    OUT last_fact uuid, OUT facts int, OUT versions_deleted int, OUT vectors_materialised int)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ns   text[];
    v_hz   bigint[];
    v_prev text;
BEGIN
    IF p_keep IS NULL OR p_keep < 1 THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('keep_versions must be at least 1, not %s', p_keep));
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000000 THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('batch size must be 1 to 1000000, not %s', p_limit));
    END IF;
    SELECT pg_catalog.array_agg(c.namespace), pg_catalog.array_agg(c.horizon_seq) INTO v_ns, v_hz
    FROM memstate.compactions c WHERE p_namespace IS NULL OR c.namespace = p_namespace;
    facts := 0;
    versions_deleted := 0;
    vectors_materialised := 0;
    IF v_ns IS NULL THEN
        RETURN;
    END IF;
    -- the owner's path through memstate._append_only, for this statement only (a function's
    -- own SET clause would need a superuser to create it: memstate.* is a placeholder)
    v_prev := pg_catalog.current_setting('memstate.compacting', true);
    PERFORM pg_catalog.set_config('memstate.compacting', 'on', true);
    WITH k AS MATERIALIZED (
        SELECT * FROM memstate._compact_classify(v_ns, v_hz, p_keep,
                                                 coalesce(p_after, '00000000-0000-0000-0000-000000000000'::uuid),
                                                 p_limit)),
    mat AS (
        UPDATE memstate.fact_versions t SET embedding = s.embedding
        FROM k JOIN memstate.fact_versions s ON s.fact_id = k.fact_id AND s.version = k.vector_from
        WHERE k.vector_from IS NOT NULL AND t.fact_id = k.fact_id AND t.version = k.version
          AND t.embedding IS NULL
        RETURNING 1),
    del AS (
        DELETE FROM memstate.fact_versions t USING k
        WHERE k.doomed AND t.fact_id = k.fact_id AND t.version = k.version
        RETURNING 1)
    SELECT (SELECT pg_catalog.max(k.fact_id::text)::uuid FROM k),
           (SELECT pg_catalog.count(DISTINCT k.fact_id) FROM k),
           (SELECT pg_catalog.count(*) FROM del),
           (SELECT pg_catalog.count(*) FROM mat)
    INTO last_fact, facts, versions_deleted, vectors_materialised;
    PERFORM pg_catalog.set_config('memstate.compacting', coalesce(v_prev, ''), true);
END $$;

-- One batch of a compaction's commit phase: of the commits with seq after `p_after` (up to
-- `p_limit`) at or before their namespace's recorded horizon, removes those without any
-- version left (one that marks a kept commit undone stays: undone_by refers to it). Returns
-- the last seq looked at (NULL: none left), how many, and how many were removed.
CREATE OR REPLACE FUNCTION memstate.compact_commits(
    p_namespace text, p_after bigint, p_limit int,
    OUT last_seq bigint, OUT scanned int, OUT commits_deleted int)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prev text := pg_catalog.current_setting('memstate.compacting', true);
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000000 THEN
        PERFORM memstate._fail('MSV01', pg_catalog.format('batch size must be 1 to 1000000, not %s', p_limit));
    END IF;
    PERFORM pg_catalog.set_config('memstate.compacting', 'on', true);  -- see compact_versions
    WITH page AS MATERIALIZED (
        SELECT c.seq, c.undoes FROM memstate.commits c
        JOIN memstate.compactions h ON h.namespace = c.namespace
        WHERE c.seq > coalesce(p_after, 0) AND c.seq <= h.horizon_seq
          AND (p_namespace IS NULL OR c.namespace = p_namespace)
        ORDER BY c.seq LIMIT p_limit),
    gone AS MATERIALIZED (
        SELECT p.seq, p.undoes FROM page p
        WHERE NOT EXISTS (SELECT 1 FROM memstate.fact_versions v WHERE v.seq = p.seq)),
    del AS (
        DELETE FROM memstate.commits c USING gone g
        WHERE c.seq = g.seq
          AND NOT EXISTS (SELECT 1 FROM memstate.commits d
                          WHERE d.seq = ANY (g.undoes) AND d.undone_by = g.seq
                            AND NOT EXISTS (SELECT 1 FROM gone g2 WHERE g2.seq = d.seq))
        RETURNING 1)
    SELECT (SELECT pg_catalog.max(p.seq) FROM page p), (SELECT pg_catalog.count(*) FROM page),
           (SELECT pg_catalog.count(*) FROM del)
    INTO last_seq, scanned, commits_deleted;
    PERFORM pg_catalog.set_config('memstate.compacting', coalesce(v_prev, ''), true);
END $$;

-- A compaction's housekeeping, in one short transaction: counts (and unless `p_dry_run`
-- removes) re-embed staging rows that can never be applied (their fact is gone, changed
-- since, or already in that model) and LangGraph TTL clocks of items that are gone; counts
-- dead outbox rows parked before `p_before` and removes them only with `p_dead_outbox` (a
-- mirror then misses those changes until reconciliation). Live facts, expired LangGraph items
-- included, are never touched here: sweeping those is a versioned delete (sweep_ttl).
CREATE OR REPLACE FUNCTION memstate.compact_housekeeping(
    p_namespace text, p_before timestamptz, p_dead_outbox boolean, p_dry_run boolean,
    OUT dead_outbox bigint, OUT reembed_staging bigint, OUT lg_clocks bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_dry_run OR NOT p_dead_outbox THEN
        SELECT pg_catalog.count(*) INTO dead_outbox FROM memstate.outbox o
        WHERE o.dead_at < p_before AND (p_namespace IS NULL OR o.namespace = p_namespace);
    ELSE
        WITH gone AS (DELETE FROM memstate.outbox o
                      WHERE o.dead_at < p_before AND (p_namespace IS NULL OR o.namespace = p_namespace)
                      RETURNING 1)
        SELECT pg_catalog.count(*) INTO dead_outbox FROM gone;
    END IF;
    IF p_dry_run THEN
        SELECT pg_catalog.count(*) INTO reembed_staging FROM memstate.reembed_vectors r
        WHERE (p_namespace IS NULL OR r.namespace = p_namespace)
          AND NOT EXISTS (SELECT 1 FROM memstate.facts f
                          WHERE f.fact_id = r.fact_id AND f.version = r.version
                            AND f.embedding_model IS DISTINCT FROM r.model);
    ELSE
        WITH gone AS (DELETE FROM memstate.reembed_vectors r
                      WHERE (p_namespace IS NULL OR r.namespace = p_namespace)
                        AND NOT EXISTS (SELECT 1 FROM memstate.facts f
                                        WHERE f.fact_id = r.fact_id AND f.version = r.version
                                          AND f.embedding_model IS DISTINCT FROM r.model)
                      RETURNING 1)
        SELECT pg_catalog.count(*) INTO reembed_staging FROM gone;
    END IF;
    lg_clocks := 0;
    IF pg_catalog.to_regclass('memstate.lg_ttl') IS NOT NULL THEN
        EXECUTE CASE WHEN p_dry_run THEN
            'SELECT pg_catalog.count(*) FROM memstate.lg_ttl t WHERE NOT EXISTS '
            '(SELECT 1 FROM memstate.facts f WHERE f.fact_id OPERATOR(pg_catalog.=) t.fact_id '
            'AND f.payload OPERATOR(pg_catalog.?) ''ttl'')'
        ELSE 'SELECT memstate.lg_collect_ttl()' END
        INTO lg_clocks;
    END IF;
END $$;

-- Ends a compaction: the namespaces in scope get finished_at.
CREATE OR REPLACE FUNCTION memstate.compact_finish(p_namespace text)
RETURNS void LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE memstate.compactions c SET finished_at = pg_catalog.now()
    WHERE (p_namespace IS NULL OR c.namespace = p_namespace) AND c.finished_at IS NULL
$$;

-- Owner only (PUBLIC keeps EXECUTE on every other memstate function: they are INVOKER).
REVOKE ALL ON FUNCTION memstate.compact_plan(text, int, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate.compact_begin(text, int, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate.compact_versions(text, int, uuid, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate.compact_commits(text, bigint, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate.compact_housekeeping(text, timestamptz, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate.compact_finish(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate._compact_classify(text[], bigint[], int, uuid, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION memstate._compact_targets(text, timestamptz) FROM PUBLIC;
