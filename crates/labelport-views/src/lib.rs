//! JSON shapes of resources, as Label Studio returns them: shared by the
//! API's responses and by what export storages write to buckets.
//!
//! Views render rows they are given; they never read the database (the
//! `labelport-db` dependency is for its row types only), so the caller
//! decides what is read, and how many queries a page costs.

use std::collections::HashMap;

use labelport_db::{AnnotationRow, PredictionRow, ProjectCounts, ProjectRow, StorageRow, TaskRow, UserRow};
use labelport_domain::storage::{DirectionOptions, StorageKind, SyncState};
use labelport_domain::task_data::show_undefined_under;
use labelport_domain::LabelConfig;
use serde_json::{json, Map, Value};

/// Why a row could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A JSON column (task data, result, meta, settings) does not parse.
    #[error("corrupt JSON column: {0}")]
    CorruptJson(String),
}

type ApiError = ViewError;

/// Parses a JSON column; a corrupt value is an error, not a panic.
pub fn stored_json(text: &str) -> Result<Value, ViewError> {
    serde_json::from_str(text).map_err(|e| ViewError::CorruptJson(e.to_string()))
}

/// Project settings Labelport stores and returns but does not act on, with
/// Label Studio's defaults. Only these keys are accepted on create/patch.
pub fn default_project_settings() -> Map<String, Value> {
    let v = json!({
        "expert_instruction": "",
        "show_instruction": false,
        "show_skip_button": true,
        "enable_empty_annotation": true,
        "show_annotation_history": false,
        "color": "#FFFFFF",
        "is_published": false,
        "is_draft": false,
        "model_version": "",
        "min_annotations_to_start_training": 0,
        "start_training_on_annotation_update": false,
        "show_collab_predictions": true,
        "sampling": "Sequential sampling",
        "show_ground_truth_first": false,
        "show_overlap_first": false,
        "overlap_cohort_percentage": 100,
        "task_data_login": null,
        "task_data_password": null,
        "control_weights": {},
        "evaluate_predictions_automatically": false,
        "skip_queue": "REQUEUE_FOR_OTHERS",
        "reveal_preannotations_interactively": false,
        "pinned_at": null,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("literal object"),
    }
}

/// The first data key of a stored config (where `$undefined$` is shown).
pub fn first_data_key(label_config: &str) -> Option<String> {
    LabelConfig::parse(label_config)
        .ok()?
        .first_data_key()
        .map(str::to_owned)
}

/// A user as Label Studio shows it, with the role both as Labelport names it
/// (`role`) and as Label Studio's `organization_membership` does (`AD`,
/// `MA`, `AN`). Never a password or token.
pub fn user_json(user: &UserRow) -> Value {
    let role = user.role();
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "avatar": null,
        "role": role.as_str(),
        "organization_membership": {
            "role": role.label_studio_code(),
            "active": true,
            "organization_id": 1,
            "user_type": "standard",
        },
    })
}

pub fn project_json(
    row: &ProjectRow,
    counts: &ProjectCounts,
    ground_truth_number: i64,
    creator: Option<&UserRow>,
) -> Result<Value, ApiError> {
    let mut out = default_project_settings();
    if let Value::Object(stored) = stored_json(&row.settings)? {
        out.extend(stored);
    }
    let parsed = LabelConfig::parse(&row.label_config).unwrap_or_default();
    let useful = counts.total_annotations_number;
    out.extend(
        json!({
            "id": row.id,
            "title": row.title,
            "description": row.description,
            "label_config": row.label_config,
            "maximum_annotations": row.maximum_annotations,
            "organization": 1,
            "created_by": creator.map(user_json),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "task_number": counts.task_number,
            "finished_task_number": counts.finished_task_number,
            "total_annotations_number": counts.total_annotations_number,
            "skipped_annotations_number": counts.skipped_annotations_number,
            "total_predictions_number": counts.total_predictions_number,
            "num_tasks_with_annotations": counts.num_tasks_with_annotations,
            "useful_annotation_number": useful,
            "ground_truth_number": ground_truth_number,
            "queue_total": counts.task_number,
            "queue_done": counts.finished_task_number,
            "parsed_label_config": parsed.parsed_json(),
            "config_has_control_tags": !parsed.controls.is_empty(),
            "config_suitable_for_bulk_annotation": false,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    Ok(Value::Object(out))
}

pub fn annotation_json(row: &AnnotationRow, username: Option<&str>) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.id,
        "result": stored_json(&row.result)?,
        "created_username": username.map(|u| format!(" {u}, {}", row.completed_by.unwrap_or_default())).unwrap_or_default(),
        "created_ago": "",
        "completed_by": row.completed_by,
        "was_cancelled": row.was_cancelled,
        "ground_truth": row.ground_truth,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "draft_created_at": null,
        "lead_time": row.lead_time,
        "import_id": null,
        "last_action": row.last_action,
        "bulk_created": false,
        "task": row.task_id,
        "project": row.project_id,
        "updated_by": row.updated_by,
        "parent_prediction": null,
        "parent_annotation": null,
        "last_created_by": null,
    }))
}

