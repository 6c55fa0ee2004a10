//! The page handlers. Each reads what it shows straight from the database
//! layer (the same queries as the API), and leaves every write to the API
//! (see `static/app.js`).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use labelport_api::extract::{csrf_token, session_cookie, AuthUser, PathId};
use labelport_api::tasks::{render_tasks, RenderCtx};
use labelport_db::{TaskCursor, UserRow};
use labelport_domain::access::Role;
use labelport_domain::LabelConfig;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::render::{page, PageError};

type PageResult = Result<Response, PageError>;

/// Tasks per data manager page.
pub const DATA_PAGE_SIZE: i64 = 50;
/// Projects listed on the projects page.
const PROJECTS_SHOWN: i64 = 500;
/// Characters of a task's value shown in a data manager cell.
const CELL_CHARS: usize = 160;

/// Percent-encodes a URL component (RFC 3986 unreserved characters stay).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signed-in user as the page header shows them.
#[derive(Serialize)]
struct Viewer {
    id: i64,
    email: String,
    name: String,
    role: &'static str,
    is_manager: bool,
}

fn viewer(user: &UserRow) -> Viewer {
    let name = format!("{} {}", user.first_name, user.last_name).trim().to_owned();
    Viewer {
        id: user.id,
        email: user.email.clone(),
        name: if name.is_empty() { user.username.clone() } else { name },
        role: user.role().as_str(),
        is_manager: user.role() >= Role::Manager,
    }
}

/// The CSRF token the page's scripts send with writes (empty when the
/// page was fetched with an API token instead of a session).
fn csrf(headers: &HeaderMap) -> String {
    session_cookie(headers).map(|s| csrf_token(&s)).unwrap_or_default()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path on this site only. Anything that
/// a browser could read as another host is refused, so the form is no open
/// redirect: a scheme-relative `//host`, a backslash (read as `/`), and any
/// control character or space (browsers drop tabs and newlines from URLs,
/// so `/\t/host` is `//host`). The path may use only URL characters.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~%?=&+,;:@!$'()*#".contains(c);
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && n.chars().all(allowed) => n.to_owned(),
        _ => "/projects".to_owned(),
    }
}

/// `GET /user/login` (public): the sign-in form; a signed-in browser goes
/// straight on.
pub async fn login(
    State(state): State<labelport_api::AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> PageResult {
    let next = safe_next(q.next.as_deref());
    if let Some(session) = session_cookie(&headers) {
        if state.db.user_by_session(&session).await?.is_some() {
            return Ok(Redirect::to(&next).into_response());
        }
    }
    page("login.html", context! { title => "Sign in", next => next })
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        for ok in [
            "/projects",
            "/projects/3/data?filter=labeled&order=desc",
            "/projects/3/label?task=9",
        ] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "https://evil.example",
            "evil.example",
            "/\\/evil.example",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/projects", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/projects");
    }
}

#[derive(Serialize)]
struct ProjectCard {
    id: i64,
    title: String,
    description: String,
    tasks: i64,
    annotations: i64,
    finished: i64,
    percent: i64,
}

/// `GET /projects` (any signed-in user): the projects they may see, newest
/// first, with task, annotation and completion counts.
pub async fn projects(
    State(state): State<labelport_api::AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
) -> PageResult {
    let member = (user.role() != Role::Admin).then_some(user.id);
    let (rows, total) = state.db.list_projects(member, 0, PROJECTS_SHOWN).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut all_counts = state.db.project_counts_of(&ids).await?;
    let mut cards = Vec::with_capacity(rows.len());
    for row in rows {
        let counts = all_counts.remove(&row.id).unwrap_or_default();
        cards.push(ProjectCard {
            id: row.id,
            title: row.title,
            description: row.description,
            tasks: counts.task_number,
            annotations: counts.total_annotations_number,
            finished: counts.finished_task_number,
            percent: percent(counts.finished_task_number, counts.task_number),
        });
    }
    page(
        "projects.html",
        context! { title => "Projects", user => viewer(&user), csrf => csrf(&headers), projects => cards, total => total, shown => PROJECTS_SHOWN },
    )
}

