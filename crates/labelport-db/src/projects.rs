//! Projects and their aggregate counts.

use crate::{not_found_if_none, now, on_read, on_write, Db, DbResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub label_config: String,
    pub maximum_annotations: i64,
    /// JSON object of the UI settings Labelport only stores and returns.
    pub settings: String,
    pub created_by: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

/// The editable columns of a project.
#[derive(Debug, Clone)]
pub struct ProjectFields {
    pub title: String,
    pub description: String,
    pub label_config: String,
    pub maximum_annotations: i64,
    pub settings: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ProjectCounts {
    pub task_number: i64,
    pub finished_task_number: i64,
    pub total_annotations_number: i64,
    pub skipped_annotations_number: i64,
    pub total_predictions_number: i64,
    pub num_tasks_with_annotations: i64,
}

const PROJECT_COLUMNS: &str =
    "id, title, description, label_config, maximum_annotations, settings, created_by, created_at, updated_at";

impl Db {
    /// Creates a project; its creator becomes its first member (same
    /// transaction).
    pub async fn create_project(&self, fields: &ProjectFields, created_by: i64) -> DbResult<ProjectRow> {
        let sql = format!(
            "INSERT INTO projects (title, description, label_config, maximum_annotations, settings, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {PROJECT_COLUMNS}"
        );
        let at = now();
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as::<_, ProjectRow>(&sql)
                .bind(&fields.title).bind(&fields.description).bind(&fields.label_config)
                .bind(fields.maximum_annotations).bind(&fields.settings).bind(created_by).bind(&at)
                .fetch_one(&mut *tx).await?;
            sqlx::query("INSERT INTO project_members (project_id, user_id, created_at) VALUES ($1, $2, $3)")
                .bind(row.id).bind(created_by).bind(&at).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    pub async fn get_project(&self, id: i64) -> DbResult<ProjectRow> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1");
        not_found_if_none(on_read!(self, p => sqlx::query_as::<_, ProjectRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// A page of projects, newest first as Label Studio lists them, and the
    /// total: every project, or (`member = Some(user)`) those the user is a
    /// member of.
    pub async fn list_projects(
        &self,
        member: Option<i64>,
        offset: i64,
        limit: i64,
    ) -> DbResult<(Vec<ProjectRow>, i64)> {
        // $3 is the member; `$3 = 0` never matches a user id, so one text
        // serves both cases.
        let scope = if member.is_some() {
            "id IN (SELECT project_id FROM project_members WHERE user_id = $3)"
        } else {
            "$3 = 0"
        };
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE {scope} ORDER BY id DESC LIMIT $1 OFFSET $2");
        let count = if member.is_some() {
            "SELECT COUNT(*) FROM project_members WHERE user_id = $1"
        } else {
            "SELECT COUNT(*) FROM projects WHERE $1 = 0"
        };
        let who = member.unwrap_or(0);
        on_read!(self, p => {
            let rows = sqlx::query_as::<_, ProjectRow>(&sql).bind(limit).bind(offset).bind(who).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar(count).bind(who).fetch_one(p).await?;
            Ok((rows, total))
        })
    }

    pub async fn update_project(&self, id: i64, fields: &ProjectFields) -> DbResult<ProjectRow> {
        let sql = format!(
            "UPDATE projects SET title = $1, description = $2, label_config = $3, maximum_annotations = $4,
             settings = $5, updated_at = $6 WHERE id = $7 RETURNING {PROJECT_COLUMNS}"
        );
        let at = now();
        not_found_if_none(on_write!(self, p => sqlx::query_as::<_, ProjectRow>(&sql)
            .bind(&fields.title).bind(&fields.description).bind(&fields.label_config)
            .bind(fields.maximum_annotations).bind(&fields.settings).bind(&at).bind(id)
            .fetch_optional(p).await)?)
    }

    /// Deletes the project with its tasks, annotations and predictions.
    /// Export storages without `can_delete_objects` go with it; the others
    /// outlive it (unlisted) until their job has deleted the project's
    /// objects.
    pub async fn delete_project(&self, id: i64) -> DbResult<()> {
        let done = on_write!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM export_storages WHERE project_id = $1 AND NOT can_delete_objects")
                .bind(id).execute(&mut *tx).await?;
            crate::queue_export_deletions!(tx, "SELECT id FROM annotations WHERE project_id = $1", id, false);
            let storages: Vec<i64> = sqlx::query_scalar("SELECT id FROM export_storages WHERE project_id = $1")
                .bind(id).fetch_all(&mut *tx).await?;
            crate::enqueue_exports!(tx, storages);
            let done = sqlx::query("DELETE FROM projects WHERE id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, crate::DbError>(done.rows_affected())
        })?;
        if done == 0 {
            return Err(crate::DbError::NotFound);
        }
        Ok(())
    }

    pub async fn project_counts(&self, id: i64) -> DbResult<ProjectCounts> {
        let sql = "SELECT task_number, finished_task_number, total_annotations_number, skipped_annotations_number,
                total_predictions_number, num_tasks_with_annotations FROM projects WHERE id = $1";
        not_found_if_none(
            on_read!(self, p => sqlx::query_as::<_, ProjectCounts>(sql).bind(id).fetch_optional(p).await)?,
        )
    }

    /// The kept counters of several projects in one query (the projects
    /// page); projects that do not exist are left out.
    pub async fn project_counts_of(&self, ids: &[i64]) -> DbResult<std::collections::HashMap<i64, ProjectCounts>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let list = crate::placeholders(&self.pool, 1, ids.len());
        let sql = format!(
            "SELECT id, task_number, finished_task_number, total_annotations_number, skipped_annotations_number,
                total_predictions_number, num_tasks_with_annotations FROM projects WHERE id IN {list}"
        );
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            #[sqlx(flatten)]
            counts: ProjectCounts,
        }
        let rows = on_read!(self, p => {
            let mut q = sqlx::query_as::<_, Row>(&sql);
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await
        })?;
        Ok(rows.into_iter().map(|r| (r.id, r.counts)).collect())
    }

    /// The counters recomputed from the tasks (a full scan): what the kept
    /// counters must always equal. For tests and repair.
    pub async fn project_counts_recomputed(&self, id: i64) -> DbResult<ProjectCounts> {
        // CAST keeps SUM a BIGINT on PostgreSQL (it would be NUMERIC).
        let sql = "SELECT COUNT(*) AS task_number,
                CAST(COALESCE(SUM(CASE WHEN is_labeled THEN 1 ELSE 0 END), 0) AS BIGINT) AS finished_task_number,
                CAST(COALESCE(SUM(total_annotations), 0) AS BIGINT) AS total_annotations_number,
                CAST(COALESCE(SUM(cancelled_annotations), 0) AS BIGINT) AS skipped_annotations_number,
                CAST(COALESCE(SUM(total_predictions), 0) AS BIGINT) AS total_predictions_number,
                CAST(COALESCE(SUM(CASE WHEN total_annotations > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS num_tasks_with_annotations
            FROM tasks WHERE project_id = $1";
        Ok(on_read!(self, p => sqlx::query_as::<_, ProjectCounts>(sql).bind(id).fetch_one(p).await)?)
    }

    pub async fn ground_truth_number(&self, id: i64) -> DbResult<i64> {
        let sql = "SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND ground_truth";
        Ok(on_read!(self, p => sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_one(p).await)?)
    }
}
