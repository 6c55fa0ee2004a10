//! Tasks: batch import in one transaction, pages, and per-task counters.

use labelport_domain::import::NewTask;

use crate::{not_found_if_none, now, on_read, on_write, placeholders, Db, DbError, DbResult, Pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub project_id: i64,
    pub data: String,
    pub meta: String,
    pub inner_id: i64,
    pub overlap: i64,
    pub is_labeled: bool,
    pub allow_skip: bool,
    pub total_annotations: i64,
    pub cancelled_annotations: i64,
    pub total_predictions: i64,
    pub updated_by: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

pub(crate) const TASK_COLUMNS: &str = "id, project_id, data, meta, inner_id, overlap, is_labeled, allow_skip, \
    total_annotations, cancelled_annotations, total_predictions, updated_by, created_at, updated_at";

/// Where an imported task came from: one row of one storage object.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub key: String,
    pub row_index: i64,
    pub generation: i64,
    pub etag: String,
}

/// Where a keyset page of tasks starts ([`Db::task_keyset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskCursor {
    /// The first page.
    Start,
    /// The page after the task with this id (in the page's order).
    After(i64),
    /// The page before the task with this id.
    Before(i64),
}

/// What an import wrote.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    /// Per input task: its new id, or 0 when its storage link already
    /// existed (the task was not kept: no duplicates, whatever races).
    pub task_ids: Vec<i64>,
    pub created: usize,
    pub annotation_count: usize,
    pub prediction_count: usize,
}

/// Inner ids and task ids set aside for one import batch
/// ([`Db::reserve_import`]): inner ids `first_inner_id ..
/// first_inner_id + ids.len()` and the task ids `ids`, ascending, for the
/// batch's tasks in order.
#[derive(Debug, Clone)]
pub struct ImportReservation {
    project_id: i64,
    first_inner_id: i64,
    ids: Vec<i64>,
}

impl ImportReservation {
    /// How many tasks the batch holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds none (never answered by `reserve_import`).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Annotation rows per multi-row INSERT: 10 values each stays under
/// SQLite's 32,766 bound variables and PostgreSQL's 65,535. (Task and link
/// rows: `bulk.rs`.)
const ANNOTATION_BATCH: usize = 1000;

impl Db {
    /// Inserts `tasks` (with their annotations and predictions) into a
    /// project in one transaction: all or nothing.
    pub async fn import_tasks(
        &self,
        project_id: i64,
        maximum_annotations: i64,
        tasks: &[NewTask],
        user_id: i64,
    ) -> DbResult<ImportOutcome> {
        self.import_linked_tasks(project_id, maximum_annotations, tasks, user_id, None)
            .await
    }

    /// [`Db::import_tasks`] with a storage link per task (`links[i]` for
    /// `tasks[i]`), written in the same transaction.
    pub async fn import_linked_tasks(
        &self,
        project_id: i64,
        maximum_annotations: i64,
        tasks: &[NewTask],
        user_id: i64,
        links: Option<(i64, &[LinkSpec])>,
    ) -> DbResult<ImportOutcome> {
        self.write_import(project_id, maximum_annotations, tasks, user_id, links, None)
            .await
    }

    /// How many import batches of one project a bulk import may write at
    /// once (issue 18, item 4): 2 on PostgreSQL, each on its own connection
    /// with ids set aside first ([`Db::reserve_import`]), so the server
    /// writes on two cores; 1 on SQLite, which has one writer.
    pub fn import_writers(&self) -> usize {
        match self.pool {
            Pool::Sqlite { .. } => 1,
            Pool::Postgres(_) => 2,
        }
    }

