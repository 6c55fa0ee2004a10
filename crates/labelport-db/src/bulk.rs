//! Multi-row writes of a bulk import (`Db::import_linked_tasks`), in the
//! form each backend writes fastest (issue 18, item 4):
//!
//! - SQLite: multi-row `INSERT … VALUES (?,…),(?,…)` of up to 1,000 rows,
//!   whose plain `?` placeholders SQLite binds in constant time each.
//! - PostgreSQL: one `INSERT … SELECT … FROM UNNEST($1::text[], …)` per
//!   batch, each column bound as one array: 11 parameters instead of
//!   12,000, so the statement is parsed and planned once and the rows
//!   travel as arrays in PostgreSQL's binary format.
//!
//! Both answer the same values (ids, kept links), so the caller is the
//! same code.

use sqlx::{PgConnection, SqliteConnection};

use crate::tasks::LinkSpec;

/// Task rows per SQLite statement: 12 values each, well under SQLite's
/// 32,766 bound variables.
const SQLITE_ROWS: usize = 1000;

/// One task row to insert (the columns an import sets).
pub(crate) struct TaskInsert {
    pub data: String,
    pub meta: String,
    pub inner_id: i64,
    pub is_labeled: bool,
    pub allow_skip: bool,
    pub total_annotations: i64,
    pub cancelled_annotations: i64,
    pub total_predictions: i64,
}

/// Bulk inserts on one backend's connection (inside the caller's
/// transaction).
pub(crate) trait BulkRows {
    /// Inserts `rows` into project `project_id` (overlap
    /// `maximum_annotations`, times `at`); answers `(id, inner_id)` of each.
    /// `ids`, when given, are the rows' task ids (`ids[i]` for `rows[i]`,
    /// set aside by [`crate::Db::reserve_import`]; PostgreSQL only),
    /// otherwise the database numbers them.
    async fn insert_tasks(
        &mut self,
        project_id: i64,
        maximum_annotations: i64,
        at: &str,
        rows: &[TaskInsert],
        ids: Option<&[i64]>,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error>;

    /// Inserts a storage link per `(task_id, spec)`, skipping those a link
    /// already holds (`ON CONFLICT DO NOTHING`); answers the task ids whose
    /// link was written.
    async fn insert_links(
        &mut self,
        storage_id: i64,
        at: &str,
        links: &[(i64, &LinkSpec)],
    ) -> Result<Vec<i64>, sqlx::Error>;
}

impl BulkRows for SqliteConnection {
    /// Without `RETURNING`: sqlx hands each returned row from SQLite's
    /// thread to the caller through a channel, which cost more than the
    /// insert itself. A multi-row INSERT into an AUTOINCREMENT table gives
    /// its rows consecutive ids in VALUES order, the last one being
    /// `last_insert_rowid()` (<https://sqlite.org/autoinc.html>); one
    /// counting query in SQLite checks that each id holds the inner id
    /// expected, and any mismatch reads the ids back instead.
    async fn insert_tasks(
        &mut self,
        project_id: i64,
        maximum_annotations: i64,
        at: &str,
        rows: &[TaskInsert],
        ids: Option<&[i64]>,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        if ids.is_some() {
            // SQLite has one writer: its batches reserve inside their own
            // transaction (`Db::reserve_import` answers None there).
            return Err(sqlx::Error::Protocol("task ids are reserved on PostgreSQL only".into()));
        }
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(SQLITE_ROWS) {
            let sql = format!(
                "INSERT INTO tasks (project_id, data, meta, inner_id, overlap, is_labeled, allow_skip,
                 total_annotations, cancelled_annotations, total_predictions, created_at, updated_at)
                 VALUES {}",
                crate::placeholder_groups(false, chunk.len(), 12)
            );
            let mut q = sqlx::query(&sql);
            for t in chunk {
                q = q
                    .bind(project_id)
                    .bind(&t.data)
                    .bind(&t.meta)
                    .bind(t.inner_id)
                    .bind(maximum_annotations)
                    .bind(t.is_labeled)
                    .bind(t.allow_skip)
                    .bind(t.total_annotations)
                    .bind(t.cancelled_annotations)
                    .bind(t.total_predictions)
                    .bind(at)
                    .bind(at);
            }
            let done = q.execute(&mut *self).await?;
            let n = chunk.len() as i64;
            let first = done.last_insert_rowid() - n + 1;
            // Inner ids of a chunk are consecutive too (one reservation).
            let offset = chunk[0].inner_id - first;
            let consecutive = chunk.windows(2).all(|w| w[1].inner_id == w[0].inner_id + 1);
            let matching: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tasks WHERE id BETWEEN $1 AND $2 AND project_id = $3 AND inner_id - id = $4",
            )
            .bind(first)
            .bind(first + n - 1)
            .bind(project_id)
            .bind(offset)
            .fetch_one(&mut *self)
            .await?;
            if consecutive && done.rows_affected() == n as u64 && matching == n {
                out.extend(chunk.iter().zip(first..).map(|(t, id)| (id, t.inner_id)));
            } else {
                let (low, high) = chunk
                    .iter()
                    .fold((i64::MAX, i64::MIN), |(l, h), t| (l.min(t.inner_id), h.max(t.inner_id)));
                out.extend(
                    sqlx::query_as::<_, (i64, i64)>(
                        "SELECT id, inner_id FROM tasks WHERE project_id = $1 AND inner_id BETWEEN $2 AND $3",
                    )
                    .bind(project_id)
                    .bind(low)
                    .bind(high)
                    .fetch_all(&mut *self)
                    .await?,
                );
            }
        }
        Ok(out)
    }

    /// Without `RETURNING` too: when every link was written (the usual
    /// case), they all were kept; otherwise the chunk's links are read.
    async fn insert_links(
        &mut self,
        storage_id: i64,
        at: &str,
        links: &[(i64, &LinkSpec)],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut kept = Vec::with_capacity(links.len());
        for chunk in links.chunks(SQLITE_ROWS) {
            let sql = format!(
                "INSERT INTO import_storage_links (storage_id, task_id, object_key, row_index, generation, etag, created_at)
                 VALUES {} ON CONFLICT DO NOTHING",
                crate::placeholder_groups(false, chunk.len(), 7)
            );
            let mut q = sqlx::query(&sql);
            for (task_id, spec) in chunk {
                q = q
                    .bind(storage_id)
                    .bind(*task_id)
                    .bind(&spec.key)
                    .bind(spec.row_index)
                    .bind(spec.generation)
                    .bind(&spec.etag)
                    .bind(at);
            }
            let written = q.execute(&mut *self).await?.rows_affected();
            if written == chunk.len() as u64 {
                kept.extend(chunk.iter().map(|(id, _)| *id));
                continue;
            }
            let sql = format!(
                "SELECT task_id FROM import_storage_links WHERE storage_id = ? AND task_id IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(storage_id);
            for (task_id, _) in chunk {
                q = q.bind(*task_id);
            }
            kept.extend(q.fetch_all(&mut *self).await?);
        }
        Ok(kept)
    }
}

