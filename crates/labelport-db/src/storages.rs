//! Import storages and their links to tasks.

use crate::{not_found_if_none, now, on_read, on_write, Db, DbError, DbResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportStorageRow {
    pub id: i64,
    pub project_id: i64,
    pub storage_type: String,
    pub title: String,
    pub description: String,
    pub bucket: String,
    pub prefix: String,
    pub regex_filter: String,
    pub use_blob_urls: bool,
    pub presign: bool,
    pub presign_ttl: i64,
    pub recursive_scan: bool,
    pub google_project_id: String,
    pub credentials: Option<String>,
    pub deletion_policy: String,
    pub status: String,
    pub last_sync: Option<String>,
    pub last_sync_count: Option<i64>,
    pub last_sync_job: Option<String>,
    pub traceback: Option<String>,
    pub meta: String,
    pub created_at: String,
}

/// The settings of a storage a client edits.
#[derive(Debug, Clone)]
pub struct ImportStorageFields {
    pub title: String,
    pub description: String,
    pub bucket: String,
    pub prefix: String,
    pub regex_filter: String,
    pub use_blob_urls: bool,
    pub presign: bool,
    pub presign_ttl: i64,
    pub recursive_scan: bool,
    pub google_project_id: String,
    pub credentials: Option<String>,
    pub deletion_policy: String,
}

impl From<&ImportStorageRow> for ImportStorageFields {
    fn from(r: &ImportStorageRow) -> Self {
        ImportStorageFields {
            title: r.title.clone(),
            description: r.description.clone(),
            bucket: r.bucket.clone(),
            prefix: r.prefix.clone(),
            regex_filter: r.regex_filter.clone(),
            use_blob_urls: r.use_blob_urls,
            presign: r.presign,
            presign_ttl: r.presign_ttl,
            recursive_scan: r.recursive_scan,
            google_project_id: r.google_project_id.clone(),
            credentials: r.credentials.clone(),
            deletion_policy: r.deletion_policy.clone(),
        }
    }
}

const STORAGE_COLUMNS: &str = "id, project_id, storage_type, title, description, bucket, prefix, regex_filter, \
    use_blob_urls, presign, presign_ttl, recursive_scan, google_project_id, credentials, deletion_policy, status, \
    last_sync, last_sync_count, last_sync_job, traceback, meta, created_at";

/// A link as the sync engine sees it when comparing with a listing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkState {
    pub object_key: String,
    pub row_index: i64,
    pub generation: i64,
    pub etag: String,
    pub task_id: i64,
    pub object_exists: bool,
}

/// What a finished or progressing sync writes on its storage.
#[derive(Debug, Clone)]
pub struct StorageStatus {
    pub status: String,
    pub last_sync: Option<String>,
    pub last_sync_count: Option<i64>,
    pub last_sync_job: Option<String>,
    pub traceback: Option<String>,
    pub meta: String,
}

impl Db {
    pub async fn create_import_storage(
        &self,
        project_id: i64,
        storage_type: &str,
        f: &ImportStorageFields,
    ) -> DbResult<ImportStorageRow> {
        let sql = format!(
            "INSERT INTO import_storages (project_id, storage_type, title, description, bucket, prefix, regex_filter,
             use_blob_urls, presign, presign_ttl, recursive_scan, google_project_id, credentials, deletion_policy, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {STORAGE_COLUMNS}"
        );
        let at = now();
        Ok(on_write!(self, p => sqlx::query_as::<_, ImportStorageRow>(&sql)
            .bind(project_id).bind(storage_type).bind(&f.title).bind(&f.description).bind(&f.bucket)
            .bind(&f.prefix).bind(&f.regex_filter).bind(f.use_blob_urls).bind(f.presign).bind(f.presign_ttl)
            .bind(f.recursive_scan).bind(&f.google_project_id).bind(&f.credentials).bind(&f.deletion_policy).bind(&at)
            .fetch_one(p).await)?)
    }

    pub async fn get_import_storage(&self, id: i64) -> DbResult<ImportStorageRow> {
        let sql = format!("SELECT {STORAGE_COLUMNS} FROM import_storages WHERE id = $1");
        not_found_if_none(
            on_read!(self, p => sqlx::query_as::<_, ImportStorageRow>(&sql).bind(id).fetch_optional(p).await)?,
        )
    }

