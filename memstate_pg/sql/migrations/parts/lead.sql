-- Schemaless by default (issue 12): facts of unregistered types; config strict_types.
ALTER TABLE memstate.facts DROP CONSTRAINT IF EXISTS facts_type_fkey;
INSERT INTO memstate.config (key, value) VALUES ('strict_types', 'false')
ON CONFLICT (key) DO NOTHING;
