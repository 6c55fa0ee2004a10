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
}

impl Db {
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