    /// Storages of a type, of one project or all, in id order.
    pub async fn list_import_storages(
        &self,
        storage_type: Option<&str>,
        project_id: Option<i64>,
    ) -> DbResult<Vec<ImportStorageRow>> {
        let mut sql = format!("SELECT {STORAGE_COLUMNS} FROM import_storages WHERE 1 = 1");
        let mut n = 0;
        if storage_type.is_some() {
            n += 1;
            sql.push_str(&format!(" AND storage_type = ${n}"));
        }
        if project_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND project_id = ${n}"));
        }
        sql.push_str(" ORDER BY id");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, ImportStorageRow>(&sql);
            if let Some(t) = storage_type {
                q = q.bind(t);
            }
            if let Some(id) = project_id {
                q = q.bind(id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    pub async fn update_import_storage(&self, id: i64, f: &ImportStorageFields) -> DbResult<ImportStorageRow> {
        let sql = format!(
            "UPDATE import_storages SET title = $1, description = $2, bucket = $3, prefix = $4, regex_filter = $5,
             use_blob_urls = $6, presign = $7, presign_ttl = $8, recursive_scan = $9, google_project_id = $10,
             credentials = $11, deletion_policy = $12 WHERE id = $13 RETURNING {STORAGE_COLUMNS}"
        );
        not_found_if_none(on_write!(self, p => sqlx::query_as::<_, ImportStorageRow>(&sql)
            .bind(&f.title).bind(&f.description).bind(&f.bucket).bind(&f.prefix).bind(&f.regex_filter)
            .bind(f.use_blob_urls).bind(f.presign).bind(f.presign_ttl).bind(f.recursive_scan)
            .bind(&f.google_project_id).bind(&f.credentials).bind(&f.deletion_policy).bind(id)
            .fetch_optional(p).await)?)
    }

    /// Deletes the storage and its links; its tasks stay (as Label Studio).
    pub async fn delete_import_storage(&self, id: i64) -> DbResult<()> {
        let n = on_write!(self, p => sqlx::query("DELETE FROM import_storages WHERE id = $1").bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    pub async fn set_storage_status(&self, id: i64, s: &StorageStatus) -> DbResult<()> {
        let sql = "UPDATE import_storages SET status = $1, last_sync = $2, last_sync_count = $3, last_sync_job = $4,
                   traceback = $5, meta = $6 WHERE id = $7";
        on_write!(self, p => sqlx::query(sql).bind(&s.status).bind(&s.last_sync).bind(s.last_sync_count)
            .bind(&s.last_sync_job).bind(&s.traceback).bind(&s.meta).bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Queues a sync job for a storage and marks it `queued`, in one
    /// transaction; None (and no change) when one is already queued or
    /// running.
    pub async fn enqueue_storage_sync(
        &self,
        storage_id: i64,
        kind: &str,
        dedup_key: &str,
        payload: &str,
        meta: &str,
    ) -> DbResult<Option<i64>> {
        let at = now();
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let job: Option<i64> = sqlx::query_scalar(
                "INSERT INTO jobs (kind, dedup_key, payload, status, run_after, created_at, updated_at)
                 VALUES ($1, $2, $3, 'queued', $4, $4, $4) ON CONFLICT DO NOTHING RETURNING id")
                .bind(kind).bind(dedup_key).bind(payload).bind(&at).fetch_optional(&mut *tx).await?;
            if let Some(id) = job {
                sqlx::query("UPDATE import_storages SET status = 'queued', traceback = NULL, meta = $1, last_sync_job = $2 WHERE id = $3")
                    .bind(meta).bind(id.to_string()).bind(storage_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(job)
        })
    }

    /// Links of a storage with `after < object_key <= upto` (None: open end),
    /// in key order: what a listing page is compared with.
    pub async fn links_in_range(
        &self,
        storage_id: i64,
        after: Option<&str>,
        upto: Option<&str>,
    ) -> DbResult<Vec<LinkState>> {
        let mut sql = String::from(
            "SELECT object_key, row_index, generation, etag, task_id, object_exists FROM import_storage_links
             WHERE storage_id = $1",
        );
        let mut n = 1;
        if after.is_some() {
            n += 1;
            sql.push_str(&format!(" AND object_key > ${n}"));
        }
        if upto.is_some() {
            n += 1;
            sql.push_str(&format!(" AND object_key <= ${n}"));
        }
        sql.push_str(" ORDER BY object_key, row_index");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, LinkState>(&sql).bind(storage_id);
            if let Some(a) = after {
                q = q.bind(a);
            }
            if let Some(u) = upto {
                q = q.bind(u);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    /// Links of one object, by row index.
    pub async fn links_of_object(&self, storage_id: i64, key: &str) -> DbResult<Vec<LinkState>> {
        let sql = "SELECT object_key, row_index, generation, etag, task_id, object_exists FROM import_storage_links
                   WHERE storage_id = $1 AND object_key = $2 ORDER BY row_index";
        Ok(on_read!(self, p => sqlx::query_as::<_, LinkState>(sql).bind(storage_id).bind(key).fetch_all(p).await)?)
    }

    /// Marks an object's links present or missing (`flag` policy).
    pub async fn set_object_exists(&self, storage_id: i64, key: &str, exists: bool) -> DbResult<u64> {
        let sql = "UPDATE import_storage_links SET object_exists = $1 WHERE storage_id = $2 AND object_key = $3";
        Ok(
            on_write!(self, p => sqlx::query(sql).bind(exists).bind(storage_id).bind(key).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Flags the links of `key` with `row_index >= from_row` as missing.
    pub async fn flag_rows_from(&self, storage_id: i64, key: &str, from_row: i64) -> DbResult<u64> {
        let sql = "UPDATE import_storage_links SET object_exists = FALSE
                   WHERE storage_id = $1 AND object_key = $2 AND row_index >= $3";
        Ok(
            on_write!(self, p => sqlx::query(sql).bind(storage_id).bind(key).bind(from_row).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Replaces the data of existing tasks of an object whose content
    /// changed and, when given, records the object's generation and etag on
    /// all its links.
    pub async fn update_linked_tasks(
        &self,
        storage_id: i64,
        key: &str,
        generation: Option<(i64, &str)>,
        updates: &[(i64, String)],
    ) -> DbResult<()> {
        let at = now();
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            for (task_id, data) in updates {
                sqlx::query("UPDATE tasks SET data = $1, updated_at = $2 WHERE id = $3")
                    .bind(data).bind(&at).bind(*task_id).execute(&mut *tx).await?;
            }
            if let Some((generation, etag)) = generation {
                sqlx::query("UPDATE import_storage_links SET generation = $1, etag = $2, object_exists = TRUE
                             WHERE storage_id = $3 AND object_key = $4")
                    .bind(generation).bind(etag).bind(storage_id).bind(key).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Deletes the tasks linked to `key` (only rows with `row_index >=
    /// from_row`) that have no annotations; flags the annotated ones as
    /// missing. Returns (deleted, flagged).
    pub async fn remove_unannotated_linked_tasks(
        &self,
        storage_id: i64,
        key: &str,
        from_row: i64,
    ) -> DbResult<(u64, u64)> {
        let ids_sql = "SELECT t.id, t.project_id, t.total_predictions FROM tasks t JOIN import_storage_links l ON l.task_id = t.id
                       WHERE l.storage_id = $1 AND l.object_key = $2 AND l.row_index >= $3
                       AND t.total_annotations = 0 AND t.cancelled_annotations = 0";
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let doomed: Vec<(i64, i64, i64)> = sqlx::query_as(ids_sql).bind(storage_id).bind(key).bind(from_row)
                .fetch_all(&mut *tx).await?;
            for (task_id, project_id, predictions) in &doomed {
                sqlx::query("DELETE FROM tasks WHERE id = $1").bind(*task_id).execute(&mut *tx).await?;
                sqlx::query(crate::tasks::APPLY_PROJECT_DELTA).bind(-1i64).bind(0i64).bind(0i64).bind(0i64)
                    .bind(-*predictions).bind(0i64).bind(*project_id).execute(&mut *tx).await?;
            }
            let flagged = sqlx::query("UPDATE import_storage_links SET object_exists = FALSE
                                       WHERE storage_id = $1 AND object_key = $2 AND row_index >= $3")
                .bind(storage_id).bind(key).bind(from_row).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok((doomed.len() as u64, flagged))
        })
    }

    /// How many tasks a storage has made (for `meta`).
    pub async fn count_links(&self, storage_id: i64) -> DbResult<i64> {
        let sql = "SELECT COUNT(*) FROM import_storage_links WHERE storage_id = $1";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).bind(storage_id).fetch_one(p).await)?)
    }

    /// Storage link facts of tasks (for rendering): (task_id, key, exists).
    pub async fn links_of_tasks(&self, task_ids: &[i64]) -> DbResult<Vec<(i64, String, bool)>> {
        if task_ids.is_empty() {
            return Ok(vec![]);
        }
        let list = crate::placeholders(&self.pool, 1, task_ids.len());
        let sql =
            format!("SELECT task_id, object_key, object_exists FROM import_storage_links WHERE task_id IN {list}");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, (i64, String, bool)>(&sql);
            for id in task_ids {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }
}