    /// Sets aside `count` inner ids and task ids of project `project_id`
    /// for one import batch, in a transaction of its own, so that batches
    /// can then be written on several connections at once
    /// ([`Db::import_reserved_tasks`]) and still number the project's tasks
    /// in the order they were reserved. PostgreSQL only; SQLite answers
    /// `None` (its batches reserve inside their own transaction).
    ///
    /// The reserved inner ids are recorded as a gap range in `task_gaps`
    /// until the batch commits, so task-list pages stay exact while it is
    /// written, and a batch that fails or is never written (a crash, a
    /// cancelled sync) leaves an ordinary gap, never a wrong count.
    /// Errors: [`DbError::NotFound`] for an unknown project.
    pub async fn reserve_import(&self, project_id: i64, count: usize) -> DbResult<Option<ImportReservation>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        if count == 0 {
            return Ok(None);
        }
        let mut tx = pool.begin().await?;
        // The project row's lock orders this with every other writer of the
        // project's inner ids (imports, deletions): ids and inner ids are
        // both handed out under it, so id order stays inner-id order.
        let top: Option<i64> = sqlx::query_scalar(
            "UPDATE projects SET updated_at = $1, max_inner_id = max_inner_id + $2 WHERE id = $3 RETURNING max_inner_id",
        )
        .bind(now())
        .bind(count as i64)
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        let last_inner_id = top.ok_or(DbError::NotFound)?;
        let first_inner_id = last_inner_id - count as i64 + 1;
        // `tasks_id_seq`: the sequence of `tasks.id BIGSERIAL` (0001_core.sql).
        let mut ids: Vec<i64> = sqlx::query_scalar("SELECT nextval('tasks_id_seq') FROM generate_series(1, $1)")
            .bind(count as i64)
            .fetch_all(&mut *tx)
            .await?;
        ids.sort_unstable();
        sqlx::query("INSERT INTO task_gaps (project_id, first_inner_id, last_inner_id) VALUES ($1, $2, $3)")
            .bind(project_id)
            .bind(first_inner_id)
            .bind(last_inner_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(ImportReservation {
            project_id,
            first_inner_id,
            ids,
        }))
    }

    /// [`Db::import_linked_tasks`] for a batch whose ids were set aside by
    /// [`Db::reserve_import`] (`tasks.len()` must be the reserved count):
    /// the project row is locked only at the end, to move its counters, so
    /// two batches of one project are written side by side. All or nothing;
    /// a batch that fails leaves its reserved inner ids as a gap.
    pub async fn import_reserved_tasks(
        &self,
        reservation: &ImportReservation,
        maximum_annotations: i64,
        tasks: &[NewTask],
        user_id: i64,
        links: Option<(i64, &[LinkSpec])>,
    ) -> DbResult<ImportOutcome> {
        if tasks.len() != reservation.ids.len() {
            return Err(DbError::Invalid(format!(
                "{} tasks for a reservation of {}",
                tasks.len(),
                reservation.ids.len()
            )));
        }
        self.write_import(
            reservation.project_id,
            maximum_annotations,
            tasks,
            user_id,
            links,
            Some(reservation),
        )
        .await
    }

