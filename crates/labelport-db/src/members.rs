//! Project membership: which projects a manager or annotator sees. Admins
//! see every project without being members.

use crate::{now, on_read, on_write, Db, DbError, DbResult, UserRow};

impl Db {
    /// Whether `user_id` is a member of `project_id`.
    pub async fn is_member(&self, project_id: i64, user_id: i64) -> DbResult<bool> {
        let sql = "SELECT COUNT(*) FROM project_members WHERE project_id = $1 AND user_id = $2";
        let n: i64 = on_read!(self, p => sqlx::query_scalar(sql).bind(project_id).bind(user_id).fetch_one(p).await)?;
        Ok(n > 0)
    }

    /// Adds a member (no change when already one). NotFound when the
    /// project or the user does not exist.
    pub async fn add_member(&self, project_id: i64, user_id: i64) -> DbResult<()> {
        self.get_project(project_id).await?;
        self.user_by_id(user_id).await?.ok_or(DbError::NotFound)?;
        let sql = "INSERT INTO project_members (project_id, user_id, created_at) VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING";
        on_write!(self, p => sqlx::query(sql).bind(project_id).bind(user_id).bind(now()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Removes a member; NotFound when they were not one.
    pub async fn remove_member(&self, project_id: i64, user_id: i64) -> DbResult<()> {
        let sql = "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2";
        let n = on_write!(self, p => sqlx::query(sql).bind(project_id).bind(user_id).execute(p).await
            .map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// A page of a project's members in user id order, and their number.
    pub async fn list_members(&self, project_id: i64, offset: i64, limit: i64) -> DbResult<(Vec<UserRow>, i64)> {
        let sql = "SELECT u.id, u.username, u.email, u.first_name, u.last_name, u.is_superuser, u.role, u.created_at
                   FROM users u JOIN project_members m ON m.user_id = u.id WHERE m.project_id = $1
                   ORDER BY u.id LIMIT $2 OFFSET $3";
        let count = "SELECT COUNT(*) FROM project_members WHERE project_id = $1";
        on_read!(self, p => {
            let rows = sqlx::query_as::<_, UserRow>(sql).bind(project_id).bind(limit).bind(offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar(count).bind(project_id).fetch_one(p).await?;
            Ok((rows, total))
        })
    }
}
