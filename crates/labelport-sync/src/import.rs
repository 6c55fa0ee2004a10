//! The import sync engine: compares a bucket listing, page by page, with the
//! storage's links, and only touches what changed.
//!
//! - a new object becomes a task (files mode) or is read as a task file;
//! - an object whose generation is unchanged is skipped without download;
//! - a changed task file updates the tasks of its existing rows and adds
//!   new rows; rows gone from its end, and objects gone from the bucket,
//!   follow the storage's [`DeletionPolicy`];
//! - a bad row is reported as `key:position: message` and the rest goes on.
//!
//! Listing pages and link ranges are both in byte order of the key, so
//! memory depends on the page size, not the bucket size. Every write is
//! idempotent (links are unique per storage, key and row), so a sync that
//! is killed and run again ends with exactly the right tasks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use labelport_db::import_links::LinkState;
use labelport_db::tasks::LinkSpec;
use labelport_db::{Db, DbError};
use labelport_domain::import::{parse_task_element, NewTask};
use labelport_domain::task_data::DATA_UNDEFINED_NAME;
use labelport_storage::{ObjectMeta, ObjectStore, StorageError};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::readers::{read_rows, FileFormat, ReadError};

pub use labelport_domain::storage::{compile_filter, normalize_prefix, DeletionPolicy, KeyFilter};

/// A storage's sync settings, already validated.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    pub storage_id: i64,
    pub project_id: i64,
    pub maximum_annotations: i64,
    pub bucket: String,
    /// Normalised: empty, or ending with exactly one `/`.
    pub prefix: String,
    /// Matched at the start of the full object name.
    pub regex: Option<KeyFilter>,
    pub recursive: bool,
    pub use_blob_urls: bool,
    pub policy: DeletionPolicy,
    pub user_id: i64,
    /// The project's label config: in tasks mode a row whose data lacks a
    /// key the config reads is refused as a bad row, as an upload refuses
    /// it (the editor could not show it). None: rows are not checked.
    pub config: Option<std::sync::Arc<labelport_domain::label_config::LabelConfig>>,
}

/// Counters of a sync, reported while it runs and at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub objects_listed: u64,
    pub objects_unchanged: u64,
    pub objects_read: u64,
    pub objects_missing: u64,
    pub tasks_created: u64,
    pub tasks_updated: u64,
    pub tasks_existed: u64,
    pub tasks_deleted: u64,
    pub rows_failed: u64,
    /// The first [`MAX_LISTED_ERRORS`] errors as `key:position: message`.
    pub errors: Vec<String>,
}

pub const MAX_LISTED_ERRORS: usize = 100;

impl SyncReport {
    fn error(&mut self, message: String) {
        self.rows_failed += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(message);
        }
    }

    /// The counters as `meta` keys (Label Studio's and ours).
    pub fn meta(&self) -> Value {
        json!({
            "objects_listed": self.objects_listed,
            "objects_unchanged": self.objects_unchanged,
            "objects_read": self.objects_read,
            "objects_missing": self.objects_missing,
            "tasks_created": self.tasks_created,
            "tasks_updated": self.tasks_updated,
            "tasks_existed": self.tasks_existed,
            "tasks_deleted": self.tasks_deleted,
            "tasks_failed_validation": self.rows_failed,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("database error: {0}")]
    Db(#[from] DbError),
    #[error("the sync was stopped (its job lease was lost or the server is shutting down)")]
    Stopped,
}

/// Objects per listing page.
const LIST_PAGE: u32 = 1000;
/// Tasks per insert transaction.
const INSERT_BATCH: usize = 2000;

struct Pending {
    tasks: Vec<NewTask>,
    links: Vec<LinkSpec>,
}

pub struct ImportEngine<'a, S: ObjectStore> {
    db: &'a Db,
    store: &'a S,
    settings: &'a ImportSettings,
    report: SyncReport,
    progress: watch::Sender<SyncReport>,
    stop: Arc<AtomicBool>,
    pending: Pending,
    last_publish: Instant,
    /// What `/metrics` has been told of this sync so far.
    metered: (u64, u64),
    /// The batches being written, oldest first, each answering (tasks
    /// created, tasks in the batch); at most `Db::import_writers` of them.
    in_flight: VecDeque<tokio::task::JoinHandle<Result<(usize, usize), DbError>>>,
}

/// Prometheus counter: objects handled by syncs, by `direction` (`import`,
/// `export`) and `op` (`listed`; `written`, `deleted`).
pub const SYNC_OBJECTS: &str = "labelport_sync_objects_total";
/// Prometheus counter: tasks created by import syncs.
pub const SYNC_TASKS: &str = "labelport_sync_tasks_created_total";

impl<S: ObjectStore> Drop for ImportEngine<'_, S> {
    /// A sync that ends early (an error, a stop) still counts what it did,
    /// and a batch still being written is cancelled (its transaction rolls
    /// back), so nothing is written after the sync gave up its job.
    fn drop(&mut self) {
        for writing in self.in_flight.drain(..) {
            writing.abort();
        }
        self.meter();
    }
}

