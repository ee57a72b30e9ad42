-- compact (issue 14.3): the compaction horizon of each namespace. The functions (compact_*,
-- _horizon, _check_horizon, the owner-only path of _append_only) and their REVOKEs come with
-- functions.sql, which the migration re-runs after the parts.
CREATE TABLE IF NOT EXISTS memstate.compactions (
    namespace     text PRIMARY KEY,
    horizon_seq   bigint NOT NULL,
    horizon_at    timestamptz NOT NULL,  -- the start of the window kept (now() - older_than)
    keep_versions int NOT NULL CHECK (keep_versions >= 1),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

-- the foreign key undone_by -> seq, looked up when compaction deletes a commit (without it,
-- every deleted commit scanned the whole table)
CREATE INDEX IF NOT EXISTS commits_undone_by ON memstate.commits (undone_by)
    WHERE undone_by IS NOT NULL;