fn percent(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        0
    } else {
        part * 100 / whole
    }
}

/// Ready-made labeling configs offered on the project form.
#[derive(Serialize)]
struct Template {
    name: &'static str,
    config: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        name: "Image classification",
        config: r#"<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image">
    <Choice value="Cat"/>
    <Choice value="Dog"/>
  </Choices>
</View>"#,
    },
    Template {
        name: "Bounding boxes",
        config: r#"<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car" background="green"/>
    <Label value="Person" background="blue"/>
  </RectangleLabels>
  <Choices name="quality" toName="image">
    <Choice value="Clear"/>
    <Choice value="Blurry"/>
  </Choices>
</View>"#,
    },
    Template {
        name: "Text classification",
        config: r#"<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>"#,
    },
    Template {
        name: "Audio transcription",
        config: r#"<View>
  <Audio name="audio" value="$audio"/>
  <TextArea name="transcription" toName="audio" rows="4" editable="true" maxSubmissions="1"/>
</View>"#,
    },
];

/// `GET /projects/new` (managers): the project form, empty.
pub async fn new_project(AuthUser(user): AuthUser, headers: HeaderMap) -> PageResult {
    page(
        "project_form.html",
        context! {
            title => "Create project", user => viewer(&user), csrf => csrf(&headers),
            templates => TEMPLATES, project => Value::Null,
            label_config => TEMPLATES[0].config,
        },
    )
}

/// `GET /projects/{id}/settings` (the project's managers): the same form,
/// filled, saving with `PATCH /api/projects/{id}`.
pub async fn project_settings(
    State(state): State<labelport_api::AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    headers: HeaderMap,
) -> PageResult {
    let project = state.db.get_project(id).await?;
    page(
        "project_form.html",
        context! {
            title => format!("Settings · {}", project.title), user => viewer(&user), csrf => csrf(&headers),
            templates => TEMPLATES,
            project => context! { id => project.id, title => project.title, description => project.description },
            label_config => project.label_config,
        },
    )
}

/// One storage as a card of the Cloud Storage page.
#[derive(Serialize)]
struct StorageCard {
    id: i64,
    /// `source` or `target`.
    direction: &'static str,
    kind_title: &'static str,
    title: String,
    location: String,
    status: String,
    active: bool,
    last_sync: Option<String>,
    last_sync_count: Option<i64>,
    traceback: Option<String>,
    /// The storage's API path (`/api/storages/gcs/3`): the page's scripts
    /// poll it and call its `sync` and `DELETE`.
    api: String,
    can_delete_objects: bool,
    /// A source storage's interval sync: minutes, and when it runs next.
    sync_interval: Option<i64>,
    next_sync: Option<String>,
    /// A source storage whose media go by signed URL (its bucket's CORS
    /// policy matters).
    presign: bool,
    /// With bucket notifications on (a push service account set): the
    /// URL the Pub/Sub push subscription must call, which is also the
    /// audience its token must name; None without `LABELPORT_PUBLIC_URL`
    /// (the endpoint then refuses every push).
    push_endpoint: Option<String>,
    /// The push subscription's account, when notifications are on.
    push_account: Option<String>,
    /// The push endpoint is not `https://`, where Pub/Sub will not push.
    push_insecure: bool,
    /// When the last notification was applied (RFC 3339).
    last_notification: Option<String>,
}

