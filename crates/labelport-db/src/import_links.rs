//! Import storages' links to the tasks they made: what the sync engine
//! compares a listing with, and how vanished objects are applied.

use crate::{now, on_read, on_write, Db, DbResult};

/// A link as the sync engine sees it when comparing with a listing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkState {
    pub object_key: String,
    pub row_index: i64,
    pub generation: i64,
    pub etag: String,
    pub task_id: i64,
    pub object_exists: bool,
    /// [`Db::links_in_range`]: the link was made at or after its `since`
    /// (by someone else than the sync asking). False elsewhere.
    pub made_since: bool,
}

/// In a transaction, before an import storage is deleted or its bucket
/// changes: its links become orphans of its project and (current) bucket,
/// so the tasks they made can be adopted by a storage of that bucket later
/// (`adopt_import_links!`), not imported again. Label Studio keeps the
/// tasks of a deleted storage too, but a new storage duplicates them.
#[macro_export]
#[doc(hidden)]
macro_rules! orphan_import_links {
    ($tx:ident, $storage_id:expr) => {{
        sqlx::query(
            "INSERT INTO import_orphan_links
                 (project_id, bucket, object_key, row_index, generation, etag, object_exists, task_id, created_at)
             SELECT s.project_id, s.bucket, l.object_key, l.row_index, l.generation, l.etag, l.object_exists,
                    l.task_id, l.created_at
             FROM import_storage_links l JOIN import_storages s ON s.id = l.storage_id
             WHERE l.storage_id = $1
             ON CONFLICT (project_id, bucket, object_key, row_index) DO NOTHING",
        )
        .bind($storage_id)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("DELETE FROM import_storage_links WHERE storage_id = $1")
            .bind($storage_id)
            .execute(&mut *$tx)
            .await?;
    }};
}

/// In a transaction, after an import storage is created or changed: the
/// orphan links of its project and bucket under its prefix (`$prefix`,
/// normalised) become its own.
#[macro_export]
#[doc(hidden)]
macro_rules! adopt_import_links {
    ($tx:ident, $storage_id:expr, $prefix:expr) => {{
        let prefix: String = $prefix;
        let scope = "o.project_id = s.project_id AND o.bucket = s.bucket
                     AND substr(o.object_key, 1, length($2)) = $2";
        sqlx::query(&format!(
            "INSERT INTO import_storage_links
                 (storage_id, task_id, object_key, row_index, generation, etag, object_exists, created_at)
             SELECT s.id, o.task_id, o.object_key, o.row_index, o.generation, o.etag, o.object_exists, o.created_at
             FROM import_orphan_links o JOIN import_storages s ON {scope}
             WHERE s.id = $1
             ON CONFLICT (storage_id, object_key, row_index) DO NOTHING"
        ))
        .bind($storage_id)
        .bind(&prefix)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM import_orphan_links WHERE EXISTS (
                 SELECT 1 FROM import_storages s, import_orphan_links o
                 WHERE s.id = $1 AND {scope}
                   AND o.project_id = import_orphan_links.project_id AND o.bucket = import_orphan_links.bucket
                   AND o.object_key = import_orphan_links.object_key AND o.row_index = import_orphan_links.row_index)"
        ))
        .bind($storage_id)
        .bind(&prefix)
        .execute(&mut *$tx)
        .await?;
    }};
}

impl Db {
    /// Orphan links kept for `project_id` (deleted storages, changed
    /// buckets), for tests and diagnostics.
    pub async fn count_orphan_links(&self, project_id: i64) -> DbResult<i64> {
        let sql = "SELECT COUNT(*) FROM import_orphan_links WHERE project_id = $1";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).bind(project_id).fetch_one(p).await)?)
    }

    /// Links of a storage with `after < object_key <= upto` (None: open end),
    /// in key order: what a listing page is compared with. `made_since` is
    /// set on links made at or after `since` ([`now`]'s format). The etag
    /// is left empty: a comparison with a listing needs the generation only.
    pub async fn links_in_range(
        &self,
        storage_id: i64,
        after: Option<&str>,
        upto: Option<&str>,
        since: &str,
    ) -> DbResult<Vec<LinkState>> {
        let mut sql = String::from(
            "SELECT object_key, row_index, generation, '' AS etag, task_id, object_exists,
                    (created_at >= $1) AS made_since
             FROM import_storage_links WHERE storage_id = $2",
        );
        let mut n = 2;
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
            let mut q = sqlx::query_as::<_, LinkState>(&sql).bind(since).bind(storage_id);
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
        let sql = "SELECT object_key, row_index, generation, etag, task_id, object_exists, FALSE AS made_since
                   FROM import_storage_links WHERE storage_id = $1 AND object_key = $2 ORDER BY row_index";
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
                // A row whose data did not change is not written (a file
                // read again after a cut keeps its tasks' updated_at).
                sqlx::query("UPDATE tasks SET data = $1, updated_at = $2 WHERE id = $3 AND data <> $1")
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
            let mut deleted = 0u64;
            for (task_id, project_id, predictions) in &doomed {
                let inner: Option<i64> = sqlx::query_scalar("DELETE FROM tasks WHERE id = $1 RETURNING inner_id")
                    .bind(*task_id).fetch_optional(&mut *tx).await?;
                // Counted only when this transaction deleted it (a task
                // deleted meanwhile through the API was counted there).
                let Some(inner) = inner else { continue };
                deleted += 1;
                sqlx::query(crate::tasks::APPLY_PROJECT_DELTA).bind(-1i64).bind(0i64).bind(0i64).bind(0i64)
                    .bind(-*predictions).bind(0i64).bind(*project_id).execute(&mut *tx).await?;
                // After the project row is locked (above): one lock order.
                crate::record_task_gap!(tx, *project_id, inner);
            }
            let flagged = sqlx::query("UPDATE import_storage_links SET object_exists = FALSE
                                       WHERE storage_id = $1 AND object_key = $2 AND row_index >= $3")
                .bind(storage_id).bind(key).bind(from_row).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok((deleted, flagged))
        })
    }

    /// How many tasks a storage has made (for `meta`).
    pub async fn count_links(&self, storage_id: i64) -> DbResult<i64> {
        let sql = "SELECT COUNT(*) FROM import_storage_links WHERE storage_id = $1";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).bind(storage_id).fetch_one(p).await)?)
    }

    /// The highest link id of any storage (0 when there is none): a mark
    /// taken when a sync job starts, so that [`Db::count_links_after`] later
    /// counts the links (one per task) that job made, over all its attempts.
    /// Link ids only grow (SQLite `AUTOINCREMENT`, PostgreSQL sequence).
    pub async fn last_link_id(&self) -> DbResult<i64> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM import_storage_links";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await)?)
    }

    /// Links of a storage made after the mark `after_id` (a
    /// [`Db::last_link_id`]).
    pub async fn count_links_after(&self, storage_id: i64, after_id: i64) -> DbResult<i64> {
        let sql = "SELECT COUNT(*) FROM import_storage_links WHERE storage_id = $1 AND id > $2";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).bind(storage_id).bind(after_id).fetch_one(p).await)?)
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