pub fn prediction_json(row: &PredictionRow) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.id,
        "result": stored_json(&row.result)?,
        "model_version": row.model_version,
        "created_ago": "",
        "score": row.score,
        "cluster": null,
        "neighbors": null,
        "mislabeling": 0.0,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "model": null,
        "model_run": null,
        "task": row.task_id,
        "project": row.project_id,
    }))
}

/// A task as shown to clients: `$undefined$` under the first data key, and
/// (when given) its annotations and predictions.
pub fn task_json(
    row: &TaskRow,
    first_key: Option<&str>,
    annotations: Option<Vec<Value>>,
    predictions: Option<Vec<Value>>,
) -> Result<Value, ApiError> {
    let mut data = stored_json(&row.data)?;
    show_undefined_under(&mut data, first_key);
    let mut out = json!({
        "id": row.id,
        "data": data,
        "meta": stored_json(&row.meta)?,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "inner_id": row.inner_id,
        "is_labeled": row.is_labeled,
        "overlap": row.overlap,
        "allow_skip": row.allow_skip,
        "total_annotations": row.total_annotations,
        "cancelled_annotations": row.cancelled_annotations,
        "total_predictions": row.total_predictions,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": null,
        "project": row.project_id,
        "updated_by": row.updated_by,
        "file_upload": null,
        "drafts": [],
    });
    if let Some(a) = annotations {
        out["annotations"] = Value::Array(a);
    }
    if let Some(p) = predictions {
        out["predictions"] = Value::Array(p);
    }
    Ok(out)
}

/// Tasks with their annotations and predictions (the caller reads those of
/// `rows`, e.g. with `Db::annotations_of_tasks` and `predictions_of_tasks`;
/// rows of other tasks are ignored), as the JSON export shows them: stored
/// URIs, `$undefined$` under `first_key`, children in the order given.
pub fn tasks_with_children(
    rows: &[TaskRow],
    annotations: &[AnnotationRow],
    predictions: &[PredictionRow],
    first_key: Option<&str>,
) -> Result<Vec<Value>, ViewError> {
    let mut by_task: HashMap<i64, Vec<Value>> = HashMap::new();
    for a in annotations {
        by_task.entry(a.task_id).or_default().push(annotation_json(a, None)?);
    }
    let mut predictions_by_task: HashMap<i64, Vec<Value>> = HashMap::new();
    for p in predictions {
        predictions_by_task
            .entry(p.task_id)
            .or_default()
            .push(prediction_json(p)?);
    }
    rows.iter()
        .map(|r| {
            task_json(
                r,
                first_key,
                Some(by_task.remove(&r.id).unwrap_or_default()),
                Some(predictions_by_task.remove(&r.id).unwrap_or_default()),
            )
        })
        .collect()
}

/// `completed_by` as export storages write it: `{id, first_name, last_name, email}`.
pub fn completed_by_json(id: Option<i64>, users: &HashMap<i64, UserRow>) -> Value {
    match id.and_then(|id| users.get(&id).map(|u| (id, u))) {
        Some((id, u)) => json!({"id": id, "first_name": u.first_name, "last_name": u.last_name, "email": u.email}),
        None => id.map(|id| json!({"id": id})).unwrap_or(Value::Null),
    }
}