fn storage_card(row: &labelport_db::StorageRow, public_url: &str) -> StorageCard {
    use labelport_domain::storage::{Direction, DirectionOptions};
    let direction = row.direction();
    let s = &row.settings;
    let prefix = s.prefix.trim_matches('/');
    StorageCard {
        id: row.id,
        direction: if direction == Direction::Import {
            "source"
        } else {
            "target"
        },
        kind_title: row.kind.title(),
        title: s.title.clone(),
        location: if prefix.is_empty() {
            format!("gs://{}", s.bucket)
        } else {
            format!("gs://{}/{prefix}", s.bucket)
        },
        status: row.state.status.clone(),
        active: row.state.is_active(),
        last_sync: row.state.last_sync.clone(),
        last_sync_count: row.state.last_sync_count,
        traceback: row.state.traceback.clone().filter(|t| !t.trim().is_empty()),
        api: match direction {
            Direction::Import => format!("/api/storages/{}/{}", row.kind.name(), row.id),
            Direction::Export => format!("/api/storages/export/{}/{}", row.kind.name(), row.id),
        },
        can_delete_objects: matches!(&s.options, DirectionOptions::Export(o) if o.can_delete_objects),
        sync_interval: s.import().and_then(|o| o.sync_interval),
        next_sync: row.next_sync_at.clone(),
        presign: s.import().is_some_and(|o| o.presign),
        push_endpoint: s
            .import()
            .filter(|o| !o.pubsub_push_service_account.is_empty() && !public_url.is_empty())
            .map(|_| {
                format!(
                    "{}/api/storages/{}/{}/notifications",
                    public_url.trim_end_matches('/'),
                    row.kind.name(),
                    row.id
                )
            }),
        push_insecure: !public_url.starts_with("https://"),
        push_account: s
            .import()
            .map(|o| o.pubsub_push_service_account.clone())
            .filter(|a| !a.is_empty()),
        last_notification: row.last_notification_at.clone(),
    }
}

/// `GET /projects/{id}/settings/storage` (the project's managers): the
/// project's source and target storages with their sync state; a running
/// sync's progress moves without a reload (the page polls the storage).
pub async fn storage_settings(
    State(state): State<labelport_api::AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    headers: HeaderMap,
) -> PageResult {
    use labelport_domain::storage::Direction;
    let project = state.db.get_project(id).await?;
    let sources: Vec<StorageCard> = state
        .db
        .list_storages(Direction::Import, None, Some(id))
        .await?
        .iter()
        .map(|row| storage_card(row, &state.public_url))
        .collect();
    let targets: Vec<StorageCard> = state
        .db
        .list_storages(Direction::Export, None, Some(id))
        .await?
        .iter()
        .map(|row| storage_card(row, &state.public_url))
        .collect();
    page(
        "storage.html",
        context! {
            title => format!("Cloud Storage · {}", project.title), user => viewer(&user), csrf => csrf(&headers),
            project => context! { id => project.id, title => project.title },
            sources => sources, targets => targets,
        },
    )
}

/// `GET /projects/{id}`: the project opens on its data manager.
pub async fn project_home(PathId(id): PathId) -> Redirect {
    Redirect::to(&format!("/projects/{id}/data"))
}

#[derive(Deserialize, Default)]
pub struct DataQuery {
    /// `labeled` | `unlabeled`; anything else: all tasks.
    filter: Option<String>,
    /// `desc` for newest first; else by id ascending.
    order: Option<String>,
    /// Set after an upload: how many tasks it imported (shown as a notice).
    imported: Option<String>,
    /// The page after this task id (keyset), or before it. Read leniently:
    /// a value that is not an id is ignored (the first page is shown), as a
    /// hand-edited URL should not end on an error page.
    after: Option<String>,
    before: Option<String>,
}

fn id_param(value: Option<&str>) -> Option<i64> {
    value.and_then(|v| v.trim().parse().ok())
}

/// One data column of the table: a key of the task data the config reads.
#[derive(Serialize)]
struct Column {
    key: String,
    /// Shown as a thumbnail (`<Image value="$key">`).
    image: bool,
}

#[derive(Serialize)]
struct Cell {
    image: Option<String>,
    text: String,
}

#[derive(Serialize)]
struct Row {
    id: i64,
    labeled: bool,
    annotations: i64,
    cancelled: i64,
    predictions: i64,
    cells: Vec<Cell>,
}

/// The data columns of a config: each top-level key it reads, once, in
/// document order; an `<Image>` that reads a key makes it a thumbnail.
fn columns(config: &LabelConfig) -> Vec<Column> {
    let mut out: Vec<Column> = Vec::new();
    for r in &config.refs {
        if out.iter().any(|c| c.key == r.key) {
            continue;
        }
        let image = config
            .objects
            .iter()
            .any(|o| o.tag == "Image" && o.value == r.path && r.path == r.key);
        out.push(Column {
            key: r.key.clone(),
            image,
        });
    }
    out
}

