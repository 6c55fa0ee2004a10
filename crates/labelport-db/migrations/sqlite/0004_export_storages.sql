-- Export ("target") storages, what each has written, and deletions to carry out.
CREATE TABLE export_storages (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL once the project is deleted: a storage with can_delete_objects
    -- lives on (unlisted) until the project's objects are deleted.
    project_id          BIGINT REFERENCES projects(id) ON DELETE SET NULL,
    storage_type        TEXT NOT NULL,
    title               TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    bucket              TEXT NOT NULL,
    prefix              TEXT NOT NULL DEFAULT '',
    regex_filter        TEXT NOT NULL DEFAULT '',
    use_blob_urls       BOOLEAN NOT NULL DEFAULT FALSE,
    google_project_id   TEXT NOT NULL DEFAULT '',
    -- Write-only in the API; never logged.
    credentials         TEXT,
    can_delete_objects  BOOLEAN NOT NULL DEFAULT FALSE,
    -- 'annotation': <prefix>/<annotation id>; 'task': <prefix>/<task id>.json
    export_format       TEXT NOT NULL DEFAULT 'annotation',
    -- A full sync was asked for (create, sync endpoint) and has not started.
    sync_requested      BOOLEAN NOT NULL DEFAULT FALSE,
    status              TEXT NOT NULL DEFAULT 'initialized',
    last_sync           TEXT,
    last_sync_count     BIGINT,
    last_sync_job       TEXT,
    traceback           TEXT,
    meta                TEXT NOT NULL DEFAULT '{}',
    created_at          TEXT NOT NULL
);
CREATE INDEX export_storages_project ON export_storages (project_id);

-- One row per (storage, annotation): the object it goes to, the annotation
-- version last written there (0: never) and whether a newer one waits.
-- Saves set dirty in the same transaction as the annotation, so a save is
-- never lost between the database and the bucket.
CREATE TABLE export_storage_links (
    storage_id        BIGINT NOT NULL REFERENCES export_storages(id) ON DELETE CASCADE,
    annotation_id     BIGINT NOT NULL REFERENCES annotations(id) ON DELETE CASCADE,
    task_id           BIGINT NOT NULL,
    object_key        TEXT NOT NULL,
    exported_version  BIGINT NOT NULL DEFAULT 0,
    dirty             BOOLEAN NOT NULL DEFAULT TRUE,
    -- Bumped each time the link is made dirty; an export clears `dirty` only
    -- if no change came in while it wrote.
    change_seq        BIGINT NOT NULL DEFAULT 0,
    exported_at       TEXT,
    PRIMARY KEY (storage_id, annotation_id)
);
CREATE INDEX export_storage_links_dirty ON export_storage_links (storage_id, annotation_id) WHERE dirty;
CREATE INDEX export_storage_links_annotation ON export_storage_links (annotation_id);
CREATE INDEX export_storage_links_object ON export_storage_links (storage_id, object_key);

-- Objects to delete from a bucket (annotation, task or project deleted, on a
-- storage with can_delete_objects), queued in the deleting transaction.
CREATE TABLE export_storage_deletions (
    storage_id  BIGINT NOT NULL REFERENCES export_storages(id) ON DELETE CASCADE,
    object_key  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (storage_id, object_key)
);

-- Bumped on every update: what an export link compares with.
ALTER TABLE annotations ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- Set when a job is asked for again while it runs: it is queued once more
-- when it ends, so work that arrived during the run is not lost.
ALTER TABLE jobs ADD COLUMN run_again BOOLEAN NOT NULL DEFAULT FALSE;