    /// The one transaction of an import batch: with ids reserved already
    /// (`reservation`) or reserving them on the project row first.
    async fn write_import(
        &self,
        project_id: i64,
        maximum_annotations: i64,
        tasks: &[NewTask],
        user_id: i64,
        links: Option<(i64, &[LinkSpec])>,
        reservation: Option<&ImportReservation>,
    ) -> DbResult<ImportOutcome> {
        let at = now();
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            let base = match reservation {
                Some(r) => r.first_inner_id - 1,
                None => {
                    // Reserving inner ids on the project row also locks it
                    // (PostgreSQL), so concurrent imports number tasks one
                    // after another; no scan of the project's tasks is needed.
                    let reserved: Option<i64> = sqlx::query_scalar(
                        "UPDATE projects SET updated_at = $1, max_inner_id = max_inner_id + $2 WHERE id = $3 RETURNING max_inner_id")
                        .bind(&at).bind(tasks.len() as i64).bind(project_id).fetch_optional(&mut *tx).await?;
                    reserved.ok_or(DbError::NotFound)? - tasks.len() as i64
                }
            };
            let mut outcome = ImportOutcome { task_ids: vec![0; tasks.len()], ..Default::default() };
            let rows: Vec<crate::bulk::TaskInsert> = tasks.iter().enumerate().map(|(i, t)| {
                let cancelled = t.annotations.iter().filter(|a| a.was_cancelled).count() as i64;
                let total = t.annotations.len() as i64 - cancelled;
                crate::bulk::TaskInsert {
                    data: t.data.to_string(),
                    meta: t.meta.to_string(),
                    inner_id: base + i as i64 + 1,
                    is_labeled: total >= maximum_annotations,
                    allow_skip: t.allow_skip,
                    total_annotations: total,
                    cancelled_annotations: cancelled,
                    total_predictions: t.predictions.len() as i64,
                }
            }).collect();
            let ids = reservation.map(|r| r.ids.as_slice());
            for (id, inner_id) in crate::bulk::BulkRows::insert_tasks(&mut *tx, project_id, maximum_annotations, &at, &rows, ids).await? {
                let index = (inner_id - base - 1) as usize;
                outcome.task_ids[index] = id;
            }
            drop(rows);

            let annotations: Vec<_> = tasks.iter().zip(&outcome.task_ids)
                .flat_map(|(t, id)| t.annotations.iter().map(move |a| (*id, a))).collect();
            for chunk in annotations.chunks(ANNOTATION_BATCH) {
                let sql = format!(
                    "INSERT INTO annotations (task_id, project_id, result, completed_by, updated_by,
                     was_cancelled, ground_truth, lead_time, created_at, updated_at) VALUES {}",
                    placeholders(&self.pool, chunk.len(), 10)
                );
                let mut q = sqlx::query(&sql);
                for (task_id, a) in chunk {
                    q = q.bind(*task_id).bind(project_id).bind(a.result.to_string())
                        .bind(user_id).bind(user_id).bind(a.was_cancelled).bind(a.ground_truth)
                        .bind(a.lead_time).bind(&at).bind(&at);
                }
                q.execute(&mut *tx).await?;
            }
            outcome.annotation_count = annotations.len();

