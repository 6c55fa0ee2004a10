//! Storages of both directions, as one model
//! ([`labelport_domain::storage`]): one row type, one set of reads and
//! writes. Each direction keeps its own table (`import_storages`,
//! `export_storages`; ids are per direction, as Label Studio's) with the
//! shared columns under the same names, plus its own settings columns; the
//! functions here pick the table and those columns from the direction.
//! What only one direction has lives beside: `import_links` (tasks made
//! from objects) and `export_storages` (links, deletions, requeue).

use labelport_domain::storage::{
    normalize_prefix, DeletionPolicy, Direction, DirectionOptions, ExportFormat, ExportOptions, ImportOptions,
    StorageKind, StorageSettings, SyncState, WifSettings,
};

use labelport_domain::secret::Secret;

use crate::secrets::SecretKeys;
use crate::{not_found_if_none, now, on_read, on_write, Db, DbError, DbResult};

/// A stored storage of either direction.
#[derive(Debug, Clone)]
pub struct StorageRow {
    pub id: i64,
    /// None for an export storage whose project was deleted (it lives on,
    /// unlisted, until its queued object deletions are done); always Some
    /// for an import storage.
    pub project_id: Option<i64>,
    /// Label Studio's `type` (`gcs`), column `storage_type`.
    pub kind: StorageKind,
    pub settings: StorageSettings,
    pub state: SyncState,
    /// Export: a full sync was asked for and has not started yet. Import:
    /// always false.
    pub sync_requested: bool,
    pub created_at: String,
    /// Import with an interval sync: when it is next due (UTC, the
    /// database's clock); None otherwise.
    pub next_sync_at: Option<String>,
    /// Import: when the last bucket notification for it was accepted (UTC,
    /// `jobs::ts` format); None if never.
    pub last_notification_at: Option<String>,
}

impl StorageRow {
    pub fn direction(&self) -> Direction {
        self.settings.direction()
    }
}

/// The table of a direction.
pub(crate) fn table(direction: Direction) -> &'static str {
    match direction {
        Direction::Import => "import_storages",
        Direction::Export => "export_storages",
    }
}

/// Settings columns both tables have, in bind order.
const SHARED_SETTINGS: [&str; 12] = [
    "title",
    "description",
    "bucket",
    "prefix",
    "regex_filter",
    "use_blob_urls",
    "google_project_id",
    "credentials",
    "wif_pool_id",
    "wif_provider_id",
    "wif_service_account_email",
    "wif_project_number",
];

/// Settings columns of one direction only, in bind order.
fn own_settings(direction: Direction) -> &'static [&'static str] {
    match direction {
        Direction::Import => &[
            "presign",
            "presign_ttl",
            "recursive_scan",
            "deletion_policy",
            "sync_interval",
            "pubsub_push_service_account",
        ],
        Direction::Export => &["can_delete_objects", "export_format"],
    }
}

/// One record shape for both tables: a direction's select list fills the
/// other direction's columns with their defaults (never read back).
#[derive(sqlx::FromRow)]
struct StorageRecord {
    id: i64,
    project_id: Option<i64>,
    storage_type: String,
    title: String,
    description: String,
    bucket: String,
    prefix: String,
    regex_filter: String,
    use_blob_urls: bool,
    google_project_id: String,
    credentials: Option<String>,
    wif_pool_id: String,
    wif_provider_id: String,
    wif_service_account_email: String,
    wif_project_number: String,
    presign: bool,
    presign_ttl: i64,
    recursive_scan: bool,
    deletion_policy: String,
    sync_interval: Option<i64>,
    pubsub_push_service_account: String,
    next_sync_at: Option<String>,
    last_notification_at: Option<String>,
    can_delete_objects: bool,
    export_format: String,
    sync_requested: bool,
    status: String,
    last_sync: Option<String>,
    last_sync_count: Option<i64>,
    last_sync_job: Option<String>,
    traceback: Option<String>,
    meta: String,
    created_at: String,
}

