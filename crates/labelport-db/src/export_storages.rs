//! What only export ("target") storages have: the bookkeeping of what each
//! has written, and the deletions to carry out. (The storages themselves
//! are rows of the shared model in `storages`.)
//!
//! Every (storage, annotation) pair has a link row holding the object it
//! goes to, the annotation version last written there and a `dirty` flag.
//! Annotation writes mark links dirty (and queue the storage's export job)
//! in their own transaction, so a save can never be lost between the
//! database and the bucket; deletions queue the objects to delete the same
//! way. The export job only ever looks at dirty links and queued deletions.

use labelport_domain::storage::Direction;
pub use labelport_domain::storage::EXPORT_SYNC;

use crate::{now, on_read, on_write, Db, DbResult};

/// The dedup key of a storage's export job.
pub fn export_dedup_key(storage_id: i64) -> String {
    Direction::Export.dedup_key(storage_id)
}

/// The payload of a storage's export job.
pub fn export_payload(storage_id: i64) -> String {
    Direction::payload(storage_id)
}

/// The object name of a link, in SQL over `s` (storage) and `a`
/// (annotation): prefix and key joined by exactly one `/`; the key is the
/// annotation id, or `<task id>.json` in task format.
pub(crate) const OBJECT_KEY_SQL: &str =
    "CASE WHEN rtrim(s.prefix, '/') = '' THEN '' ELSE rtrim(s.prefix, '/') || '/' END
    || CASE WHEN s.export_format = 'task' THEN CAST(a.task_id AS TEXT) || '.json' ELSE CAST(a.id AS TEXT) END";

/// A link waiting to be written.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DirtyLink {
    pub annotation_id: i64,
    pub task_id: i64,
    pub object_key: String,
    pub change_seq: i64,
}

/// A link written: the annotation version that went out, and the change
/// sequence read with the link (a newer change keeps it dirty).
#[derive(Debug, Clone, Copy)]
pub struct ExportedLink {
    pub annotation_id: i64,
    pub version: i64,
    pub change_seq: i64,
}

/// How long after an export storage's creation or full sync the requeuer
/// looks for annotations its links missed (see `repair_recent_export_links`).
pub const LINK_REPAIR_WINDOW_SECS: i64 = 3600;

/// In an annotation write's transaction: links the annotation to every
/// export storage of its project (or marks the links dirty) and queues
/// those storages' export jobs.
#[macro_export]
macro_rules! queue_annotation_export {
    ($tx:ident, $annotation_id:expr) => {{
        let sql = format!(
            "INSERT INTO export_storage_links (storage_id, annotation_id, task_id, object_key, dirty, change_seq)
             SELECT s.id, a.id, a.task_id, {}, TRUE, 1
             FROM annotations a JOIN export_storages s ON s.project_id = a.project_id WHERE a.id = $1
             ON CONFLICT (storage_id, annotation_id)
             DO UPDATE SET dirty = TRUE, change_seq = export_storage_links.change_seq + 1
             RETURNING storage_id",
            $crate::export_storages::OBJECT_KEY_SQL
        );
        let storages: Vec<i64> = sqlx::query_scalar(&sql)
            .bind($annotation_id)
            .fetch_all(&mut *$tx)
            .await?;
        $crate::enqueue_exports!($tx, storages);
    }};
}

