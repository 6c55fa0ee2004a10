//! Predictions (model pre-annotations) of tasks.

use labelport_domain::import::NewPrediction;

use crate::{not_found_if_none, now, on_read, on_write, placeholders, Db, DbError, DbResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PredictionRow {
    pub id: i64,
    pub task_id: i64,
    pub project_id: i64,
    pub result: String,
    pub score: Option<f64>,
    pub model_version: String,
    pub created_at: String,
    pub updated_at: String,
}

const PREDICTION_COLUMNS: &str = "id, task_id, project_id, result, score, model_version, created_at, updated_at";

/// Which predictions to list.
#[derive(Debug, Clone, Copy)]
pub enum PredictionFilter {
    Task(i64),
    Project(i64),
    All,
}

impl Db {
    pub async fn create_prediction(&self, task_id: i64, new: &NewPrediction) -> DbResult<PredictionRow> {
        let at = now();
        let sql = format!(
            "INSERT INTO predictions (task_id, project_id, result, score, model_version, created_at, updated_at)
             SELECT id, project_id, $1, $2, $3, $4, $4 FROM tasks WHERE id = $5 RETURNING {PREDICTION_COLUMNS}"
        );
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as::<_, PredictionRow>(&sql)
                .bind(new.result.to_string()).bind(new.score).bind(&new.model_version).bind(&at).bind(task_id)
                .fetch_optional(&mut *tx).await?;
            let row = not_found_if_none(row)?;
            crate::refresh_task_counters!(tx, task_id);
            tx.commit().await?;
            Ok(row)
        })
    }

    pub async fn get_prediction(&self, id: i64) -> DbResult<PredictionRow> {
        let sql = format!("SELECT {PREDICTION_COLUMNS} FROM predictions WHERE id = $1");
        not_found_if_none(
            on_read!(self, p => sqlx::query_as::<_, PredictionRow>(&sql).bind(id).fetch_optional(p).await)?,
        )
    }

    /// A page of predictions in id order: `limit` rows after the first
    /// `offset` (keyset would need an id cursor Label Studio's API lacks).
    pub async fn list_predictions(
        &self,
        filter: PredictionFilter,
        offset: i64,
        limit: i64,
    ) -> DbResult<Vec<PredictionRow>> {
        let (clause, id) = match filter {
            PredictionFilter::Task(id) => ("WHERE task_id = $1", id),
            PredictionFilter::Project(id) => ("WHERE project_id = $1", id),
            PredictionFilter::All => ("WHERE $1 = $1", 0),
        };
        let sql = format!("SELECT {PREDICTION_COLUMNS} FROM predictions {clause} ORDER BY id LIMIT $2 OFFSET $3");
        Ok(
            on_read!(self, p => sqlx::query_as::<_, PredictionRow>(&sql).bind(id).bind(limit).bind(offset)
            .fetch_all(p).await)?,
        )
    }

    pub async fn predictions_of_tasks(&self, task_ids: &[i64]) -> DbResult<Vec<PredictionRow>> {
        if task_ids.is_empty() {
            return Ok(vec![]);
        }
        let list = placeholders(&self.pool, 1, task_ids.len());
        let sql = format!("SELECT {PREDICTION_COLUMNS} FROM predictions WHERE task_id IN {list} ORDER BY task_id, id");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, PredictionRow>(&sql);
            for id in task_ids {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    pub async fn update_prediction(&self, id: i64, new: &NewPrediction) -> DbResult<PredictionRow> {
        let at = now();
        let sql = format!(
            "UPDATE predictions SET result = $1, score = $2, model_version = $3, updated_at = $4 WHERE id = $5
             RETURNING {PREDICTION_COLUMNS}"
        );
        not_found_if_none(on_write!(self, p => sqlx::query_as::<_, PredictionRow>(&sql)
            .bind(new.result.to_string()).bind(new.score).bind(&new.model_version).bind(&at).bind(id)
            .fetch_optional(p).await)?)
    }

    pub async fn delete_prediction(&self, id: i64) -> DbResult<()> {
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let task_id: Option<i64> = sqlx::query_scalar("DELETE FROM predictions WHERE id = $1 RETURNING task_id")
                .bind(id).fetch_optional(&mut *tx).await?;
            let task_id = task_id.ok_or(DbError::NotFound)?;
            crate::refresh_task_counters!(tx, task_id);
            tx.commit().await?;
            Ok(())
        })
    }
}