/// The select list of a direction's table, in [`StorageRecord`]'s shape.
fn columns(direction: Direction) -> &'static str {
    match direction {
        Direction::Import => {
            "id, project_id, storage_type, title, description, bucket, prefix, regex_filter, use_blob_urls, \
             google_project_id, credentials, wif_pool_id, wif_provider_id, wif_service_account_email, \
             wif_project_number, presign, presign_ttl, recursive_scan, deletion_policy, sync_interval, \
             pubsub_push_service_account, next_sync_at, last_notification_at, FALSE AS can_delete_objects, 'annotation' AS export_format, FALSE AS sync_requested, \
             status, last_sync, last_sync_count, last_sync_job, traceback, meta, created_at"
        }
        Direction::Export => {
            "id, project_id, storage_type, title, description, bucket, prefix, regex_filter, use_blob_urls, \
             google_project_id, credentials, wif_pool_id, wif_provider_id, wif_service_account_email, \
             wif_project_number, TRUE AS presign, CAST(1 AS BIGINT) AS presign_ttl, \
             FALSE AS recursive_scan, 'keep' AS deletion_policy, CAST(NULL AS BIGINT) AS sync_interval, \
             '' AS pubsub_push_service_account, CAST(NULL AS TEXT) AS next_sync_at, \
             CAST(NULL AS TEXT) AS last_notification_at, can_delete_objects, export_format, \
             sync_requested, status, last_sync, last_sync_count, last_sync_job, traceback, meta, created_at"
        }
    }
}

impl StorageRecord {
    /// The row, its credentials opened with `keys`.
    fn into_row(self, direction: Direction, keys: &SecretKeys) -> DbResult<StorageRow> {
        let credentials = match &self.credentials {
            Some(stored) => Some(Secret::new(keys.open(stored)?)),
            None => None,
        };
        let options = match direction {
            Direction::Import => DirectionOptions::Import(ImportOptions {
                presign: self.presign,
                presign_ttl: self.presign_ttl,
                recursive_scan: self.recursive_scan,
                // An unknown value (written by a newer version) acts as the
                // safest one rather than failing every read.
                deletion_policy: DeletionPolicy::parse(&self.deletion_policy).unwrap_or_else(|| {
                    tracing::warn!(
                        storage.id = self.id,
                        "unknown deletion_policy {:?}; keeping tasks",
                        self.deletion_policy
                    );
                    DeletionPolicy::Keep
                }),
                sync_interval: self.sync_interval,
                pubsub_push_service_account: self.pubsub_push_service_account,
            }),
            Direction::Export => DirectionOptions::Export(ExportOptions {
                can_delete_objects: self.can_delete_objects,
                export_format: ExportFormat::parse(&self.export_format).unwrap_or_else(|| {
                    tracing::warn!(
                        storage.id = self.id,
                        "unknown export_format {:?}; using annotation",
                        self.export_format
                    );
                    ExportFormat::Annotation
                }),
            }),
        };
        Ok(StorageRow {
            id: self.id,
            project_id: self.project_id,
            // A type this server does not serve (written by a newer
            // version): the storage is treated as absent, not as an error.
            kind: StorageKind::parse(&self.storage_type).ok_or_else(|| {
                tracing::warn!(
                    storage.id = self.id,
                    "storage of unknown type {:?} ignored",
                    self.storage_type
                );
                DbError::NotFound
            })?,
            settings: StorageSettings {
                title: self.title,
                description: self.description,
                bucket: self.bucket,
                prefix: self.prefix,
                regex_filter: self.regex_filter,
                use_blob_urls: self.use_blob_urls,
                google_project_id: self.google_project_id,
                credentials,
                wif: WifSettings {
                    pool_id: self.wif_pool_id,
                    provider_id: self.wif_provider_id,
                    service_account_email: self.wif_service_account_email,
                    project_number: self.wif_project_number,
                },
                options,
            },
            state: SyncState {
                status: self.status,
                last_sync: self.last_sync,
                last_sync_count: self.last_sync_count,
                last_sync_job: self.last_sync_job,
                traceback: self.traceback,
                meta: self.meta,
            },
            sync_requested: self.sync_requested,
            created_at: self.created_at,
            next_sync_at: self.next_sync_at,
            last_notification_at: self.last_notification_at,
        })
    }
}