/// One annotation as an export storage writes it (Label Studio's storage
/// format): the annotation with its task nested (without annotations) and
/// `completed_by` expanded.
pub fn storage_annotation_json(
    a: &AnnotationRow,
    task: &TaskRow,
    users: &HashMap<i64, UserRow>,
    first_key: Option<&str>,
) -> Result<Value, ViewError> {
    let username = a
        .completed_by
        .and_then(|id| users.get(&id))
        .map(|u| u.username.as_str());
    let mut out = annotation_json(a, username)?;
    out["task"] = task_json(task, first_key, None, None)?;
    out["completed_by"] = completed_by_json(a.completed_by, users);
    Ok(out)
}

/// One task with all its annotations (`completed_by` expanded) and
/// predictions: the object an export storage in task format writes.
pub fn storage_task_json(
    task: &TaskRow,
    annotations: &[AnnotationRow],
    predictions: &[PredictionRow],
    users: &HashMap<i64, UserRow>,
    first_key: Option<&str>,
) -> Result<Value, ViewError> {
    let mut list = Vec::with_capacity(annotations.len());
    for a in annotations {
        let username = a
            .completed_by
            .and_then(|id| users.get(&id))
            .map(|u| u.username.as_str());
        let mut v = annotation_json(a, username)?;
        v["completed_by"] = completed_by_json(a.completed_by, users);
        list.push(v);
    }
    let predictions = predictions.iter().map(prediction_json).collect::<Result<Vec<_>, _>>()?;
    task_json(task, first_key, Some(list), Some(predictions))
}

/// A storage as Label Studio shows it (`/api/storages/<type>/<id>` and
/// `/api/storages/export/<type>/<id>`), in `state` (the row's own, or one
/// the caller corrected): the shared fields, then the direction's own. The
/// credentials never appear.
pub fn storage_json(row: &StorageRow, state: &SyncState) -> Result<Value, ViewError> {
    let s = &row.settings;
    let mut out = json!({
        "id": row.id,
        "type": row.kind.name(),
        "synchronizable": true,
        "bucket": s.bucket,
        "prefix": s.prefix,
        "regex_filter": s.regex_filter,
        "use_blob_urls": s.use_blob_urls,
        "google_project_id": s.google_project_id,
        "last_sync": state.last_sync,
        "last_sync_count": state.last_sync_count,
        "last_sync_job": state.last_sync_job,
        "status": state.status,
        "traceback": state.traceback,
        "meta": stored_json(&state.meta)?,
        "title": s.title,
        "description": s.description,
        "created_at": row.created_at,
        "project": row.project_id,
    });
    let own = match &s.options {
        DirectionOptions::Import(o) => json!({
            "presign": o.presign,
            "presign_ttl": o.presign_ttl,
            "recursive_scan": o.recursive_scan,
            "deletion_policy": o.deletion_policy.as_str(),
            // Interval sync (Labelport): minutes, and when it runs next.
            "sync_interval": o.sync_interval,
            "next_sync": row.next_sync_at,
            // Bucket notifications by Pub/Sub push (Labelport): the push
            // subscription's service account; empty: off.
            "pubsub_push_service_account": o.pubsub_push_service_account,
            "last_notification": row.last_notification_at,
        }),
        DirectionOptions::Export(o) => json!({
            "can_delete_objects": o.can_delete_objects,
            "export_format": o.export_format.as_str(),
        }),
    };
    if let (Value::Object(out), Value::Object(own)) = (&mut out, own) {
        out.extend(own);
    }
    if row.kind == StorageKind::GcsWif {
        if let Value::Object(out) = &mut out {
            out.extend([
                ("google_wif_pool_id".to_owned(), json!(s.wif.pool_id)),
                ("google_wif_provider_id".to_owned(), json!(s.wif.provider_id)),
                (
                    "google_service_account_email".to_owned(),
                    json!(s.wif.service_account_email),
                ),
                ("google_project_number".to_owned(), json!(s.wif.project_number)),
            ]);
        }
    }
    Ok(out)
}