fn cell(value: Option<&Value>, image: bool) -> Cell {
    match value {
        Some(Value::String(s)) if image => Cell {
            image: Some(s.clone()),
            text: s.clone(),
        },
        Some(Value::String(s)) => Cell {
            image: None,
            text: shorten(s),
        },
        Some(Value::Null) | None => Cell {
            image: None,
            text: String::new(),
        },
        Some(other) => Cell {
            image: None,
            text: shorten(&other.to_string()),
        },
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(CELL_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `GET /projects/{id}/data` (the project's members): the data manager.
/// Keyset pages of [`DATA_PAGE_SIZE`] tasks (`?after=` / `?before=` a task
/// id), filtered by `?filter=labeled|unlabeled`, ordered by `?order=asc|desc`;
/// one range scan per page at any depth (`Db::task_keyset`).
pub async fn data_manager(
    State(state): State<labelport_api::AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    Query(q): Query<DataQuery>,
    headers: HeaderMap,
) -> PageResult {
    let project = state.db.get_project(id).await?;
    let counts = state.db.project_counts(id).await?;
    let labeled = match q.filter.as_deref() {
        Some("labeled") => Some(true),
        Some("unlabeled") => Some(false),
        _ => None,
    };
    let filter = match labeled {
        Some(true) => "labeled",
        Some(false) => "unlabeled",
        None => "all",
    };
    let descending = q.order.as_deref() == Some("desc");
    let cursor = match (id_param(q.after.as_deref()), id_param(q.before.as_deref())) {
        (Some(after), _) => TaskCursor::After(after),
        (None, Some(before)) => TaskCursor::Before(before),
        (None, None) => TaskCursor::Start,
    };
    let mut rows = state
        .db
        .task_keyset(id, cursor, descending, labeled, DATA_PAGE_SIZE + 1)
        .await?;
    // One row more than a page tells whether the page has a neighbour.
    let more = rows.len() as i64 > DATA_PAGE_SIZE;
    let (has_previous, has_next) = match cursor {
        TaskCursor::Start => (false, more),
        TaskCursor::After(_) => (true, more),
        TaskCursor::Before(_) => (more, true),
    };
    if more {
        match cursor {
            TaskCursor::Before(_) => {
                rows.remove(0);
            }
            _ => rows.truncate(DATA_PAGE_SIZE as usize),
        }
    }
    let config = LabelConfig::parse(&project.label_config).unwrap_or_default();
    let mut columns = columns(&config);
    let ctx = RenderCtx::for_reads(&state, id).await?;
    let tasks = render_tasks(&state.db, &rows, &ctx).await?;
    if columns.is_empty() {
        // A config that reads no key: show the keys the tasks have.
        if let Some(Value::Object(data)) = tasks.first().map(|t| &t["data"]) {
            columns = data
                .keys()
                .map(|k| Column {
                    key: k.clone(),
                    image: false,
                })
                .collect();
        }
    }
    let table: Vec<Row> = rows
        .iter()
        .zip(&tasks)
        .map(|(r, t)| Row {
            id: r.id,
            labeled: r.is_labeled,
            annotations: r.total_annotations,
            cancelled: r.cancelled_annotations,
            predictions: r.total_predictions,
            cells: columns.iter().map(|c| cell(t["data"].get(&c.key), c.image)).collect(),
        })
        .collect();
    let order = if descending { "desc" } else { "asc" };
    let link = |key: &str, id: i64| format!("/projects/{}/data?filter={filter}&order={order}&{key}={id}", project.id);
    let next_link = has_next.then(|| rows.last().map(|r| link("after", r.id))).flatten();
    let previous_link = has_previous
        .then(|| rows.first().map(|r| link("before", r.id)))
        .flatten();
    page(
        "data.html",
        context! {
            title => project.title.clone(), user => viewer(&user), csrf => csrf(&headers),
            project => context! { id => project.id, title => project.title, description => project.description },
            counts => context! {
                tasks => counts.task_number, finished => counts.finished_task_number,
                annotations => counts.total_annotations_number, skipped => counts.skipped_annotations_number,
                percent => percent(counts.finished_task_number, counts.task_number),
            },
            columns => columns, rows => table, filter => filter, order => order,
            next_link => next_link, previous_link => previous_link,
            // A cursor past the end (its tasks deleted meanwhile) shows no
            // rows: offer the first page instead of a dead end.
            first_link => (table.is_empty() && cursor != TaskCursor::Start)
                .then(|| format!("/projects/{}/data?filter={filter}&order={order}", project.id)),
            imported => id_param(q.imported.as_deref()),
        },
    )
}

/// A user as the editor shows them (`{id, pk, firstName, lastName}`; the
/// username stands in for an empty name).
fn editor_user(user: &UserRow) -> Value {
    let (first, last) = if user.first_name.is_empty() && user.last_name.is_empty() {
        (user.username.as_str(), "")
    } else {
        (user.first_name.as_str(), user.last_name.as_str())
    };
    serde_json::json!({
        "id": user.id, "pk": user.id, "firstName": first, "lastName": last,
        "username": user.username, "email": user.email,
    })
}

#[derive(Deserialize)]
pub struct LabelQuery {
    /// Label this task; without it, the next task of the stream. A value
    /// that is not a task id is a 404 page.
    task: Option<String>,
}

/// `GET /projects/{id}/label` (the project's members): Label Studio's
/// editor on one task: `?task=N`, or the next task the user has not
/// labeled ("Label all tasks", as `GET /api/projects/{id}/next`). The task
/// comes with its media URLs resolved, annotations and predictions.
pub async fn label(
    State(state): State<labelport_api::AppState>,
    AuthUser(user): AuthUser,
    PathId(id): PathId,
    Query(q): Query<LabelQuery>,
    headers: HeaderMap,
) -> PageResult {
    let project = state.db.get_project(id).await?;
    let row = match q.task.as_deref() {
        Some(task) => {
            let task = id_param(Some(task)).ok_or_else(labelport_api::error::ApiError::not_found)?;
            let row = state.db.get_task(task).await?;
            if row.project_id != id {
                return Err(labelport_api::error::ApiError::not_found().into());
            }
            Some(row)
        }
        None => state.db.next_task_for(id, user.id).await?,
    };
    let base = context! {
        title => format!("Label · {}", project.title), user => viewer(&user), csrf => csrf(&headers),
        project => context! { id => project.id, title => project.title },
        stream => q.task.is_none(),
        editor => crate::assets::EDITOR_VERSION,
    };
    let Some(row) = row else {
        let counts = state.db.project_counts(id).await?;
        return page(
            "label.html",
            context! { task => Value::Null, empty_project => counts.task_number == 0, ..base },
        );
    };
    let ctx = RenderCtx::for_reads(&state, id).await?;
    let task = render_tasks(&state.db, std::slice::from_ref(&row), &ctx)
        .await?
        .remove(0);
    // Annotators work on their own annotations only (the API lets them
    // change no other); managers and admins see everyone's.
    let mut annotations: Vec<Value> = task["annotations"].as_array().cloned().unwrap_or_default();
    if user.role() == Role::Annotator {
        annotations.retain(|a| a["completed_by"].as_i64() == Some(user.id));
    }
    // The editor names each annotation's author from `users`.
    let mut authors: Vec<Value> = vec![editor_user(&user)];
    for a in &annotations {
        if let Some(author) = a["completed_by"].as_i64() {
            if authors.iter().all(|u| u["id"] != author) {
                if let Some(u) = state.db.user_by_id(author).await? {
                    authors.push(editor_user(&u));
                }
            }
        }
    }
    let boot = serde_json::json!({
        "project": project.id,
        "config": project.label_config,
        "task": {
            "id": task["id"],
            "data": task["data"],
            "annotations": annotations,
            "predictions": task["predictions"],
        },
        "user": editor_user(&user),
        "users": authors,
        "stream": q.task.is_none(),
        // Where a manager checks the storages when media fail to load.
        "storage_check": (user.role() >= Role::Manager)
            .then(|| format!("/projects/{}/settings/storage?check=media", project.id)),
    });
    page(
        "label.html",
        context! { task => context! { id => row.id }, boot => boot, ..base },
    )
}
