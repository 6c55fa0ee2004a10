//! The export engine: writes an export storage's dirty links to its bucket
//! and carries out its queued deletions.
//!
//! Annotation writes mark links dirty in their own transaction (see
//! `labelport_db::export_storages`), so this engine only reads what is
//! waiting, in pages of annotation ids, uploads a page concurrently and
//! records each object written. Nothing is recorded that was not written:
//! a failed upload leaves its link dirty for the next run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use labelport_db::export_storages::{DirtyLink, ExportedLink};
use labelport_db::StorageRow;
use labelport_db::{Db, DbError, UserRow};
use labelport_storage::{ObjectStore, StorageError};
use labelport_views::{first_data_key, storage_annotation_json, storage_task_json, ViewError};
use tokio::sync::watch;

/// Links read (and objects rendered) per page.
const PAGE: i64 = 500;
/// Uploads in flight at once.
const CONCURRENCY: usize = 32;
/// Failures listed by name in the storage's traceback.
const MAX_LISTED_ERRORS: usize = 100;

pub use labelport_domain::storage::ExportFormat;

#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Objects written.
    pub written: u64,
    /// Objects deleted (or found already gone).
    pub deleted: u64,
    /// Uploads or deletions that failed after retries.
    pub failed: u64,
    /// The first failures, `annotation 12: <error>` / `delete <key>: <error>`.
    pub errors: Vec<String>,
}

impl ExportReport {
    fn fail(&mut self, message: String) {
        self.failed += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(message);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The bucket is gone, or the credentials no longer work: nothing
    /// further can be written this run.
    #[error("{0}")]
    Fatal(StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("stopped")]
    Stopped,
}

fn is_fatal(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::BucketNotFound(_)
            | StorageError::Auth(_)
            | StorageError::Federation { .. }
            | StorageError::PermissionDenied(_)
    )
}

/// One object to write and the links it settles.
struct Upload {
    key: String,
    body: Bytes,
    links: Vec<ExportedLink>,
    /// Named in error messages.
    what: String,
}

pub struct ExportEngine<'a, S: ObjectStore> {
    db: &'a Db,
    store: &'a S,
    storage: &'a StorageRow,
    format: ExportFormat,
    progress: watch::Sender<ExportReport>,
    stop: Arc<AtomicBool>,
    report: ExportReport,
}

impl<'a, S: ObjectStore> ExportEngine<'a, S> {
    pub fn new(
        db: &'a Db,
        store: &'a S,
        storage: &'a StorageRow,
        progress: watch::Sender<ExportReport>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        ExportEngine {
            db,
            store,
            storage,
            format: storage.settings.export().map(|o| o.export_format).unwrap_or_default(),
            progress,
            stop,
            report: ExportReport::default(),
        }
    }

    /// Deletions first (an object deleted then written again must end up
    /// written), then every dirty link.
    pub async fn run(mut self) -> Result<ExportReport, (ExportError, ExportReport)> {
        match self.run_inner().await {
            Ok(()) => Ok(self.report),
            Err(e) => Err((e, self.report)),
        }
    }