/// Binds a storage's settings, shared columns then the direction's own, in
/// the order of [`SHARED_SETTINGS`] and [`own_settings`]; the credentials
/// as `$sealed` (sealed by the caller).
macro_rules! bind_settings {
    ($q:expr, $s:expr, $sealed:expr) => {{
        let s: &StorageSettings = $s;
        let sealed: &Option<String> = $sealed;
        let q = $q
            .bind(&s.title)
            .bind(&s.description)
            .bind(&s.bucket)
            .bind(&s.prefix)
            .bind(&s.regex_filter)
            .bind(s.use_blob_urls)
            .bind(&s.google_project_id)
            .bind(sealed)
            .bind(&s.wif.pool_id)
            .bind(&s.wif.provider_id)
            .bind(&s.wif.service_account_email)
            .bind(&s.wif.project_number);
        match &s.options {
            DirectionOptions::Import(o) => q
                .bind(o.presign)
                .bind(o.presign_ttl)
                .bind(o.recursive_scan)
                .bind(o.deletion_policy.as_str())
                .bind(o.sync_interval)
                .bind(&o.pubsub_push_service_account),
            DirectionOptions::Export(o) => q.bind(o.can_delete_objects).bind(o.export_format.as_str()),
        }
    }};
}

/// The credentials as stored: sealed under the current key.
fn sealed(keys: &SecretKeys, settings: &StorageSettings) -> Option<String> {
    settings.credentials.as_ref().map(|c| keys.seal(c.expose()))
}

/// In a list, a row of a type this server does not serve is left out (see
/// `into_row`); any other error stays one.
fn keep_known(row: DbResult<StorageRow>) -> Option<DbResult<StorageRow>> {
    match row {
        Err(DbError::NotFound) => None,
        other => Some(other),
    }
}

