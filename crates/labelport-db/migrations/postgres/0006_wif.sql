-- Workload Identity Federation fields of `gcswif` storages (empty for
-- other kinds). None of them is secret: a gcswif storage holds no key.
ALTER TABLE import_storages ADD COLUMN wif_pool_id TEXT NOT NULL DEFAULT '';
ALTER TABLE import_storages ADD COLUMN wif_provider_id TEXT NOT NULL DEFAULT '';
ALTER TABLE import_storages ADD COLUMN wif_service_account_email TEXT NOT NULL DEFAULT '';
ALTER TABLE import_storages ADD COLUMN wif_project_number TEXT NOT NULL DEFAULT '';
ALTER TABLE export_storages ADD COLUMN wif_pool_id TEXT NOT NULL DEFAULT '';
ALTER TABLE export_storages ADD COLUMN wif_provider_id TEXT NOT NULL DEFAULT '';
ALTER TABLE export_storages ADD COLUMN wif_service_account_email TEXT NOT NULL DEFAULT '';
ALTER TABLE export_storages ADD COLUMN wif_project_number TEXT NOT NULL DEFAULT '';