impl BulkRows for PgConnection {
    async fn insert_tasks(
        &mut self,
        project_id: i64,
        maximum_annotations: i64,
        at: &str,
        rows: &[TaskInsert],
        ids: Option<&[i64]>,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        let column = |f: fn(&TaskInsert) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let data: Vec<&str> = rows.iter().map(|t| t.data.as_str()).collect();
        let meta: Vec<&str> = rows.iter().map(|t| t.meta.as_str()).collect();
        let labeled: Vec<bool> = rows.iter().map(|t| t.is_labeled).collect();
        let allow_skip: Vec<bool> = rows.iter().map(|t| t.allow_skip).collect();
        if let Some(ids) = ids {
            // The ids are known: nothing to read back.
            let written = sqlx::query(
                "INSERT INTO tasks (id, project_id, data, meta, inner_id, overlap, is_labeled, allow_skip,
                 total_annotations, cancelled_annotations, total_predictions, created_at, updated_at)
                 SELECT n, $1, d, m, i, $2, l, s, t, c, p, $3, $3
                 FROM UNNEST($4::text[], $5::text[], $6::bigint[], $7::bool[], $8::bool[], $9::bigint[],
                             $10::bigint[], $11::bigint[], $12::bigint[]) AS u(d, m, i, l, s, t, c, p, n)
                 ORDER BY n",
            )
            .bind(project_id)
            .bind(maximum_annotations)
            .bind(at)
            .bind(data)
            .bind(meta)
            .bind(column(|t| t.inner_id))
            .bind(labeled)
            .bind(allow_skip)
            .bind(column(|t| t.total_annotations))
            .bind(column(|t| t.cancelled_annotations))
            .bind(column(|t| t.total_predictions))
            .bind(ids)
            .execute(&mut *self)
            .await?
            .rows_affected();
            if written != rows.len() as u64 || ids.len() != rows.len() {
                return Err(sqlx::Error::Protocol(format!(
                    "{written} of {} reserved task rows were written",
                    rows.len()
                )));
            }
            return Ok(ids.iter().copied().zip(rows.iter().map(|t| t.inner_id)).collect());
        }
        sqlx::query_as::<_, (i64, i64)>(
            "INSERT INTO tasks (project_id, data, meta, inner_id, overlap, is_labeled, allow_skip,
             total_annotations, cancelled_annotations, total_predictions, created_at, updated_at)
             SELECT $1, d, m, i, $2, l, s, t, c, p, $3, $3
             FROM UNNEST($4::text[], $5::text[], $6::bigint[], $7::bool[], $8::bool[], $9::bigint[],
                         $10::bigint[], $11::bigint[]) AS u(d, m, i, l, s, t, c, p)
             ORDER BY i
             RETURNING id, inner_id",
        )
        .bind(project_id)
        .bind(maximum_annotations)
        .bind(at)
        .bind(data)
        .bind(meta)
        .bind(column(|t| t.inner_id))
        .bind(labeled)
        .bind(allow_skip)
        .bind(column(|t| t.total_annotations))
        .bind(column(|t| t.cancelled_annotations))
        .bind(column(|t| t.total_predictions))
        .fetch_all(&mut *self)
        .await
    }

    async fn insert_links(
        &mut self,
        storage_id: i64,
        at: &str,
        links: &[(i64, &LinkSpec)],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let tasks: Vec<i64> = links.iter().map(|(id, _)| *id).collect();
        let keys: Vec<&str> = links.iter().map(|(_, s)| s.key.as_str()).collect();
        let rows: Vec<i64> = links.iter().map(|(_, s)| s.row_index).collect();
        let generations: Vec<i64> = links.iter().map(|(_, s)| s.generation).collect();
        let etags: Vec<&str> = links.iter().map(|(_, s)| s.etag.as_str()).collect();
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO import_storage_links (storage_id, task_id, object_key, row_index, generation, etag, created_at)
             SELECT $1, t, k, r, g, e, $2
             FROM UNNEST($3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[]) AS u(t, k, r, g, e)
             ON CONFLICT DO NOTHING RETURNING task_id",
        )
        .bind(storage_id)
        .bind(at)
        .bind(tasks)
        .bind(keys)
        .bind(rows)
        .bind(generations)
        .bind(etags)
        .fetch_all(&mut *self)
        .await
    }
}