impl<'a, S: ObjectStore> ImportEngine<'a, S> {
    pub fn new(
        db: &'a Db,
        store: &'a S,
        settings: &'a ImportSettings,
        progress: watch::Sender<SyncReport>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        ImportEngine {
            db,
            store,
            settings,
            report: SyncReport::default(),
            progress,
            stop,
            pending: Pending {
                tasks: Vec::new(),
                links: Vec::new(),
            },
            last_publish: Instant::now(),
            metered: (0, 0),
            in_flight: VecDeque::new(),
        }
    }

    /// Adds what was done since the last call to the `/metrics` counters
    /// (batched: one update per progress report, not per object).
    fn meter(&mut self) {
        let (objects, tasks) = (self.report.objects_listed, self.report.tasks_created);
        metrics::counter!(SYNC_OBJECTS, "direction" => "import", "op" => "listed")
            .increment(objects.saturating_sub(self.metered.0));
        metrics::counter!(SYNC_TASKS).increment(tasks.saturating_sub(self.metered.1));
        self.metered = (objects, tasks);
    }

    fn publish(&mut self, force: bool) {
        if force || self.last_publish.elapsed().as_millis() >= 250 {
            self.meter();
            self.progress.send_replace(self.report.clone());
            self.last_publish = Instant::now();
        }
    }

    fn check_stop(&self) -> Result<(), SyncError> {
        if self.stop.load(Ordering::Relaxed) {
            Err(SyncError::Stopped)
        } else {
            Ok(())
        }
    }

    fn wanted(&self, key: &str) -> bool {
        !key.ends_with('/') && self.settings.regex.as_ref().is_none_or(|r| r.matches(key))
    }

    /// Whether the storage, as configured now, would list `key`: under the
    /// prefix, at the scanned depth, and matching the filter. Links of keys
    /// outside (the storage's scope changed) are left alone: their tasks
    /// stay and the deletion policy does not apply, as in Label Studio.
    fn in_scope(&self, key: &str) -> bool {
        labelport_domain::storage::key_in_scope(
            &self.settings.prefix,
            self.settings.recursive,
            self.settings.regex.as_ref(),
            key,
        )
    }

    /// Runs the whole sync; returns its report (errors of single rows are
    /// in the report; an `Err` means the sync could not go on).
    pub async fn run(mut self) -> Result<SyncReport, SyncError> {
        // Links made after this moment were made by someone else (a bucket
        // notification) for objects this listing may have missed: not this
        // sync's to judge missing.
        let started_at = labelport_db::now();
        let mut token: Option<String> = None;
        let mut after: Option<String> = None;
        loop {
            self.check_stop()?;
            let page = self
                .store
                .list_page(&self.settings.prefix, self.settings.recursive, token.take(), LIST_PAGE)
                .await?;
            let last_page = page.next_page_token.is_none();
            if page.objects.is_empty() && !last_page {
                token = page.next_page_token;
                continue;
            }
            let upto = if last_page {
                None
            } else {
                page.objects.last().map(|o| o.key.clone())
            };
            let links = self
                .db
                .links_in_range(self.settings.storage_id, after.as_deref(), upto.as_deref(), &started_at)
                .await?;
            let mut by_key: BTreeMap<String, Vec<LinkState>> = BTreeMap::new();
            for l in links {
                by_key.entry(l.object_key.clone()).or_default().push(l);
            }
            for object in page.objects {
                self.report.objects_listed += 1;
                if !self.wanted(&object.key) {
                    continue;
                }
                let existing = by_key.remove(&object.key);
                self.listed_object(object, existing).await?;
                self.publish(false);
            }
            // Links in this key range whose object was not listed: gone,
            // if the storage still covers them; this page's new tasks are
            // written first. (Not overlapped with the next page's link
            // reads: readers during every write keep SQLite's WAL from
            // being checkpointed, and a re-sync then read a WAL of the
            // whole first sync, twice as slowly.)
            self.flush().await?;
            for (key, links) in by_key {
                if self.in_scope(&key) && links.iter().all(|l| !l.made_since) {
                    self.missing(&key, &links, None).await?;
                }
            }
            self.publish(false);
            match page.next_page_token {
                Some(t) => {
                    token = Some(t);
                    after = upto;
                }
                None => break,
            }
        }
        self.flush().await?;
        self.publish(true);
        self.meter();
        Ok(std::mem::take(&mut self.report))
    }