/// `$1, $2, …, $n`.
fn numbered(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    /// Saves a new storage of `settings`' direction in `project_id`.
    pub async fn create_storage(
        &self,
        project_id: i64,
        kind: StorageKind,
        settings: &StorageSettings,
    ) -> DbResult<StorageRow> {
        let direction = settings.direction();
        let names: Vec<&str> = SHARED_SETTINGS.iter().chain(own_settings(direction)).copied().collect();
        let n = names.len();
        let sql = format!(
            "INSERT INTO {} ({}, project_id, storage_type, created_at) VALUES ({}) RETURNING {}",
            table(direction),
            names.join(", "),
            numbered(1, n + 3),
            columns(direction)
        );
        let at = now();
        let keys = self.keys()?;
        let sealed = sealed(keys, settings);
        let prefix = normalize_prefix(&settings.prefix);
        let schedule = self.schedule_sql();
        let record = on_write!(self, p => {
            let mut tx = p.begin().await?;
            let record = bind_settings!(sqlx::query_as::<_, StorageRecord>(&sql), settings, &sealed)
                .bind(project_id)
                .bind(kind.name())
                .bind(&at)
                .fetch_one(&mut *tx)
                .await?;
            let record = if direction == Direction::Import {
                crate::adopt_import_links!(tx, record.id, prefix.clone());
                sqlx::query_as::<_, StorageRecord>(&schedule).bind(record.id).fetch_one(&mut *tx).await?
            } else {
                record
            };
            tx.commit().await?;
            Ok::<_, DbError>(record)
        })?;
        record.into_row(direction, keys)
    }

    /// A storage, including an export storage whose project is gone (for its
    /// job); the API lists only storages with a project.
    pub async fn get_storage(&self, direction: Direction, id: i64) -> DbResult<StorageRow> {
        let sql = format!("SELECT {} FROM {} WHERE id = $1", columns(direction), table(direction));
        let record = on_read!(self, p => sqlx::query_as::<_, StorageRecord>(&sql).bind(id).fetch_optional(p).await)?;
        not_found_if_none(record)?.into_row(direction, self.keys()?)
    }

    /// Storages of one direction, of a kind (None: every kind) and of one
    /// project (None: every project with one), in id order.
    pub async fn list_storages(
        &self,
        direction: Direction,
        kind: Option<StorageKind>,
        project_id: Option<i64>,
    ) -> DbResult<Vec<StorageRow>> {
        let mut sql = format!(
            "SELECT {} FROM {} WHERE project_id IS NOT NULL",
            columns(direction),
            table(direction)
        );
        let mut n = 0;
        if kind.is_some() {
            n += 1;
            sql.push_str(&format!(" AND storage_type = ${n}"));
        }
        if project_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND project_id = ${n}"));
        }
        sql.push_str(" ORDER BY id");
        let records: Vec<StorageRecord> = on_read!(self, p => {
            let mut q = sqlx::query_as::<_, StorageRecord>(&sql);
            if let Some(k) = kind {
                q = q.bind(k.name());
            }
            if let Some(id) = project_id {
                q = q.bind(id);
            }
            q.fetch_all(p).await
        })?;
        let keys = self.keys()?;
        records
            .into_iter()
            .filter_map(|r| keep_known(r.into_row(direction, keys)))
            .collect()
    }

    /// Saves new settings (the direction is the storage's; a storage of a
    /// deleted project cannot be changed). For an export storage whose
    /// object names change (bucket, prefix or format), what was written
    /// before no longer counts: every link is re-pointed and made dirty in
    /// the same transaction, and the job writes them to the new place
    /// (objects in the old place stay).
    pub async fn update_storage(&self, id: i64, settings: &StorageSettings) -> DbResult<StorageRow> {
        let direction = settings.direction();
        let names: Vec<&str> = SHARED_SETTINGS.iter().chain(own_settings(direction)).copied().collect();
        let assignments: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 1))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE id = ${} AND project_id IS NOT NULL RETURNING {}",
            table(direction),
            assignments.join(", "),
            names.len() + 1,
            columns(direction)
        );
        let before = self.get_storage(direction, id).await?.settings;
        let moved = direction == Direction::Export && settings.moves_objects_from(&before);
        // A source storage that moves to another bucket leaves its tasks
        // as they are (Label Studio does not delete them either) and keeps
        // their links for a storage of that bucket; under its new bucket
        // and prefix it adopts what another storage left.
        let rebucketed = direction == Direction::Import && settings.bucket != before.bucket;
        // A new interval counts from now; an unchanged one keeps its time.
        let rescheduled = direction == Direction::Import
            && settings.import().map(|o| o.sync_interval) != before.import().map(|o| o.sync_interval);
        let schedule = self.schedule_sql();
        let prefix = normalize_prefix(&settings.prefix);
        let keys = self.keys()?;
        let sealed = sealed(keys, settings);
        let record = on_write!(self, p => {
            let mut tx = p.begin().await?;
            if rebucketed {
                crate::orphan_import_links!(tx, id);
            }
            let record = bind_settings!(sqlx::query_as::<_, StorageRecord>(&sql), settings, &sealed)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if record.is_some() && moved {
                crate::repoint_export_links!(tx, id);
            }
            if record.is_some() && direction == Direction::Import {
                crate::adopt_import_links!(tx, id, prefix.clone());
            }
            let record = match record {
                Some(_) if rescheduled => {
                    Some(sqlx::query_as::<_, StorageRecord>(&schedule).bind(id).fetch_one(&mut *tx).await?)
                }
                other => other,
            };
            tx.commit().await?;
            Ok::<_, DbError>(record)
        })?;
        not_found_if_none(record)?.into_row(direction, keys)
    }

    /// Deletes a storage and its bookkeeping (links, queued deletions).
    /// Import: its tasks stay (as Label Studio), and its links are kept as
    /// orphans of the project and bucket, for a storage of that bucket to
    /// adopt. Export: its objects stay.
    pub async fn delete_storage(&self, direction: Direction, id: i64) -> DbResult<()> {
        let sql = format!("DELETE FROM {} WHERE id = $1", table(direction));
        let n = on_write!(self, p => {
            let mut tx = p.begin().await?;
            if direction == Direction::Import {
                crate::orphan_import_links!(tx, id);
            }
            let n = sqlx::query(&sql).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<_, DbError>(n)
        })?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// Records a sync's status, progress or result on its storage.
    pub async fn set_storage_state(&self, direction: Direction, id: i64, s: &SyncState) -> DbResult<()> {
        let sql = format!(
            "UPDATE {} SET status = $1, last_sync = $2, last_sync_count = $3, last_sync_job = $4,
             traceback = $5, meta = $6 WHERE id = $7",
            table(direction)
        );
        on_write!(self, p => sqlx::query(&sql).bind(&s.status).bind(&s.last_sync).bind(s.last_sync_count)
            .bind(&s.last_sync_job).bind(&s.traceback).bind(&s.meta).bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Asks for a sync, in one transaction: the storage becomes `queued`
    /// with `meta` and its job is queued. At most one job per storage is
    /// queued or running (dedup key); what a second request does depends on
    /// the direction:
    ///
    /// * import: nothing (the sync queued or running covers it); returns
    ///   the new job's id, or None when one was already there;
    /// * export: a running job is told to run again and the next run is a
    ///   full sync (`sync_requested`); a waiting one is made due now;
    ///   returns None.
    pub async fn request_sync(&self, direction: Direction, id: i64, meta: &str) -> DbResult<Option<i64>> {
        match direction {
            Direction::Import => self.enqueue_import_sync(id, meta).await,
            Direction::Export => self.request_export_sync(id, meta).await.map(|()| None),
        }
    }

    async fn enqueue_import_sync(&self, storage_id: i64, meta: &str) -> DbResult<Option<i64>> {
        let at = now();
        let direction = Direction::Import;
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let job: Option<i64> = sqlx::query_scalar(
                "INSERT INTO jobs (kind, dedup_key, payload, status, run_after, created_at, updated_at)
                 VALUES ($1, $2, $3, 'queued', $4, $4, $4) ON CONFLICT DO NOTHING RETURNING id")
                .bind(direction.job_kind()).bind(direction.dedup_key(storage_id))
                .bind(Direction::payload(storage_id)).bind(&at).fetch_optional(&mut *tx).await?;
            if let Some(id) = job {
                sqlx::query("UPDATE import_storages SET status = 'queued', traceback = NULL, meta = $1, last_sync_job = $2 WHERE id = $3")
                    .bind(meta).bind(id.to_string()).bind(storage_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(job)
        })
    }
}

/// The database's clock plus `minutes_expr` minutes, in the stored time
/// format (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC): every process compares
/// against the same clock.
fn db_time_plus_minutes(pool: &crate::Pool, minutes_expr: &str) -> String {
    match pool {
        crate::Pool::Postgres(_) => format!(
            "to_char((now() + make_interval(mins => ({minutes_expr})::int)) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ),
        crate::Pool::Sqlite { .. } => {
            format!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', (({minutes_expr}) * 60) || ' seconds') || '000Z')")
        }
    }
}

impl Db {
    /// `UPDATE` (binding the storage id as `$1`) that sets a source
    /// storage's next interval sync to now + its interval (NULL without
    /// one), returning the row.
    fn schedule_sql(&self) -> String {
        format!(
            "UPDATE import_storages SET next_sync_at = CASE WHEN sync_interval IS NULL THEN NULL ELSE {} END \
             WHERE id = $1 RETURNING {}",
            db_time_plus_minutes(&self.pool, "sync_interval"),
            columns(Direction::Import)
        )
    }

    /// Interval sync: the source storages whose next sync is due, each
    /// moved on by its interval in the same statement — so, whatever the
    /// number of processes calling this, one of them gets each due storage
    /// once per interval (a row is updated by one statement at a time, and
    /// the others then no longer see it due). The caller queues their syncs.
    pub async fn claim_due_interval_syncs(&self) -> DbResult<Vec<i64>> {
        let now = db_time_plus_minutes(&self.pool, "0");
        // An idle tick only reads (SQLite's one writer is not taken).
        let any_due =
            format!("SELECT COUNT(*) FROM import_storages WHERE sync_interval IS NOT NULL AND next_sync_at <= {now}");
        let due: i64 = on_read!(self, p => sqlx::query_scalar::<_, i64>(&any_due).fetch_one(p).await)?;
        if due == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE import_storages SET next_sync_at = {} \
             WHERE sync_interval IS NOT NULL AND next_sync_at <= {now} AND project_id IS NOT NULL RETURNING id",
            db_time_plus_minutes(&self.pool, "sync_interval"),
        );
        Ok(on_write!(self, p => sqlx::query_scalar::<_, i64>(&sql).fetch_all(p).await)?)
    }
}

impl Db {
    /// Records that a bucket notification for source storage `id` was
    /// accepted now (shown as `last_notification`). Errors: the database's;
    /// a storage that is gone is no error (nothing to record).
    pub async fn note_notification(&self, id: i64) -> DbResult<()> {
        let at = now();
        on_write!(self, p => sqlx::query("UPDATE import_storages SET last_notification_at = $1 WHERE id = $2")
            .bind(&at).bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }
}
