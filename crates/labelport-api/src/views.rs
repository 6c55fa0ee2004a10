//! JSON shapes of resources: see `labelport-views` (shared with exports).

pub use labelport_views::{
    annotation_json, default_project_settings, first_data_key, prediction_json, project_json, stored_json, task_json,
    user_json,
};