            let predictions: Vec<_> = tasks.iter().zip(&outcome.task_ids)
                .flat_map(|(t, id)| t.predictions.iter().map(move |pr| (*id, pr))).collect();
            for chunk in predictions.chunks(ANNOTATION_BATCH) {
                let sql = format!(
                    "INSERT INTO predictions (task_id, project_id, result, score, model_version, created_at, updated_at)
                     VALUES {}",
                    placeholders(&self.pool, chunk.len(), 7)
                );
                let mut q = sqlx::query(&sql);
                for (task_id, pr) in chunk {
                    q = q.bind(*task_id).bind(project_id).bind(pr.result.to_string())
                        .bind(pr.score).bind(&pr.model_version).bind(&at).bind(&at);
                }
                q.execute(&mut *tx).await?;
            }
            outcome.prediction_count = predictions.len();
            let mut dropped = Vec::new();
            if let Some((storage_id, specs)) = links {
                let pairs: Vec<(i64, &LinkSpec)> = outcome.task_ids.iter().copied().zip(specs.iter()).collect();
                let kept: std::collections::HashSet<i64> =
                    crate::bulk::BulkRows::insert_links(&mut *tx, storage_id, &at, &pairs).await?.into_iter().collect();
                for id in outcome.task_ids.iter_mut() {
                    if !kept.contains(id) {
                        // Another sync linked this row first: drop our copy.
                        let inner: Option<i64> = sqlx::query_scalar("DELETE FROM tasks WHERE id = $1 RETURNING inner_id")
                            .bind(*id).fetch_optional(&mut *tx).await?;
                        dropped.extend(inner);
                        *id = 0;
                    }
                }
            }
            outcome.created = outcome.task_ids.iter().filter(|id| **id != 0).count();
            let mut delta = CounterDelta { tasks: outcome.created as i64, ..Default::default() };
            for (t, _) in tasks.iter().zip(&outcome.task_ids).filter(|(_, id)| **id != 0) {
                let cancelled = t.annotations.iter().filter(|a| a.was_cancelled).count() as i64;
                let total = t.annotations.len() as i64 - cancelled;
                delta.add_task(total >= maximum_annotations, total, cancelled, t.predictions.len() as i64, 1);
            }
            sqlx::query(APPLY_PROJECT_DELTA).bind(delta.tasks).bind(delta.finished).bind(delta.annotations)
                .bind(delta.cancelled).bind(delta.predictions).bind(delta.with_annotations).bind(project_id)
                .execute(&mut *tx).await?;
            // Gaps are written after the project row is locked (above), as
            // every writer of them does: one lock order, no deadlock.
            if let Some(r) = reservation {
                crate::fill_task_gap!(tx, project_id, r.first_inner_id, r.first_inner_id + r.ids.len() as i64 - 1);
            }
            for inner in dropped {
                crate::record_task_gap!(tx, project_id, inner);
            }
            if outcome.annotation_count > 0 {
                crate::queue_project_export!(tx, project_id);
            }
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Tasks by id, in id order (missing ones are left out).
    pub async fn tasks_by_ids(&self, ids: &[i64]) -> DbResult<Vec<TaskRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let list = placeholders(&self.pool, 1, ids.len());
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN {list} ORDER BY id");
        on_read!(self, p => {
            let mut q = sqlx::query_as::<_, TaskRow>(&sql);
            for id in ids {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    pub async fn get_task(&self, id: i64) -> DbResult<TaskRow> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        not_found_if_none(on_read!(self, p => sqlx::query_as::<_, TaskRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// One page of a project's tasks in id order: `limit` tasks from
    /// position `offset` (0-based).
    ///
    /// Inner ids are handed out 1, 2, 3… in id order inside a project (one
    /// reservation on the project row per import, under its lock), and the
    /// ids of deleted tasks are kept as ranges in `task_gaps`. Position `k`
    /// is inner id `k + 1` plus the sizes of the gaps before it, so the page
    /// is one range scan on `(project_id, inner_id)` from there at any depth
    /// (issue 18, item 3). A project with more than [`SEEK_MAX_GAPS`] gap
    /// ranges (many scattered deletions; `Db::with_seek_max_gaps`) is paged with an OFFSET on the
    /// `(project_id, id)` index instead (never touching table rows).
    pub async fn task_page(&self, project_id: i64, offset: i64, limit: i64) -> DbResult<Vec<TaskRow>> {
        // The sizes of the gaps before position `offset` are summed inside
        // the database (a window over the project's gap ranges), so no
        // range is sent over; the count first bounds that work. The gaps
        // must add up to the inner ids handed out minus the tasks counted:
        // if they do not (a deletion by an older binary during an upgrade,
        // a counter off), OFFSET is used, never a wrong page.
        let (ranges, expected): (i64, Option<i64>) = on_read!(self, p => sqlx::query_as::<_, (i64, Option<i64>)>(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM task_gaps WHERE project_id = $1 LIMIT $2) g),
                    (SELECT max_inner_id - task_number FROM projects WHERE id = $1)")
            .bind(project_id).bind(self.seek_max_gaps + 1).fetch_one(p).await)?;
        let sums = if ranges == 0 {
            Some((0, 0))
        } else if ranges <= self.seek_max_gaps {
            Some(on_read!(self, p => sqlx::query_as::<_, (i64, i64)>(SKIPPED_BEFORE)
                .bind(project_id).bind(offset).fetch_one(p).await)?)
        } else {
            None
        };
        if let Some((skipped, _)) = sums.filter(|(_, all)| Some(*all) == expected) {
            let start = offset.saturating_add(1).saturating_add(skipped);
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE project_id = $1 AND inner_id >= $2
                 ORDER BY inner_id LIMIT $3"
            );
            return Ok(
                on_read!(self, p => sqlx::query_as::<_, TaskRow>(&sql).bind(project_id).bind(start)
                .bind(limit).fetch_all(p).await)?,
            );
        }
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN (
                SELECT id FROM tasks WHERE project_id = $1 ORDER BY id LIMIT $2 OFFSET $3)
             ORDER BY id"
        );
        Ok(
            on_read!(self, p => sqlx::query_as::<_, TaskRow>(&sql).bind(project_id).bind(limit).bind(offset).fetch_all(p).await)?,
        )
    }

    /// The first `limit` ranges of a project's unused inner ids (deleted
    /// tasks), as `(first, last)` sorted by `first`.
    pub async fn task_gaps(&self, project_id: i64, limit: i64) -> DbResult<Vec<(i64, i64)>> {
        Ok(on_read!(self, p => sqlx::query_as::<_, (i64, i64)>(
            "SELECT first_inner_id, last_inner_id FROM task_gaps WHERE project_id = $1
             ORDER BY first_inner_id LIMIT $2")
            .bind(project_id).bind(limit).fetch_all(p).await)?)
    }

    /// The first task (in id order) of a project that is not labeled yet and
    /// that `user_id` has not annotated: what to label next.
    pub async fn next_task_for(&self, project_id: i64, user_id: i64) -> DbResult<Option<TaskRow>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE project_id = $1 AND NOT is_labeled
             AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.task_id = t.id AND a.completed_by = $2)
             ORDER BY id LIMIT 1"
        );
        Ok(
            on_read!(self, p => sqlx::query_as::<_, TaskRow>(&sql).bind(project_id).bind(user_id).fetch_optional(p).await)?,
        )
    }