    async fn run_inner(&mut self) -> Result<(), ExportError> {
        self.delete_queued().await?;
        if self.storage.project_id.is_none() {
            return Ok(());
        }
        let first_key = match self.storage.project_id {
            Some(project) => first_data_key(&self.db.get_project(project).await?.label_config),
            None => None,
        };
        let users: HashMap<i64, UserRow> = self.db.list_users().await?.into_iter().map(|u| (u.id, u)).collect();
        let mut after = 0;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(ExportError::Stopped);
            }
            let links = self.db.dirty_export_links(self.storage.id, after, PAGE).await?;
            let Some(last) = links.last() else { break };
            after = last.annotation_id;
            let uploads = match self.format {
                ExportFormat::Annotation => self.annotation_uploads(&links, &users, first_key.as_deref()).await?,
                ExportFormat::Task => self.task_uploads(&links, &users, first_key.as_deref()).await?,
            };
            self.write_all(uploads).await?;
        }
        Ok(())
    }

    async fn delete_queued(&mut self) -> Result<(), ExportError> {
        let mut after = String::new();
        loop {
            let keys = self.db.export_deletions(self.storage.id, &after, PAGE).await?;
            let Some(last) = keys.last() else { return Ok(()) };
            after = last.clone();
            let store = self.store;
            let results: Vec<(String, Result<(), StorageError>)> = futures::stream::iter(keys)
                .map(|key| async move {
                    let r = match store.delete(&key).await {
                        Err(StorageError::NotFound(_)) => Ok(()),
                        other => other,
                    };
                    (key, r)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let mut done = Vec::with_capacity(results.len());
            let mut fatal = None;
            for (key, r) in results {
                match r {
                    Ok(()) => done.push(key),
                    Err(e) if is_fatal(&e) => fatal = Some(e),
                    Err(e) => self.report.fail(format!("delete {key}: {e}")),
                }
            }
            self.report.deleted += done.len() as u64;
            self.db.remove_export_deletions(self.storage.id, &done).await?;
            self.progress.send_replace(self.report.clone());
            if let Some(e) = fatal {
                return Err(ExportError::Fatal(e));
            }
        }
    }

    async fn annotation_uploads(
        &self,
        links: &[DirtyLink],
        users: &HashMap<i64, UserRow>,
        first_key: Option<&str>,
    ) -> Result<Vec<Upload>, ExportError> {
        let ids: Vec<i64> = links.iter().map(|l| l.annotation_id).collect();
        let annotations: HashMap<i64, _> = self
            .db
            .annotations_by_ids(&ids)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        let mut task_ids: Vec<i64> = links.iter().map(|l| l.task_id).collect();
        task_ids.sort_unstable();
        task_ids.dedup();
        let tasks: HashMap<i64, _> = self
            .db
            .tasks_by_ids(&task_ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let mut uploads = Vec::with_capacity(links.len());
        for link in links {
            // Deleted since the link was read: its link went with it.
            let (Some(a), Some(task)) = (annotations.get(&link.annotation_id), tasks.get(&link.task_id)) else {
                continue;
            };
            let body = serde_json::to_vec(&storage_annotation_json(a, task, users, first_key)?)
                .map_err(|e| ViewError::CorruptJson(e.to_string()))?;
            uploads.push(Upload {
                key: link.object_key.clone(),
                body: Bytes::from(body),
                links: vec![ExportedLink {
                    annotation_id: a.id,
                    version: a.version,
                    change_seq: link.change_seq,
                }],
                what: format!("annotation {}", a.id),
            });
        }
        Ok(uploads)
    }

    async fn task_uploads(
        &self,
        links: &[DirtyLink],
        users: &HashMap<i64, UserRow>,
        first_key: Option<&str>,
    ) -> Result<Vec<Upload>, ExportError> {
        let mut by_task: BTreeMap<i64, Vec<&DirtyLink>> = BTreeMap::new();
        for l in links {
            by_task.entry(l.task_id).or_default().push(l);
        }
        let task_ids: Vec<i64> = by_task.keys().copied().collect();
        let tasks = self.db.tasks_by_ids(&task_ids).await?;
        let mut annotations: HashMap<i64, Vec<_>> = HashMap::new();
        for a in self.db.annotations_of_tasks(&task_ids).await? {
            annotations.entry(a.task_id).or_default().push(a);
        }
        let mut predictions: HashMap<i64, Vec<_>> = HashMap::new();
        for p in self.db.predictions_of_tasks(&task_ids).await? {
            predictions.entry(p.task_id).or_default().push(p);
        }
        let mut uploads = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let list = annotations.remove(&task.id).unwrap_or_default();
            let preds = predictions.remove(&task.id).unwrap_or_default();
            let versions: HashMap<i64, i64> = list.iter().map(|a| (a.id, a.version)).collect();
            let dirty = &by_task[&task.id];
            let settled: Vec<ExportedLink> = dirty
                .iter()
                .filter_map(|l| {
                    versions.get(&l.annotation_id).map(|v| ExportedLink {
                        annotation_id: l.annotation_id,
                        version: *v,
                        change_seq: l.change_seq,
                    })
                })
                .collect();
            if settled.is_empty() {
                continue;
            }
            let body = serde_json::to_vec(&storage_task_json(task, &list, &preds, users, first_key)?)
                .map_err(|e| ViewError::CorruptJson(e.to_string()))?;
            let ids: Vec<String> = settled.iter().map(|l| l.annotation_id.to_string()).collect();
            uploads.push(Upload {
                key: dirty[0].object_key.clone(),
                body: Bytes::from(body),
                links: settled,
                what: format!("task {} (annotations {})", task.id, ids.join(", ")),
            });
        }
        Ok(uploads)
    }

    /// Uploads concurrently, then records in one transaction what was
    /// written. A bucket that is gone (or credentials that stopped working)
    /// ends the run after recording what did get written.
    async fn write_all(&mut self, uploads: Vec<Upload>) -> Result<(), ExportError> {
        let store = self.store;
        let results: Vec<(Upload, Result<(), StorageError>)> = futures::stream::iter(uploads)
            .map(|u| async move {
                let r = store
                    .write(&u.key, u.body.clone(), "application/json")
                    .await
                    .map(|_| ());
                (u, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut settled = Vec::with_capacity(results.len());
        let mut fatal = None;
        for (u, r) in results {
            match r {
                Ok(()) => {
                    self.report.written += 1;
                    settled.extend(u.links);
                }
                Err(e) if is_fatal(&e) => {
                    self.report.fail(format!("{}: {e}", u.what));
                    fatal = Some(e);
                }
                Err(e) => self.report.fail(format!("{}: {e}", u.what)),
            }
        }
        if self.stop.load(Ordering::Relaxed) {
            // The lease may be another worker's now: record nothing (those
            // links stay dirty and are written again; an upload is
            // idempotent), so a late, older upload is never marked done.
            return Err(ExportError::Stopped);
        }
        self.db.mark_exported(self.storage.id, &settled).await?;
        self.progress.send_replace(self.report.clone());
        match fatal {
            Some(e) => Err(ExportError::Fatal(e)),
            None => Ok(()),
        }
    }
}
