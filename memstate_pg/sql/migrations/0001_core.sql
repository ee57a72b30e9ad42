-- memstate-pg migration 0001_core (FROZEN: never edit; a change goes into a new migration).
-- sql/schema.sql followed by sql/functions.sql exactly as released at commit 058a291:
-- the tables, indexes, functions, triggers and the current_facts view.
-- memstate-pg schema: tables, indexes and the triggers that keep the rules in the database.
--
-- Applied by alembic revision 0001 (memstate-pg migrate / MemoryStore.migrate()), or by hand:
--     psql "$DSN" -v ON_ERROR_STOP=1 -f sql/schema.sql -f sql/functions.sql
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
    ('search_exact_max', '2000')
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

-- The append-only version log: every change of every fact, forever.
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
    type            text   NOT NULL REFERENCES memstate.types (type),
    session_id      text,
    payload         jsonb  NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    content         text   NOT NULL,
    embedding       vector NOT NULL,
    embedding_model text   NOT NULL REFERENCES memstate.embedding_models (model),
    singleton_value text,
    version         int    NOT NULL,
    commit_seq      bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
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
    created_at         timestamptz NOT NULL DEFAULT now()
);

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
CREATE INDEX IF NOT EXISTS outbox_ready ON memstate.outbox (mirror, id) WHERE dead_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_dead ON memstate.outbox (mirror) WHERE dead_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_fact ON memstate.outbox (mirror, fact_id);
-- memstate-pg functions and triggers. Every rule of the write path lives here, once: the
-- Python API calls these functions, and so can psql or any other language, with the same
-- validation, versioning, constraints and outbox rows.
--
-- Errors carry custom SQLSTATEs that the Python API maps to its exceptions:
--   MSV01 -> ValidationFailed   MSC01 -> ConflictError   MSN01 -> NotFound
-- All functions are SECURITY INVOKER: they can do nothing the calling role could not.
-- Re-runnable (CREATE OR REPLACE); applied after sql/schema.sql.