    /// One keyset page of a project's tasks for the data manager: up to
    /// `limit` tasks past `cursor` in the page's `order`, optionally only
    /// labeled (`Some(true)`) or unlabeled (`Some(false)`) ones, returned in
    /// display order. Each page is a range scan of `(project_id, id)` or
    /// `(project_id, is_labeled, id)`, so it costs the same on page 1 and
    /// page 20,000.
    pub async fn task_keyset(
        &self,
        project_id: i64,
        cursor: TaskCursor,
        descending: bool,
        labeled: Option<bool>,
        limit: i64,
    ) -> DbResult<Vec<TaskRow>> {
        // Going back reads the other way and flips the rows afterwards.
        let (bound, scan_desc, id) = match cursor {
            TaskCursor::Start => (None, descending, 0),
            TaskCursor::After(id) => (Some(if descending { "<" } else { ">" }), descending, id),
            TaskCursor::Before(id) => (Some(if descending { ">" } else { "<" }), !descending, id),
        };
        let filter = match labeled {
            Some(_) => "AND is_labeled = $4",
            None => "AND $4 = $4",
        };
        let range = match bound {
            Some(op) => format!("AND id {op} $2"),
            None => "AND $2 = $2".to_owned(),
        };
        let direction = if scan_desc { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE project_id = $1 {range} {filter} ORDER BY id {direction} LIMIT $3"
        );
        let flag = labeled.unwrap_or(false);
        let mut rows = on_read!(self, p => sqlx::query_as::<_, TaskRow>(&sql)
            .bind(project_id).bind(id).bind(limit).bind(flag).fetch_all(p).await)?;
        if scan_desc != descending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Tasks with `id > after_id` in id order (keyset paging for export).
    pub async fn tasks_after(
        &self,
        project_id: i64,
        after_id: i64,
        limit: i64,
        only_annotated: bool,
    ) -> DbResult<Vec<TaskRow>> {
        let filter = if only_annotated {
            "AND (total_annotations > 0 OR cancelled_annotations > 0)"
        } else {
            ""
        };
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE project_id = $1 AND id > $2 {filter} ORDER BY id LIMIT $3");
        Ok(
            on_read!(self, p => sqlx::query_as::<_, TaskRow>(&sql).bind(project_id).bind(after_id).bind(limit).fetch_all(p).await)?,
        )
    }

    pub async fn update_task(&self, id: i64, data: &str, meta: &str, user_id: i64) -> DbResult<TaskRow> {
        let sql = format!(
            "UPDATE tasks SET data = $1, meta = $2, updated_by = $3, updated_at = $4 WHERE id = $5 RETURNING {TASK_COLUMNS}"
        );
        let at = now();
        not_found_if_none(on_write!(self, p => sqlx::query_as::<_, TaskRow>(&sql)
            .bind(data).bind(meta).bind(user_id).bind(&at).bind(id).fetch_optional(p).await)?)
    }

    pub async fn delete_task(&self, id: i64) -> DbResult<()> {
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            crate::queue_export_deletions!(tx, "SELECT id FROM annotations WHERE task_id = $1", id, false);
            let sql = "DELETE FROM tasks WHERE id = $1
                RETURNING project_id, is_labeled, total_annotations, cancelled_annotations, total_predictions, inner_id";
            let row = sqlx::query_as::<_, (i64, bool, i64, i64, i64, i64)>(sql).bind(id).fetch_optional(&mut *tx).await?;
            let (project_id, labeled, total, cancelled, predictions, inner) = row.ok_or(DbError::NotFound)?;
            let mut delta = CounterDelta { tasks: -1, ..Default::default() };
            delta.add_task(labeled, total, cancelled, predictions, -1);
            sqlx::query(APPLY_PROJECT_DELTA).bind(delta.tasks).bind(delta.finished).bind(delta.annotations)
                .bind(delta.cancelled).bind(delta.predictions).bind(delta.with_annotations).bind(project_id)
                .execute(&mut *tx).await?;
            // After the project row is locked (above), as an import locks
            // it before its gaps: one order, no deadlock on PostgreSQL.
            crate::record_task_gap!(tx, project_id, inner);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Deletes every task of a project; returns how many.
    pub async fn delete_project_tasks(&self, project_id: i64) -> DbResult<u64> {
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            crate::queue_export_deletions!(tx, "SELECT id FROM annotations WHERE project_id = $1", project_id, false);
            let done = sqlx::query("DELETE FROM tasks WHERE project_id = $1").bind(project_id).execute(&mut *tx).await?;
            sqlx::query("UPDATE projects SET task_number = 0, finished_task_number = 0, total_annotations_number = 0,
                skipped_annotations_number = 0, total_predictions_number = 0, num_tasks_with_annotations = 0 WHERE id = $1")
                .bind(project_id).execute(&mut *tx).await?;
            // Every inner id handed out is now unused: one range (written
            // after the project row is locked, as everywhere).
            sqlx::query("DELETE FROM task_gaps WHERE project_id = $1").bind(project_id).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO task_gaps (project_id, first_inner_id, last_inner_id)
                         SELECT id, 1, max_inner_id FROM projects WHERE id = $1 AND max_inner_id > 0")
                .bind(project_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        })
    }
}

/// How many inner ids are skipped before the task at 0-based position `$2`
/// of project `$1`: the sizes of the gap ranges that begin before it. A
/// range begins before position k when fewer than k+1 tasks come before
/// it: `first - 1 - (sizes of the ranges before it) <= k`. Same answer as
/// [`inner_id_at`], which the tests compare it with.
/// Also answers the sizes of all the project's gaps, to check them.
const SKIPPED_BEFORE: &str = "SELECT
        CAST(COALESCE(SUM(CASE WHEN live_before <= $2 THEN size ELSE 0 END), 0) AS BIGINT),
        CAST(COALESCE(SUM(size), 0) AS BIGINT)
    FROM (
        SELECT last_inner_id - first_inner_id + 1 AS size,
               first_inner_id - 1 - COALESCE(SUM(last_inner_id - first_inner_id + 1) OVER (
                   ORDER BY first_inner_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS live_before
        FROM task_gaps WHERE project_id = $1
    ) g";

/// Up to this many gap ranges, a task-list page is found by seek
/// ([`Db::task_page`]); at 1,000 ranges summing them in the database added
/// nothing measurable to a page (docs/benchmarks.md).
pub const SEEK_MAX_GAPS: i64 = 10_000;

/// The inner id of the task at 0-based position `offset`, given the
/// project's unused inner-id ranges sorted by their start: each range that
/// begins at or before the candidate pushes it past the range.
pub fn inner_id_at(offset: i64, gaps: &[(i64, i64)]) -> i64 {
    let mut inner = offset.saturating_add(1);
    for &(first, last) in gaps {
        if first > inner {
            break;
        }
        inner = inner.saturating_add(last - first + 1);
    }
    inner
}

/// Records inner id `$inner` of project `$project` as unused (its task was
/// just deleted) in `task_gaps`, merged with the ranges that end just
/// before it and start just after it, so a run of deletions stays one
/// range. Runs in the caller's write transaction `$tx`.
#[macro_export]
macro_rules! record_task_gap {
    ($tx:ident, $project:expr, $inner:expr) => {{
        let (project, inner): (i64, i64) = ($project, $inner);
        let after: Option<i64> = sqlx::query_scalar(
            "DELETE FROM task_gaps WHERE project_id = $1 AND first_inner_id = $2 RETURNING last_inner_id",
        )
        .bind(project)
        .bind(inner + 1)
        .fetch_optional(&mut *$tx)
        .await?;
        let last = after.unwrap_or(inner);
        let joined =
            sqlx::query("UPDATE task_gaps SET last_inner_id = $3 WHERE project_id = $1 AND last_inner_id = $2")
                .bind(project)
                .bind(inner - 1)
                .bind(last)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
        if joined == 0 {
            sqlx::query("INSERT INTO task_gaps (project_id, first_inner_id, last_inner_id) VALUES ($1, $2, $3)")
                .bind(project)
                .bind(inner)
                .bind(last)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// Takes inner ids `$first..=$last` of project `$project` out of
/// `task_gaps` (a reservation whose tasks are being written,
/// [`Db::reserve_import`]): the range holding them is removed and what is
/// left of it on either side written back. Runs in the caller's write
/// transaction `$tx`, after the project row is locked.
///
/// A deletion next to the reservation may have merged its range into a
/// larger one meanwhile; at READ COMMITTED a statement that waited on a
/// row another transaction replaced does not see the replacement, so the
/// search runs once more with a new snapshot. Not found even then (nothing
/// in Labelport removes a reservation's range otherwise), the gaps no
/// longer add up and task pages use OFFSET (`Db::task_page` checks the
/// sum): slower, never wrong.
#[macro_export]
macro_rules! fill_task_gap {
    ($tx:ident, $project:expr, $first:expr, $last:expr) => {{
        let (project, first, last): (i64, i64, i64) = ($project, $first, $last);
        let mut found = false;
        for _ in 0..2 {
            let range: Option<(i64, i64)> = sqlx::query_as(
                "DELETE FROM task_gaps WHERE project_id = $1 AND first_inner_id <= $2 AND last_inner_id >= $3
                 RETURNING first_inner_id, last_inner_id",
            )
            .bind(project)
            .bind(first)
            .bind(last)
            .fetch_optional(&mut *$tx)
            .await?;
            if let Some((low, high)) = range {
                for (a, b) in [(low, first - 1), (last + 1, high)] {
                    if a <= b {
                        sqlx::query(
                            "INSERT INTO task_gaps (project_id, first_inner_id, last_inner_id) VALUES ($1, $2, $3)",
                        )
                        .bind(project)
                        .bind(a)
                        .bind(b)
                        .execute(&mut *$tx)
                        .await?;
                    }
                }
                found = true;
                break;
            }
        }
        if !found {
            tracing::warn!(
                project,
                first,
                last,
                "an import's reserved inner ids were not in task_gaps; task pages of this project use OFFSET"
            );
        }
    }};
}

/// Changes to a project's counters.
#[derive(Debug, Default)]
pub(crate) struct CounterDelta {
    pub tasks: i64,
    pub finished: i64,
    pub annotations: i64,
    pub cancelled: i64,
    pub predictions: i64,
    pub with_annotations: i64,
}

impl CounterDelta {
    /// Adds (`sign` 1) or removes (`sign` -1) one task's counters.
    pub fn add_task(&mut self, labeled: bool, total: i64, cancelled: i64, predictions: i64, sign: i64) {
        self.finished += sign * i64::from(labeled);
        self.annotations += sign * total;
        self.cancelled += sign * cancelled;
        self.predictions += sign * predictions;
        self.with_annotations += sign * i64::from(total > 0);
    }
}

pub(crate) const APPLY_PROJECT_DELTA: &str = "UPDATE projects SET task_number = task_number + $1,
    finished_task_number = finished_task_number + $2, total_annotations_number = total_annotations_number + $3,
    skipped_annotations_number = skipped_annotations_number + $4, total_predictions_number = total_predictions_number + $5,
    num_tasks_with_annotations = num_tasks_with_annotations + $6 WHERE id = $7";

/// Recomputes one task's counters and moves its project's counters by the
/// difference, inside the caller's transaction.
#[macro_export]
macro_rules! refresh_task_counters {
    ($tx:expr, $task_id:expr) => {{
        let counters_sql = "SELECT project_id, is_labeled, total_annotations, cancelled_annotations, total_predictions FROM tasks WHERE id = $1";
        let before: Option<(i64, bool, i64, i64, i64)> =
            sqlx::query_as(counters_sql).bind($task_id).fetch_optional(&mut *$tx).await?;
        sqlx::query($crate::tasks::REFRESH_TASK_COUNTERS).bind($task_id).execute(&mut *$tx).await?;
        let after: Option<(i64, bool, i64, i64, i64)> =
            sqlx::query_as(counters_sql).bind($task_id).fetch_optional(&mut *$tx).await?;
        if let (Some(b), Some(a)) = (before, after) {
            let mut delta = $crate::tasks::CounterDelta::default();
            delta.add_task(b.1, b.2, b.3, b.4, -1);
            delta.add_task(a.1, a.2, a.3, a.4, 1);
            sqlx::query($crate::tasks::APPLY_PROJECT_DELTA).bind(delta.tasks).bind(delta.finished)
                .bind(delta.annotations).bind(delta.cancelled).bind(delta.predictions)
                .bind(delta.with_annotations).bind(a.0).execute(&mut *$tx).await?;
        }
    }};
}

/// Recomputes a task's annotation/prediction counters inside a transaction.
pub(crate) const REFRESH_TASK_COUNTERS: &str = "UPDATE tasks SET
    total_annotations = (SELECT COUNT(*) FROM annotations a WHERE a.task_id = tasks.id AND NOT a.was_cancelled),
    cancelled_annotations = (SELECT COUNT(*) FROM annotations a WHERE a.task_id = tasks.id AND a.was_cancelled),
    total_predictions = (SELECT COUNT(*) FROM predictions pr WHERE pr.task_id = tasks.id),
    is_labeled = ((SELECT COUNT(*) FROM annotations a WHERE a.task_id = tasks.id AND NOT a.was_cancelled) >= tasks.overlap)
    WHERE id = $1";

#[cfg(test)]
mod gap_tests {
    use super::inner_id_at;

    #[test]
    fn positions_skip_the_gaps_before_them() {
        assert_eq!(inner_id_at(0, &[]), 1);
        assert_eq!(inner_id_at(9, &[]), 10);
        // Inner ids 3..=5 and 8 unused: live 1 2 6 7 9 10 …
        let gaps = [(3, 5), (8, 8)];
        let live: Vec<i64> = (0..6).map(|k| inner_id_at(k, &gaps)).collect();
        assert_eq!(live, [1, 2, 6, 7, 9, 10]);
        // A gap at the start.
        assert_eq!(inner_id_at(0, &[(1, 4)]), 5);
        // Past the end: beyond every id (an empty page).
        assert_eq!(inner_id_at(100, &[(1, 1)]), 102);
    }
}