/// Queues (coalesced) export jobs for storage ids, inside a transaction.
#[macro_export]
macro_rules! enqueue_exports {
    ($tx:ident, $storages:expr) => {{
        $crate::enqueue_exports!($tx, $storages, $crate::jobs::ENQUEUE_COALESCED)
    }};
    ($tx:ident, $storages:expr, $sql:expr) => {{
        let mut ids: Vec<i64> = $storages;
        ids.sort_unstable();
        ids.dedup();
        let at = $crate::jobs::ts(chrono::Utc::now());
        for id in ids {
            sqlx::query($sql)
                .bind($crate::export_storages::EXPORT_SYNC)
                .bind($crate::export_storages::export_dedup_key(id))
                .bind($crate::export_storages::export_payload(id))
                .bind(&at)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// In a deleting transaction, before the rows go: for the annotations
/// selected by `$scope` (SQL with `$1` bound to `$bind`), queues the
/// deletion of their objects in storages with `can_delete_objects`. With
/// `single = true` (one annotation), a task-format object that still holds
/// other annotations is rewritten instead of deleted.
#[macro_export]
macro_rules! queue_export_deletions {
    ($tx:ident, $scope:expr, $bind:expr, $single:expr) => {{
        let scope: &str = $scope;
        let mut storages: Vec<i64> = Vec::new();
        let others = if $single {
            let sql = format!(
                "UPDATE export_storage_links SET dirty = TRUE, change_seq = change_seq + 1
                 WHERE annotation_id NOT IN ({scope}) AND EXISTS (SELECT 1 FROM export_storage_links d
                     WHERE d.annotation_id IN ({scope}) AND d.storage_id = export_storage_links.storage_id
                     AND d.object_key = export_storage_links.object_key)
                 RETURNING storage_id"
            );
            storages.extend(
                sqlx::query_scalar::<_, i64>(&sql)
                    .bind($bind)
                    .fetch_all(&mut *$tx)
                    .await?,
            );
            format!(
                " AND NOT EXISTS (SELECT 1 FROM export_storage_links o WHERE o.storage_id = l.storage_id
                  AND o.object_key = l.object_key AND o.annotation_id NOT IN ({scope}))"
            )
        } else {
            String::new()
        };
        let sql = format!(
            "INSERT INTO export_storage_deletions (storage_id, object_key, created_at)
             SELECT DISTINCT l.storage_id, l.object_key, $2 FROM export_storage_links l
             JOIN export_storages s ON s.id = l.storage_id
             WHERE s.can_delete_objects AND l.annotation_id IN ({scope}){others}
             ON CONFLICT (storage_id, object_key) DO UPDATE SET created_at = excluded.created_at
             RETURNING storage_id"
        );
        storages.extend(
            sqlx::query_scalar::<_, i64>(&sql)
                .bind($bind)
                .bind($crate::now())
                .fetch_all(&mut *$tx)
                .await?,
        );
        $crate::enqueue_exports!($tx, storages);
    }};
}

/// After a bulk insert of annotations (task import), in its transaction:
/// links every not-yet-linked annotation of the project to the project's
/// export storages and queues their jobs. Cheap when there are none.
#[macro_export]
macro_rules! queue_project_export {
    ($tx:ident, $project_id:expr) => {{
        let any: Option<i64> = sqlx::query_scalar("SELECT id FROM export_storages WHERE project_id = $1 LIMIT 1")
            .bind($project_id)
            .fetch_optional(&mut *$tx)
            .await?;
        if any.is_some() {
            let sql = format!(
                "INSERT INTO export_storage_links (storage_id, annotation_id, task_id, object_key, dirty, change_seq)
                 SELECT s.id, a.id, a.task_id, {}, TRUE, 1
                 FROM annotations a JOIN export_storages s ON s.project_id = a.project_id WHERE a.project_id = $1
                 ON CONFLICT DO NOTHING RETURNING storage_id",
                $crate::export_storages::OBJECT_KEY_SQL
            );
            let storages: Vec<i64> = sqlx::query_scalar(&sql).bind($project_id).fetch_all(&mut *$tx).await?;
            $crate::enqueue_exports!($tx, storages);
        }
    }};
}

/// In a storage update's transaction, when an export storage's object
/// names change: every link points at the new place and waits to be
/// written there (`change_seq` moves on, so a run still writing to the old
/// place cannot mark the new one done); deletions queued for the old place
/// are dropped (those objects stay) and the storage's job is queued.
#[macro_export]
macro_rules! repoint_export_links {
    ($tx:ident, $storage_id:expr) => {{
        let sql = format!(
            "UPDATE export_storage_links SET dirty = TRUE, change_seq = change_seq + 1, exported_version = 0,
             object_key = (SELECT {} FROM export_storages s JOIN annotations a
                           ON a.id = export_storage_links.annotation_id WHERE s.id = export_storage_links.storage_id)
             WHERE storage_id = $1",
            $crate::export_storages::OBJECT_KEY_SQL
        );
        sqlx::query(&sql).bind($storage_id).execute(&mut *$tx).await?;
        sqlx::query("DELETE FROM export_storage_deletions WHERE storage_id = $1")
            .bind($storage_id)
            .execute(&mut *$tx)
            .await?;
        $crate::enqueue_exports!($tx, vec![$storage_id]);
    }};
}

impl Db {
    /// Annotation saves not yet written to their export storages: how
    /// many, and the oldest one's save time (RFC 3339) — the export lag of
    /// `/metrics`.
    pub async fn export_backlog(&self) -> DbResult<(i64, Option<String>)> {
        let sql = "SELECT COUNT(*), MIN(a.updated_at) FROM export_storage_links l
                   JOIN annotations a ON a.id = l.annotation_id WHERE l.dirty";
        Ok(on_read!(self, p => sqlx::query_as::<_, (i64, Option<String>)>(sql).fetch_one(p).await)?)
    }

    /// Asks for a full export sync: the storage becomes `queued` (unless a
    /// sync is already queued or running) and its job is queued or, if it
    /// is running, told to run again.
    pub(crate) async fn request_export_sync(&self, id: i64, meta: &str) -> DbResult<()> {
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE export_storages SET status = 'queued', traceback = NULL, meta = $1
                         WHERE id = $2 AND status NOT IN ('queued', 'in_progress')")
                .bind(meta).bind(id).execute(&mut *tx).await?;
            sqlx::query("UPDATE export_storages SET sync_requested = TRUE WHERE id = $1")
                .bind(id).execute(&mut *tx).await?;
            crate::enqueue_exports!(tx, vec![id], crate::jobs::ENQUEUE_COALESCED_NOW);
            tx.commit().await?;
            Ok(())
        })
    }

    /// A full sync starts: the request is taken (a new one during the run
    /// makes another full sync).
    pub async fn take_export_sync_request(&self, id: i64) -> DbResult<()> {
        on_write!(self, p => sqlx::query("UPDATE export_storages SET sync_requested = FALSE WHERE id = $1")
            .bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Queues a job for every export storage with work waiting (a sync
    /// asked for, dirty links, queued deletions, or a deleted project) and
    /// no job queued or running: work left by a job that gave up after its
    /// retries, or lost with a crash; first repairs the links of recently
    /// created storages (`repair_recent_export_links`). Returns how many
    /// jobs were queued.
    pub async fn requeue_pending_exports(&self) -> DbResult<usize> {
        // A failed repair must not hold up the requeue: it is tried again
        // on the next round.
        let repaired = self.repair_recent_export_links().await.unwrap_or_else(|e| {
            tracing::warn!("export: checking young storages' links failed: {e}");
            0
        });
        let sql = "SELECT s.id FROM export_storages s
            WHERE (s.project_id IS NULL OR s.sync_requested
                   OR EXISTS (SELECT 1 FROM export_storage_links l WHERE l.storage_id = s.id AND l.dirty)
                   OR EXISTS (SELECT 1 FROM export_storage_deletions d WHERE d.storage_id = s.id))
              AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.dedup_key = 'export_sync:' || CAST(s.id AS TEXT)
                              AND j.status IN ('queued', 'running'))";
        let ids: Vec<i64> = on_read!(self, p => sqlx::query_scalar(sql).fetch_all(p).await)?;
        let n = ids.len();
        if n > 0 {
            on_write!(self, p => {
                let mut tx = p.begin().await?;
                crate::enqueue_exports!(tx, ids);
                tx.commit().await
            })?;
        }
        Ok(repaired + n)
    }

    /// For export storages created or fully synced within
    /// [`LINK_REPAIR_WINDOW_SECS`] (and not waiting for a full sync, which
    /// links everything anyway): links annotations that have no link, and
    /// marks dirty the links whose annotation is newer than what was
    /// written while the link says clean; queues those storages' jobs.
    /// Returns how many storages were repaired (one job each).
    ///
    /// Why: on PostgreSQL an annotation save whose transaction linked
    /// before a new storage committed, and committed after the storage's
    /// full sync had linked the project, is seen by neither. This can only
    /// happen around a full sync, hence the window, which keeps the scan
    /// off settled storages. The scan runs on the read pool; only a
    /// storage that needs repair takes the write connection.
    pub async fn repair_recent_export_links(&self) -> DbResult<usize> {
        let since = (chrono::Utc::now() - chrono::Duration::seconds(LINK_REPAIR_WINDOW_SECS))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let find = "SELECT DISTINCT s.id FROM export_storages s
             JOIN annotations a ON a.project_id = s.project_id
             LEFT JOIN export_storage_links l ON l.storage_id = s.id AND l.annotation_id = a.id
             WHERE (s.created_at > $1 OR COALESCE(s.last_sync, '') > $1)
               AND NOT s.sync_requested AND s.status NOT IN ('queued', 'in_progress')
               AND (l.annotation_id IS NULL OR (NOT l.dirty AND l.exported_version < a.version))
             ORDER BY s.id";
        let ids: Vec<i64> = on_read!(self, p => sqlx::query_scalar(find).bind(&since).fetch_all(p).await)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let link = format!(
            "INSERT INTO export_storage_links (storage_id, annotation_id, task_id, object_key, dirty, change_seq)
             SELECT s.id, a.id, a.task_id, {OBJECT_KEY_SQL}, TRUE, 1
             FROM export_storages s JOIN annotations a ON a.project_id = s.project_id
             WHERE s.id = $1 AND NOT EXISTS (SELECT 1 FROM export_storage_links l
                                             WHERE l.storage_id = s.id AND l.annotation_id = a.id)
             ORDER BY a.id
             ON CONFLICT DO NOTHING"
        );
        let stale = "UPDATE export_storage_links SET dirty = TRUE, change_seq = change_seq + 1
             WHERE storage_id = $1 AND NOT dirty
               AND exported_version < (SELECT a.version FROM annotations a
                                       WHERE a.id = export_storage_links.annotation_id)";
        tracing::warn!(storages = ?ids, "export: annotations missed by a save racing a storage's sync; queued");
        let n = ids.len();
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            for id in &ids {
                sqlx::query(&link).bind(id).execute(&mut *tx).await?;
                sqlx::query(stale).bind(id).execute(&mut *tx).await?;
            }
            crate::enqueue_exports!(tx, ids);
            tx.commit().await
        })?;
        Ok(n)
    }

    /// Links every annotation of the storage's project that has no link yet
    /// (annotations made before the storage, or by a bulk path); returns
    /// how many.
    pub async fn link_unexported_annotations(&self, storage_id: i64) -> DbResult<u64> {
        let sql = format!(
            "INSERT INTO export_storage_links (storage_id, annotation_id, task_id, object_key, dirty, change_seq)
             SELECT s.id, a.id, a.task_id, {OBJECT_KEY_SQL}, TRUE, 1
             FROM export_storages s JOIN annotations a ON a.project_id = s.project_id WHERE s.id = $1
             ON CONFLICT DO NOTHING"
        );
        Ok(on_write!(self, p => sqlx::query(&sql).bind(storage_id).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// (links in total, links waiting to be written).
    pub async fn count_export_links(&self, storage_id: i64) -> DbResult<(i64, i64)> {
        let sql = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN dirty THEN 1 ELSE 0 END), 0)
                   FROM export_storage_links WHERE storage_id = $1";
        Ok(on_read!(self, p => sqlx::query_as::<_, (i64, i64)>(sql).bind(storage_id).fetch_one(p).await)?)
    }

    /// The next dirty links after `after_annotation` in annotation order.
    pub async fn dirty_export_links(
        &self,
        storage_id: i64,
        after_annotation: i64,
        limit: i64,
    ) -> DbResult<Vec<DirtyLink>> {
        let sql = "SELECT annotation_id, task_id, object_key, change_seq FROM export_storage_links
                   WHERE storage_id = $1 AND dirty AND annotation_id > $2 ORDER BY annotation_id LIMIT $3";
        Ok(
            on_read!(self, p => sqlx::query_as::<_, DirtyLink>(sql).bind(storage_id).bind(after_annotation)
            .bind(limit).fetch_all(p).await)?,
        )
    }

    /// Records what was written, in one transaction. A link that changed
    /// since it was read stays dirty.
    pub async fn mark_exported(&self, storage_id: i64, links: &[ExportedLink]) -> DbResult<()> {
        if links.is_empty() {
            return Ok(());
        }
        let at = now();
        let sql = "UPDATE export_storage_links SET exported_version = $1, exported_at = $2,
                   dirty = (change_seq <> $3) WHERE storage_id = $4 AND annotation_id = $5";
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            for l in links {
                sqlx::query(sql).bind(l.version).bind(&at).bind(l.change_seq).bind(storage_id)
                    .bind(l.annotation_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Objects waiting to be deleted from the storage's bucket.
    pub async fn export_deletions(&self, storage_id: i64, after: &str, limit: i64) -> DbResult<Vec<String>> {
        let sql = "SELECT object_key FROM export_storage_deletions WHERE storage_id = $1 AND object_key > $2
                   ORDER BY object_key LIMIT $3";
        Ok(
            on_read!(self, p => sqlx::query_scalar::<_, String>(sql).bind(storage_id).bind(after).bind(limit)
            .fetch_all(p).await)?,
        )
    }

    /// Forgets deletions carried out. An object written again since (a new
    /// link with that key) is not touched: its link decides.
    pub async fn remove_export_deletions(&self, storage_id: i64, keys: &[String]) -> DbResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let sql = "DELETE FROM export_storage_deletions WHERE storage_id = $1 AND object_key = $2";
        on_write!(self, p => {
            let mut tx = p.begin().await?;
            for k in keys {
                sqlx::query(sql).bind(storage_id).bind(k).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Drops a storage whose project is gone once nothing is left to delete;
    /// true when it was dropped.
    pub async fn drop_orphan_export_storage(&self, id: i64) -> DbResult<bool> {
        let sql = "DELETE FROM export_storages WHERE id = $1 AND project_id IS NULL
                   AND NOT EXISTS (SELECT 1 FROM export_storage_deletions WHERE storage_id = $1)";
        let n = on_write!(self, p => sqlx::query(sql).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Gives up on a storage whose project is gone when its oldest queued
    /// deletion is older than `cutoff` (a timestamp as [`crate::now`] writes
    /// them): the storage goes, with its queue. Returns how many objects
    /// were left undeleted, when it went. Nobody can fix such a storage's
    /// credentials or bucket any more (it is no longer listed), so without
    /// this a lasting failure would be retried for ever.
    pub async fn abandon_orphan_export_storage(&self, id: i64, cutoff: &str) -> DbResult<Option<i64>> {
        let pending = "SELECT COUNT(*), MIN(created_at) FROM export_storage_deletions WHERE storage_id = $1";
        let drop = "DELETE FROM export_storages WHERE id = $1 AND project_id IS NULL";
        Ok(on_write!(self, p => {
            let mut tx = p.begin().await?;
            let (left, oldest): (i64, Option<String>) =
                sqlx::query_as(pending).bind(id).fetch_one(&mut *tx).await?;
            let dropped = match oldest {
                Some(oldest) if oldest.as_str() < cutoff => {
                    sqlx::query(drop).bind(id).execute(&mut *tx).await?.rows_affected() == 1
                }
                _ => false,
            };
            tx.commit().await.map(|_| dropped.then_some(left))
        })?)
    }

    /// Links of annotations (for tests and the API's view of one annotation).
    pub async fn export_links_of_annotation(&self, annotation_id: i64) -> DbResult<Vec<(i64, String, i64, bool)>> {
        let sql = "SELECT storage_id, object_key, exported_version, dirty FROM export_storage_links
                   WHERE annotation_id = $1 ORDER BY storage_id";
        Ok(
            on_read!(self, p => sqlx::query_as::<_, (i64, String, i64, bool)>(sql).bind(annotation_id).fetch_all(p).await)?,
        )
    }
}