-- ---------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION memstate._fail(p_code text, p_message text, p_detail text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, DETAIL = coalesce(p_detail, '');
END $$;

CREATE OR REPLACE FUNCTION memstate._config_int(p_key text)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (value #>> '{}')::bigint FROM memstate.config WHERE key = p_key
$$;

-- The text that gets embedded when the caller gives none: payload[text_field] when that is a
-- string, else the payload's JSON text. (The Python API derives the same way before embedding.)
CREATE OR REPLACE FUNCTION memstate.derive_content(p_text_field text, p_payload jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_text_field IS NOT NULL AND jsonb_typeof(p_payload -> p_text_field) = 'string'
            THEN p_payload ->> p_text_field
        ELSE p_payload::text
    END
$$;

-- Checks a payload against the subset of JSON Schema that describes its shape: the payload
-- is an object, `required` keys are present, each property's JSON type is allowed
-- (`type` or the types of `anyOf`/`oneOf` branches; integer = number without fraction), and
-- no unknown key when additionalProperties is false. Raises MSV01 naming the field.
CREATE OR REPLACE FUNCTION memstate.validate_payload(p_schema jsonb, p_payload jsonb)
RETURNS void LANGUAGE plpgsql STABLE AS $$
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
                format('payload field %I is %s, expected %s', v_key, v_kind, array_to_string(v_types, ' or ')));
        END IF;
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------
-- Registration: embedding models and fact types
-- ---------------------------------------------------------------------------------------

-- Registers a vector space and builds its own partial HNSW index (cosine). Idempotent;
-- a known model with another dimension is refused. Vectors over 2000 dims are indexed as
-- halfvec (up to 4000); beyond that, search is exact.
CREATE OR REPLACE FUNCTION memstate.register_model(
    p_model text, p_dim int, p_m int DEFAULT 16, p_ef_construction int DEFAULT 64)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_dim   int;
    v_index text := 'facts_hnsw_' || left(md5(p_model), 16);
    v_cast  text;
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
    INSERT INTO memstate.embedding_models (model, dim, index_name)
    VALUES (p_model, p_dim, CASE WHEN v_cast IS NOT NULL THEN v_index END)
    ON CONFLICT (model) DO NOTHING;
    IF v_cast IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON memstate.facts USING hnsw ((embedding::%s(%s)) %s) '
            'WITH (m = %s, ef_construction = %s) WHERE embedding_model = %L',
            v_index, v_cast, p_dim, v_cast || '_cosine_ops', p_m, p_ef_construction, p_model);
    END IF;
END $$;

-- Registers (or changes) a fact type. Changing singleton_key re-derives the key of every
-- live fact of the type, so an existing duplicate makes the change fail instead of hiding.
CREATE OR REPLACE FUNCTION memstate.register_type(
    p_type text, p_json_schema jsonb DEFAULT NULL, p_singleton_key text DEFAULT NULL,
    p_immutable boolean DEFAULT false, p_text_field text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
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

-- On memstate.facts: vector dimension matches the model; singleton key derived from the
-- type; immutable facts refuse content changes; a fact never changes namespace or type.
CREATE OR REPLACE FUNCTION memstate._facts_rules()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_type memstate.types%ROWTYPE;
    v_dim  int;
BEGIN
    SELECT * INTO v_type FROM memstate.types WHERE type = NEW.type;
    IF NOT FOUND THEN
        PERFORM memstate._fail('MSV01', format('unknown fact type %L: register it first', NEW.type));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.embedding_model IS DISTINCT FROM OLD.embedding_model
       OR NEW.embedding IS DISTINCT FROM OLD.embedding THEN
        SELECT dim INTO v_dim FROM memstate.embedding_models WHERE model = NEW.embedding_model;
        IF NOT FOUND THEN
            PERFORM memstate._fail('MSV01', format('unknown embedding model %L: register it first', NEW.embedding_model));
        END IF;
        IF vector_dims(NEW.embedding) <> v_dim THEN
            PERFORM memstate._fail('MSV01', format('embedding has %s dimensions, model %L has %s',
                                                   vector_dims(NEW.embedding), NEW.embedding_model, v_dim));
        END IF;
        IF vector_norm(NEW.embedding) = 0 OR vector_norm(NEW.embedding) > 1e19 THEN
            PERFORM memstate._fail('MSV01', 'embedding is all zeros or too long (norm over 1e19): '
                                            'cosine needs a direction and a length float4 can square');
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.namespace <> OLD.namespace OR NEW.type <> OLD.type THEN
            PERFORM memstate._fail('MSC01', 'a fact cannot change namespace or type');
        END IF;
        IF v_type.immutable AND (NEW.payload IS DISTINCT FROM OLD.payload
                                 OR NEW.content IS DISTINCT FROM OLD.content
                                 OR NEW.embedding IS DISTINCT FROM OLD.embedding) THEN
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

-- History is append-only: versions are never changed or removed; a commit row only ever
-- gains its `undone_by`, `undoes` and `result`.
CREATE OR REPLACE FUNCTION memstate._append_only()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'commits' AND TG_OP = 'UPDATE' THEN  -- nested: NEW.kind exists only here
        IF (NEW.seq, NEW.namespace, NEW.session_id, NEW.actor, NEW.reason, NEW.kind,
            NEW.idempotency_key, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.seq, OLD.namespace, OLD.session_id, OLD.actor, OLD.reason, OLD.kind,
            OLD.idempotency_key, OLD.created_at) THEN
            RETURN NEW;
        END IF;
    END IF;
    PERFORM memstate._fail('MSC01', format('memstate.%s is append-only (%s refused)', TG_TABLE_NAME, TG_OP));
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER fact_versions_append_only BEFORE UPDATE OR DELETE ON memstate.fact_versions
    FOR EACH ROW EXECUTE FUNCTION memstate._append_only();
CREATE OR REPLACE TRIGGER fact_versions_no_truncate BEFORE TRUNCATE ON memstate.fact_versions
    FOR EACH STATEMENT EXECUTE FUNCTION memstate._append_only();
CREATE OR REPLACE TRIGGER commits_append_only BEFORE UPDATE OR DELETE ON memstate.commits
    FOR EACH ROW EXECUTE FUNCTION memstate._append_only();

-- The outbox: every new version becomes one row per enabled mirror that takes its
-- namespace and type, in the same transaction; one NOTIFY per statement wakes the workers
-- (Postgres folds identical notifications of one transaction into one).
CREATE OR REPLACE FUNCTION memstate._enqueue_versions()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op)
    SELECT m.name, n.fact_id, n.namespace, n.seq, n.version, n.op
    FROM new_rows n
    JOIN memstate.mirrors m
      ON m.enabled
     AND (m.namespaces IS NULL OR n.namespace = ANY (m.namespaces))
     AND (m.types IS NULL OR n.type = ANY (m.types));
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
LANGUAGE plpgsql AS $$
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
LANGUAGE plpgsql AS $$
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
RETURNS bigint LANGUAGE sql AS $$
    SELECT o.seq FROM memstate.open_commit($1, $2, $3, $4, $5) o
$$;

-- The commit a write belongs to: the one opened in this transaction for the namespace, or
-- a new one of its own.
CREATE OR REPLACE FUNCTION memstate._commit_for(
    p_namespace text, p_session_id text, p_actor text, p_reason text, p_idempotency_key text,
    OUT seq bigint, OUT replayed boolean, OUT result jsonb, OUT keyed boolean)
LANGUAGE plpgsql AS $$
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
RETURNS void LANGUAGE sql AS $$
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
LANGUAGE plpgsql AS $$
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
        PERFORM memstate._fail('MSV01', format('unknown fact type %L: register it first', p_type));
    END IF;
    PERFORM memstate.validate_payload(v_type.json_schema, p_payload);
    IF octet_length(p_payload::text) > memstate._config_int('max_payload_bytes') THEN
        PERFORM memstate._fail('MSV01', format('payload is %s bytes, over the limit of %s',
                                               octet_length(p_payload::text), memstate._config_int('max_payload_bytes')));
    END IF;
    v_content := coalesce(p_content, memstate.derive_content(v_type.text_field, p_payload));
    IF octet_length(v_content) > memstate._config_int('max_content_bytes') THEN
        PERFORM memstate._fail('MSV01', format('content is %s bytes, over the limit of %s',
                                               octet_length(v_content), memstate._config_int('max_content_bytes')));
    END IF;
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

    PERFORM memstate._log_version(v_row, seq, v_op);
    fact_id := v_row.fact_id;
    version := v_row.version;
    IF v_commit.keyed THEN
        UPDATE memstate.commits c SET result = coalesce(c.result, '[]'::jsonb) || to_jsonb(fact_id::text)
        WHERE c.seq = write_fact.seq;
    END IF;
END $$;

-- DESIGN.md's entry point for SQL callers: create or update a fact, returns its id.
CREATE OR REPLACE FUNCTION memstate.commit_fact(
    namespace text, type text, payload jsonb, content text, embedding vector,
    embedding_model text, session_id text DEFAULT NULL, fact_id uuid DEFAULT NULL,
    expected_version int DEFAULT NULL, actor text DEFAULT NULL, reason text DEFAULT NULL,
    idempotency_key text DEFAULT NULL)
RETURNS uuid LANGUAGE sql AS $$
    SELECT w.fact_id FROM memstate.write_fact(
        namespace, type, payload, content, embedding, embedding_model, session_id, fact_id,
        expected_version, actor, reason, idempotency_key, 'put') w
$$;

-- Deletes a live fact (history keeps every version). Returns the commit seq.
CREATE OR REPLACE FUNCTION memstate.delete_fact(
    fact_id uuid, expected_version int DEFAULT NULL, actor text DEFAULT NULL,
    reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
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
    DELETE FROM memstate.facts f
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

-- Writes, as commit `p_seq`, the state each fact touched by the commits `p_targets` had
-- just before the first of them. Refuses (MSC01) when a later counted commit that is still
-- in effect changed such a fact: undoing would silently throw that change away.
CREATE OR REPLACE FUNCTION memstate._restore(p_seq bigint, p_targets bigint[])
RETURNS int LANGUAGE plpgsql AS $$
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

        IF v_prev.fact_id IS NULL OR v_prev.op = 'delete' THEN
            IF v_cur.fact_id IS NOT NULL THEN          -- did not exist before: delete it
                DELETE FROM memstate.facts f WHERE f.fact_id = v_cur.fact_id;
                v_cur.version := v_cur.version + 1;
                PERFORM memstate._log_version(v_cur, p_seq, 'delete');
                v_n := v_n + 1;
            END IF;
        ELSIF v_cur.fact_id IS NOT NULL THEN           -- live: bring back the earlier state
            IF (v_cur.payload, v_cur.content, v_cur.embedding, v_cur.embedding_model, v_cur.session_id)
               IS NOT DISTINCT FROM
               (v_prev.payload, v_prev.content, v_prev.embedding, v_prev.embedding_model, v_prev.session_id) THEN
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
            RETURNING f.* INTO v_cur;
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
RETURNS bigint LANGUAGE plpgsql AS $$
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
    SELECT c.seq INTO v_seq FROM memstate._new_commit(p_namespace, p_session_id, p_actor, p_reason, 'rollback', NULL) c;
    UPDATE memstate.commits c SET undoes = v_targets WHERE c.seq = v_seq;
    PERFORM memstate._restore(v_seq, v_targets);
    UPDATE memstate.commits c SET undone_by = v_seq WHERE c.seq = ANY (v_targets);
    RETURN v_seq;
END $$;

-- Undoes one given commit. Reverting a rollback or revert is redo: the commits it undid are
-- back in effect. Returns the new commit's seq.
CREATE OR REPLACE FUNCTION memstate.revert(
    seq bigint, actor text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
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
    SELECT c.seq INTO v_seq FROM memstate._new_commit(v_c.namespace, v_c.session_id, p_actor, p_reason, 'revert', NULL) c;
    UPDATE memstate.commits c SET undoes = ARRAY[p_seq] WHERE c.seq = v_seq;
    PERFORM memstate._restore(v_seq, ARRAY[p_seq]);
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
RETURNS bigint LANGUAGE plpgsql AS $$
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
RETURNS bigint LANGUAGE plpgsql AS $$
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
        DELETE FROM memstate.facts f WHERE f.namespace = p_namespace AND f.session_id = p_session_id
        RETURNING f.*
    LOOP
        v_row.version := v_row.version + 1;
        PERFORM memstate._log_version(v_row, v_seq, 'delete');
    END LOOP;
    RETURN v_seq;
END $$;

-- ---------------------------------------------------------------------------------------
-- Reads
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW memstate.current_facts AS
    SELECT fact_id, namespace, type, session_id, payload, content, embedding_model, version,
           commit_seq, created_at, updated_at
    FROM memstate.facts;
-- With the caller's rights, so Row Level Security (sql/rls.sql) applies through the view too
-- (CREATE OR REPLACE VIEW resets the option, hence here and not only in rls.sql).
DO $$ BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW memstate.current_facts SET (security_invoker = true);
    END IF;
END $$;

-- The cosine-distance expression of memstate.register_model's partial HNSW index for a
-- model of `p_dim` dimensions (so a query written with it can use the index), comparing
-- f.embedding with the query parameter `p_param` (e.g. '$1'). No index: exact distance.
CREATE OR REPLACE FUNCTION memstate._distance_sql(p_dim int, p_index text, p_param text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_index IS NULL THEN format('f.embedding <=> %s', p_param)
                WHEN p_dim <= 2000 THEN format('f.embedding::vector(%1$s) <=> %2$s::vector(%1$s)', p_dim, p_param)
                ELSE format('f.embedding::halfvec(%1$s) <=> %2$s::halfvec(%1$s)', p_dim, p_param) END
$$;

-- Nearest facts by cosine similarity (1 = same direction; higher is better), compared only
-- with vectors of the query's model (given, or the one registered model of that dimension).
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
    IF vector_norm(p_query) = 0 OR vector_norm(p_query) > 1e19 THEN
        PERFORM memstate._fail('MSV01', 'query vector is all zeros or too long (norm over 1e19): '
                                        'cosine needs a direction and a length float4 can square');
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

-- Every version of one fact, oldest first, with the commit that wrote it.
CREATE OR REPLACE FUNCTION memstate.history(fact_id uuid)
RETURNS TABLE (version int, seq bigint, op text, kind text, namespace text, type text,
               session_id text, payload jsonb, content text, embedding_model text, actor text,
               reason text, created_at timestamptz)
LANGUAGE sql STABLE AS $$
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
LANGUAGE sql STABLE AS $$
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
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT max(c.seq) FROM memstate.commits c WHERE c.namespace = p_namespace AND c.created_at <= p_at
$$;
