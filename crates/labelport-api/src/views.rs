//! JSON shapes of resources, as Label Studio returns them.

use labelport_db::{AnnotationRow, PredictionRow, ProjectCounts, ProjectRow, TaskRow, UserRow};
use labelport_domain::task_data::show_undefined_under;
use labelport_domain::LabelConfig;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Parses a JSON column; a corrupt value is an internal error, not a panic.
pub fn stored_json(text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::Internal(format!("corrupt JSON column: {e}")))
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

pub fn user_json(user: &UserRow) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "avatar": null,
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
