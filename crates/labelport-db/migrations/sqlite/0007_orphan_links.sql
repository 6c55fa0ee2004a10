-- Links of an import storage that was deleted, or whose bucket changed:
-- kept under their project and bucket, so a storage (re)created for that
-- bucket adopts the tasks they made instead of importing them again.
CREATE TABLE import_orphan_links (
    project_id     BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    bucket         TEXT NOT NULL,
    object_key     TEXT NOT NULL,
    row_index      BIGINT NOT NULL,
    generation     BIGINT NOT NULL,
    etag           TEXT NOT NULL DEFAULT '',
    object_exists  BOOLEAN NOT NULL DEFAULT TRUE,
    task_id        BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    created_at     TEXT NOT NULL,
    UNIQUE (project_id, bucket, object_key, row_index)
);
CREATE INDEX import_orphan_links_task ON import_orphan_links (task_id);
