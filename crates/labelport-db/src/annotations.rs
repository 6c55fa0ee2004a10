//! Annotations; every change refreshes its task's counters in the same
//! transaction so task and project counts never drift.

use crate::{not_found_if_none, now, on_read, on_write, placeholders, Db, DbError, DbResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AnnotationRow {
    pub id: i64,
    pub task_id: i64,
    pub project_id: i64,
    pub result: String,
    pub completed_by: Option<i64>,
    pub updated_by: Option<i64>,
    pub was_cancelled: bool,
    pub ground_truth: bool,
    pub lead_time: Option<f64>,
    pub last_action: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Bumped on every update (what export storages compare with).
    pub version: i64,
}

const ANNOTATION_COLUMNS: &str = "id, task_id, project_id, result, completed_by, updated_by, was_cancelled, \
    ground_truth, lead_time, last_action, created_at, updated_at, version";

/// The fields of an annotation a client sets.
#[derive(Debug, Clone)]
pub struct AnnotationFields {
    pub result: String,
    pub was_cancelled: bool,
    pub ground_truth: bool,
    pub lead_time: Option<f64>,
}

impl Db {
    pub async fn create_annotation(
        &self,
        task_id: i64,
        fields: &AnnotationFields,
        user_id: i64,
    ) -> DbResult<AnnotationRow> {
        let at = now();
        let sql = format!(
            "INSERT INTO annotations (task_id, project_id, result, completed_by, updated_by, was_cancelled,
             ground_truth, lead_time, created_at, updated_at)
             SELECT id, project_id, $1, $2, $2, $3, $4, $5, $6, $6 FROM tasks WHERE id = $7
             RETURNING {ANNOTATION_COLUMNS}"
        );
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as::<_, AnnotationRow>(&sql)
                .bind(&fields.result).bind(user_id).bind(fields.was_cancelled).bind(fields.ground_truth)
                .bind(fields.lead_time).bind(&at).bind(task_id)
                .fetch_optional(&mut *tx).await?;
            let row = not_found_if_none(row)?;
            crate::refresh_task_counters!(tx, task_id);
            crate::queue_annotation_export!(tx, row.id);
            tx.commit().await?;
            Ok(row)
        })
    }

    pub async fn get_annotation(&self, id: i64) -> DbResult<AnnotationRow> {
        let sql = format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE id = $1");
        not_found_if_none(
            on_read!(self, p => sqlx::query_as::<_, AnnotationRow>(&sql).bind(id).fetch_optional(p).await)?,
        )
    }

    pub async fn annotations_of_task(&self, task_id: i64) -> DbResult<Vec<AnnotationRow>> {
        self.annotations_of_tasks(&[task_id]).await
    }

    /// Annotations by id, in id order (missing ones are left out).
    pub async fn annotations_by_ids(&self, ids: &[i64]) -> DbResult<Vec<AnnotationRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let list = placeholders(&self.pool, 1, ids.len());
        let sql = format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE id IN {list} ORDER BY id");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, AnnotationRow>(&sql);
            for id in ids {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    /// Annotations of several tasks, in task then id order.
    pub async fn annotations_of_tasks(&self, task_ids: &[i64]) -> DbResult<Vec<AnnotationRow>> {
        if task_ids.is_empty() {
            return Ok(vec![]);
        }
        let list = placeholders(&self.pool, 1, task_ids.len());
        let sql = format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE task_id IN {list} ORDER BY task_id, id");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, AnnotationRow>(&sql);
            for id in task_ids {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    pub async fn update_annotation(&self, id: i64, fields: &AnnotationFields, user_id: i64) -> DbResult<AnnotationRow> {
        let at = now();
        let sql = format!(
            "UPDATE annotations SET result = $1, was_cancelled = $2, ground_truth = $3, lead_time = $4,
             updated_by = $5, updated_at = $6, last_action = NULL, version = version + 1 WHERE id = $7 RETURNING {ANNOTATION_COLUMNS}"
        );
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as::<_, AnnotationRow>(&sql)
                .bind(&fields.result).bind(fields.was_cancelled).bind(fields.ground_truth)
                .bind(fields.lead_time).bind(user_id).bind(&at).bind(id)
                .fetch_optional(&mut *tx).await?;
            let row = not_found_if_none(row)?;
            crate::refresh_task_counters!(tx, row.task_id);
            crate::queue_annotation_export!(tx, row.id);
            tx.commit().await?;
            Ok(row)
        })
    }

    pub async fn delete_annotation(&self, id: i64) -> DbResult<AnnotationRow> {
        let sql = format!("DELETE FROM annotations WHERE id = $1 RETURNING {ANNOTATION_COLUMNS}");
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            crate::queue_export_deletions!(tx, "SELECT CAST($1 AS BIGINT)", id, true);
            let row = sqlx::query_as::<_, AnnotationRow>(&sql).bind(id).fetch_optional(&mut *tx).await?;
            let row = row.ok_or(DbError::NotFound)?;
            crate::refresh_task_counters!(tx, row.task_id);
            tx.commit().await?;
            Ok(row)
        })
    }
}
