-- Import storages, their links to tasks, and the background job queue.
CREATE TABLE import_storages (
    id                  BIGSERIAL PRIMARY KEY,
    project_id          BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    storage_type        TEXT NOT NULL,
    title               TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    bucket              TEXT NOT NULL,
    prefix              TEXT NOT NULL DEFAULT '',
    regex_filter        TEXT NOT NULL DEFAULT '',
    use_blob_urls       BOOLEAN NOT NULL DEFAULT FALSE,
    presign             BOOLEAN NOT NULL DEFAULT TRUE,
    presign_ttl         BIGINT NOT NULL DEFAULT 1,
    recursive_scan      BOOLEAN NOT NULL DEFAULT FALSE,
    google_project_id   TEXT NOT NULL DEFAULT '',
    -- Write-only in the API; never logged.
    credentials         TEXT,
    deletion_policy     TEXT NOT NULL DEFAULT 'keep',
    status              TEXT NOT NULL DEFAULT 'initialized',
    last_sync           TEXT,
    last_sync_count     BIGINT,
    last_sync_job       TEXT,
    traceback           TEXT,
    meta                TEXT NOT NULL DEFAULT '{}',
    created_at          TEXT NOT NULL
);
CREATE INDEX import_storages_project ON import_storages (project_id);

-- One row per task made from an object (row_index -1: the whole object).
-- The unique key makes a duplicate task impossible, whatever crashes or races.
CREATE TABLE import_storage_links (
    id             BIGSERIAL PRIMARY KEY,
    storage_id     BIGINT NOT NULL REFERENCES import_storages(id) ON DELETE CASCADE,
    task_id        BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    object_key     TEXT COLLATE "C" NOT NULL,
    row_index      BIGINT NOT NULL,
    generation     BIGINT NOT NULL,
    etag           TEXT NOT NULL DEFAULT '',
    object_exists  BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     TEXT NOT NULL,
    UNIQUE (storage_id, object_key, row_index)
);
CREATE INDEX import_storage_links_task ON import_storage_links (task_id);

CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    kind          TEXT NOT NULL,
    dedup_key     TEXT,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'queued',
    attempts      BIGINT NOT NULL DEFAULT 0,
    run_after     TEXT NOT NULL,
    locked_by     TEXT,
    locked_until  TEXT,
    last_error    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
-- At most one queued-or-running job per dedup key (e.g. one sync per storage).
CREATE UNIQUE INDEX jobs_active_dedup ON jobs (dedup_key) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_claim ON jobs (status, run_after);
