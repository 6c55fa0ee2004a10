-- Interval sync (issue 17): a source storage synced every sync_interval
-- minutes (NULL: only when asked), next at next_sync_at (UTC text, set from
-- the database's clock so every process agrees).
ALTER TABLE import_storages ADD COLUMN sync_interval BIGINT;
ALTER TABLE import_storages ADD COLUMN next_sync_at TEXT;
CREATE INDEX import_storages_next_sync ON import_storages (next_sync_at) WHERE sync_interval IS NOT NULL;