    /// Brings one object's tasks up to date with the bucket by the rules of
    /// a full sync, for a bucket notification (issue 17): the object's
    /// current state is read from the bucket (a `stat`), so the event's own
    /// kind and generation only say *which* object to look at. Replays and
    /// out-of-order events therefore change nothing wrong: an older
    /// generation's finalize or delete finds the newer generation (already
    /// linked: unchanged; or read now), and a delete acts only when the
    /// object is really gone, through the storage's deletion policy. A key
    /// outside the storage's scope (prefix, depth, `regex_filter`) is left
    /// alone, as a sync would.
    ///
    /// Errors as [`ImportEngine::run`]; a transient storage error means
    /// "try again".
    pub async fn reconcile_object(mut self, key: &str) -> Result<SyncReport, SyncError> {
        if !self.in_scope(key) {
            return Ok(std::mem::take(&mut self.report));
        }
        let existing = self.db.links_of_object(self.settings.storage_id, key).await?;
        match self.store.stat(key).await {
            Ok(object) => {
                self.report.objects_listed += 1;
                let existing = (!existing.is_empty()).then_some(existing);
                self.listed_object(object, existing).await?;
            }
            Err(StorageError::NotFound(_)) => {
                if !existing.is_empty() {
                    self.missing(key, &existing, None).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.flush().await?;
        self.publish(true);
        self.meter();
        Ok(std::mem::take(&mut self.report))
    }

    /// One object found in the bucket, with the links it has (None: it has
    /// none yet): a new task or file read, nothing, or a re-read.
    async fn listed_object(&mut self, object: ObjectMeta, existing: Option<Vec<LinkState>>) -> Result<(), SyncError> {
        match existing {
            None => self.new_object(object).await,
            Some(existing) if existing.iter().all(|l| l.generation == object.generation) => {
                self.report.objects_unchanged += 1;
                self.report.tasks_existed += existing.len() as u64;
                if existing.iter().any(|l| !l.object_exists) {
                    self.db
                        .set_object_exists(self.settings.storage_id, &object.key, true)
                        .await?;
                }
                Ok(())
            }
            // All links unread (generation 0): an earlier run was
            // stopped while reading this file; read on, skip done rows.
            Some(existing) if existing.iter().all(|l| l.generation == 0) => {
                let linked: HashMap<i64, i64> = existing.iter().map(|l| (l.row_index, l.task_id)).collect();
                self.read_task_file(object, &linked, false).await
            }
            Some(existing) => self.changed_object(object, existing).await,
        }
    }

    async fn new_object(&mut self, object: ObjectMeta) -> Result<(), SyncError> {
        if self.settings.use_blob_urls {
            let uri = format!("gs://{}/{}", self.settings.bucket, object.key);
            self.queue(
                NewTask {
                    data: json!({ DATA_UNDEFINED_NAME: uri }),
                    meta: json!({}),
                    allow_skip: true,
                    annotations: vec![],
                    predictions: vec![],
                },
                LinkSpec {
                    key: object.key,
                    row_index: -1,
                    generation: object.generation,
                    etag: object.etag,
                },
            )
            .await
        } else {
            // Rows linked by an earlier, interrupted run are not read twice.
            let linked = self.db.links_of_object(self.settings.storage_id, &object.key).await?;
            let linked: HashMap<i64, i64> = linked.iter().map(|l| (l.row_index, l.task_id)).collect();
            self.read_task_file(object, &linked, false).await
        }
    }

    async fn changed_object(&mut self, object: ObjectMeta, existing: Vec<LinkState>) -> Result<(), SyncError> {
        if self.settings.use_blob_urls {
            // The task only holds the URI, which did not change.
            self.report.tasks_existed += existing.len() as u64;
            self.db
                .update_linked_tasks(
                    self.settings.storage_id,
                    &object.key,
                    Some((object.generation, &object.etag)),
                    &[],
                )
                .await?;
            return Ok(());
        }
        let linked: HashMap<i64, i64> = existing.iter().map(|l| (l.row_index, l.task_id)).collect();
        self.read_task_file(object, &linked, true).await
    }

    /// Reads one task file; `linked` maps row index → task id of rows that
    /// already have tasks (updated when `update` is set, else skipped).
    async fn read_task_file(
        &mut self,
        object: ObjectMeta,
        linked: &HashMap<i64, i64>,
        update: bool,
    ) -> Result<(), SyncError> {
        let key = object.key.clone();
        let Some(format) = FileFormat::for_key(&key) else {
            self.report.error(format!(
                "{key}: not a JSON, JSONL or Parquet file (with \"Tasks\" import, every matching object must be one; use regex_filter to skip others)"
            ));
            return Ok(());
        };
        let stream = match self.store.read_stream(&key, Some(object.generation), 0, None).await {
            Ok(s) => s,
            Err(StorageError::NotFound(_)) => return Ok(()), // replaced or deleted since the listing
            Err(e) => return Err(e.into()),
        };
        self.report.objects_read += 1;
        let mut rows = read_rows(format, &key, stream);
        let mut updates: Vec<(i64, String)> = Vec::new();
        let mut max_row: i64 = -2;
        let mut complete = true;
        let mut refused_for_config = false;
        while let Some(item) = rows.next().await {
            let row = match item {
                Ok(row) => row,
                // The connection broke half-way (reset, timeout, 5xx): not
                // the file's fault. What was read is saved, the file stays
                // marked unread, and the sync is retried; the next run reads
                // on from the first row without a task.
                Err(ReadError::Storage { source, .. }) if source.is_transient() => {
                    self.flush().await?;
                    self.db
                        .update_linked_tasks(self.settings.storage_id, &key, unread_mark(update), &updates)
                        .await?;
                    return Err(SyncError::Storage(source));
                }
                Err(e) => {
                    self.report.error(format!("{key}: {e}"));
                    complete = false;
                    break;
                }
            };
            max_row = max_row.max(row.row_index);
            let task = match row.value.and_then(parse_task_element) {
                Ok(t) => t,
                Err(message) => {
                    self.report.error(format!("{key}:{}: {message}", row.position));
                    continue;
                }
            };
            if let Some(Err(message)) = self.settings.config.as_deref().map(|c| c.check_task_data(&task.data)) {
                // Refused for the project's config, not for the file: the
                // file stays marked unread, so these rows come in once the
                // config reads what they hold (a bad JSON row waits for the
                // file to change instead).
                self.report.error(format!("{key}:{}: {message}", row.position));
                refused_for_config = true;
                continue;
            }
            match linked.get(&row.row_index) {
                Some(task_id) if update => {
                    updates.push((*task_id, task.data.to_string()));
                    self.report.tasks_updated += 1;
                }
                Some(_) => self.report.tasks_existed += 1,
                None => {
                    // Generation 0 marks the object as not fully read: a run
                    // killed half-way reads it again next time.
                    let link = LinkSpec {
                        key: key.clone(),
                        row_index: row.row_index,
                        generation: 0,
                        etag: String::new(),
                    };
                    self.queue(task, link).await?;
                }
            }
            if updates.len() >= INSERT_BATCH {
                self.db
                    .update_linked_tasks(self.settings.storage_id, &key, None, &updates)
                    .await?;
                updates.clear();
            }
            self.check_stop()?;
            self.publish(false);
        }
        self.flush().await?;
        if !complete || refused_for_config {
            // Keep the links marked unread so the next sync reads it again.
            self.db
                .update_linked_tasks(self.settings.storage_id, &key, unread_mark(update), &updates)
                .await?;
            return Ok(());
        }
        self.db
            .update_linked_tasks(
                self.settings.storage_id,
                &key,
                Some((object.generation, &object.etag)),
                &updates,
            )
            .await?;
        if update {
            // Rows past the new end of the file are gone.
            let gone: Vec<LinkState> = linked
                .iter()
                .filter(|(row, _)| **row > max_row)
                .map(|(row, task)| LinkState {
                    object_key: key.clone(),
                    row_index: *row,
                    generation: object.generation,
                    etag: object.etag.clone(),
                    task_id: *task,
                    object_exists: true,
                    made_since: false,
                })
                .collect();
            if !gone.is_empty() {
                self.missing(&key, &gone, Some(max_row + 1)).await?;
            }
        }
        Ok(())
    }

    async fn queue(&mut self, task: NewTask, link: LinkSpec) -> Result<(), SyncError> {
        self.pending.tasks.push(task);
        self.pending.links.push(link);
        if self.pending.tasks.len() >= INSERT_BATCH {
            self.start_flush().await?;
        }
        Ok(())
    }

    /// Starts writing the pending batch in its own task and returns: the
    /// next rows are read and built while the database writes these
    /// (issue 18, item 1). On SQLite one batch is in flight at a time (one
    /// writer); on PostgreSQL two, each on its own connection, their ids
    /// reserved here first, in order (`Db::reserve_import`, issue 18,
    /// item 4). Either way inner ids keep the file's order.
    async fn start_flush(&mut self) -> Result<(), SyncError> {
        while self.in_flight.len() >= self.db.import_writers() {
            self.settle_oldest().await?;
        }
        if self.pending.tasks.is_empty() {
            return Ok(());
        }
        let tasks = std::mem::take(&mut self.pending.tasks);
        let links = std::mem::take(&mut self.pending.links);
        let db = self.db.clone();
        let (project, maximum, user, storage) = (
            self.settings.project_id,
            self.settings.maximum_annotations,
            self.settings.user_id,
            self.settings.storage_id,
        );
        let reservation = self.db.reserve_import(project, tasks.len()).await?;
        self.in_flight.push_back(tokio::spawn(async move {
            let outcome = match reservation {
                Some(reserved) => {
                    db.import_reserved_tasks(&reserved, maximum, &tasks, user, Some((storage, &links)))
                        .await?
                }
                None => {
                    db.import_linked_tasks(project, maximum, &tasks, user, Some((storage, &links)))
                        .await?
                }
            };
            Ok((outcome.created, tasks.len()))
        }));
        Ok(())
    }

    /// Waits for every batch in flight and counts them.
    async fn settle(&mut self) -> Result<(), SyncError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight, if any, and counts it. A
    /// failed batch fails the sync (the engine then drops, cancelling the
    /// others); rows of a batch that did commit keep their links, and the
    /// next sync reads the file on from the rows without one.
    async fn settle_oldest(&mut self) -> Result<(), SyncError> {
        let Some(writing) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (created, total) = match writing.await {
            Ok(written) => written?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: only when the runtime shuts down.
            Err(_) => return Err(SyncError::Stopped),
        };
        self.report.tasks_created += created as u64;
        self.report.tasks_existed += (total - created) as u64;
        self.publish(false);
        Ok(())
    }

    /// Writes everything pending and waits until it is written (before the
    /// links are marked read, a deletion, the end of a sync).
    async fn flush(&mut self) -> Result<(), SyncError> {
        self.start_flush().await?;
        self.settle().await
    }

    /// Applies the deletion policy to the links of a vanished object (or,
    /// with `from_row`, to its rows from that index on).
    async fn missing(&mut self, key: &str, links: &[LinkState], from_row: Option<i64>) -> Result<(), SyncError> {
        if from_row.is_none() {
            self.report.objects_missing += 1;
        }
        let from_row = from_row.unwrap_or(i64::MIN);
        let storage = self.settings.storage_id;
        match self.settings.policy {
            DeletionPolicy::Keep => {}
            DeletionPolicy::Flag => {
                if links.iter().any(|l| l.object_exists) {
                    self.db.flag_rows_from(storage, key, from_row).await?;
                }
            }
            DeletionPolicy::DeleteUnannotated => {
                let (deleted, _flagged) = self.db.remove_unannotated_linked_tasks(storage, key, from_row).await?;
                self.report.tasks_deleted += deleted;
            }
        }
        Ok(())
    }
}

/// What a file read that did not finish leaves on its links so the next
/// sync reads it again. A new file (`update` false): generation 0, "not
/// fully read"; the next run reads on and skips rows that have tasks. A
/// changed file (`update` true): the links keep their old generation, so
/// the next run sees the file changed and reads it all again, updating the
/// rows it has (generation 0 would make it skip them, keeping old data).
fn unread_mark(update: bool) -> Option<(i64, &'static str)> {
    (!update).then_some((0, ""))
}
