-- Event-driven sync (issue 17): the service account whose OIDC token a
-- Pub/Sub push subscription sends with the bucket's notifications; empty:
-- notifications are refused.
ALTER TABLE import_storages ADD COLUMN pubsub_push_service_account TEXT NOT NULL DEFAULT '';
ALTER TABLE import_storages ADD COLUMN last_notification_at TEXT;
