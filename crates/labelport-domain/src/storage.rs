//! What a storage is, as one description shared by the API handlers, the
//! database, the jobs and the views: a **direction** (import "source" or
//! export "target"), a **kind** (how to reach the bucket: `gcs` today) and
//! its **settings** (the fields a client edits, Label Studio's names), with
//! the rules that check them. No I/O: connecting is the storage crate's
//! work (`labelport_storage::connect`), which adds the checks only a
//! connector can make (a service-account key that parses).
//!
//! Adding a kind: one [`StorageKind`] variant with its row in
//! [`StorageKind::ALL`], its connector, and its fields here if it has
//! fields of its own. Handlers, jobs and views take any kind.
//!
//! Source of the fields, defaults and rules: Label Studio's storage spec
//! (`shared/reference/label-studio-storage-spec.md` §2.2 import, §2.3
//! export) and `label-studio-sdk` 2.1.2's request shapes; the `gcswif`
//! fields from the SDK's `gcswif` sub-clients (spec §5, Enterprise only).

use serde::Deserialize;
use utoipa::ToSchema;

use crate::secret::Secret;
use crate::ValidationErrors;

/// Longest signed-URL lifetime Google allows: 7 days, in minutes (V4
/// signing: `X-Goog-Expires` ≤ 604800 s).
pub const MAX_PRESIGN_TTL_MINUTES: i64 = 10080;
/// The longest interval sync, in minutes: one year.
pub const MAX_SYNC_INTERVAL_MINUTES: i64 = 525_600;

/// Which way data flows between a project and a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A source storage: objects become tasks (`/api/storages/<kind>`).
    Import,
    /// A target storage: annotations become objects (`/api/storages/export/<kind>`).
    Export,
}

impl Direction {
    /// `import` | `export`: log fields, job payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Import => "import",
            Direction::Export => "export",
        }
    }

    /// The job kind that syncs a storage of this direction.
    pub fn job_kind(self) -> &'static str {
        match self {
            Direction::Import => IMPORT_SYNC,
            Direction::Export => EXPORT_SYNC,
        }
    }

    /// The jobs' dedup key of one storage: at most one queued-or-running
    /// sync per storage, whatever the number of processes.
    pub fn dedup_key(self, storage_id: i64) -> String {
        format!("{}:{storage_id}", self.job_kind())
    }

    /// The jobs' payload for one storage: `{"storage_id": N}`.
    pub fn payload(storage_id: i64) -> String {
        format!("{{\"storage_id\":{storage_id}}}")
    }
}

/// The job kind of import syncs.
pub const IMPORT_SYNC: &str = "import_sync";
/// The job kind that writes an export storage's dirty links and carries
/// out its deletions.
pub const EXPORT_SYNC: &str = "export_sync";

/// How a storage reaches its bucket: Label Studio's storage `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    /// Google Cloud Storage with a pasted service-account key, or the
    /// server's Application Default Credentials when none is given.
    Gcs,
    /// Google Cloud Storage through Workload Identity Federation: no key;
    /// the server's own identity where it runs (AWS, or a token set on the
    /// server) is exchanged for short-lived Google credentials of
    /// [`WifSettings::service_account_email`] (Label Studio Enterprise's
    /// `gcswif`).
    GcsWif,
}

impl StorageKind {
    /// Every kind this server serves, each with its settings row.
    pub const ALL: [StorageKind; 2] = [StorageKind::Gcs, StorageKind::GcsWif];

    /// The `type` in URLs and bodies: `/api/storages/gcs`.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Gcs => "gcs",
            StorageKind::GcsWif => "gcswif",
        }
    }

    /// What Label Studio's UI calls it (`/api/storages/types`).
    pub fn title(self) -> &'static str {
        match self {
            StorageKind::Gcs => "Google Cloud Storage",
            StorageKind::GcsWif => "Google Cloud Storage (WIF Auth)",
        }
    }

    /// The URI scheme of its objects in task data (`gs://bucket/key`).
    pub fn scheme(self) -> &'static str {
        match self {
            StorageKind::Gcs | StorageKind::GcsWif => "gs",
        }
    }

    pub fn parse(name: &str) -> Option<StorageKind> {
        StorageKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The types Label Studio's UI lists, in its order (the UI relies on it).
const LABEL_STUDIO_TYPES: [(&str, &str); 5] = [
    ("s3", "AWS S3"),
    ("gcs", "Google Cloud Storage"),
    ("azure", "Microsoft Azure"),
    ("redis", "Redis"),
    ("localfiles", "Local files"),
];

/// The type lists of `/api/storages/types` and `/api/storages/export/types`
/// as `(name, title)`: Label Studio's list in its order, each served kind
/// under its own title, and served kinds Label Studio does not list right
/// after the last one of the same URI scheme. Only the kinds of
/// [`StorageKind::ALL`] have endpoints here.
pub fn listed_types() -> Vec<(&'static str, &'static str)> {
    let mut types: Vec<(&str, &str)> = LABEL_STUDIO_TYPES
        .iter()
        .map(|&(name, title)| (name, StorageKind::parse(name).map_or(title, StorageKind::title)))
        .collect();
    for kind in StorageKind::ALL {
        if types.iter().any(|(n, _)| *n == kind.name()) {
            continue;
        }
        let after = types
            .iter()
            .rposition(|(n, _)| StorageKind::parse(n).is_some_and(|k| k.scheme() == kind.scheme()))
            .map_or(types.len(), |i| i + 1);
        types.insert(after, (kind.name(), kind.title()));
    }
    types
}

/// What happens to tasks whose object (or row) left the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Tasks stay as they are (Label Studio's behaviour; the default).
    #[default]
    Keep,
    /// Tasks stay; their links are flagged `object_exists = false`.
    Flag,
    /// Tasks without annotations are deleted; annotated ones are flagged.
    DeleteUnannotated,
}

impl DeletionPolicy {
    pub const NAMES: [&'static str; 3] = ["keep", "flag", "delete"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "keep" => Some(Self::Keep),
            "flag" => Some(Self::Flag),
            "delete" => Some(Self::DeleteUnannotated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Flag => "flag",
            Self::DeleteUnannotated => "delete",
        }
    }
}

/// How an export storage names and fills its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// `<prefix>/<annotation id>`: the annotation with its task nested
    /// (Label Studio's format; the default).
    #[default]
    Annotation,
    /// `<prefix>/<task id>.json`: the task with all its annotations.
    Task,
}

impl ExportFormat {
    pub const NAMES: [&'static str; 2] = ["annotation", "task"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "annotation" => Some(ExportFormat::Annotation),
            "task" => Some(ExportFormat::Task),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Annotation => "annotation",
            ExportFormat::Task => "task",
        }
    }
}

/// Settings only a source storage has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Media by 303 to a signed URL (true) or through the proxy (false).
    pub presign: bool,
    /// Signed-URL lifetime in minutes, 1..=[`MAX_PRESIGN_TTL_MINUTES`].
    pub presign_ttl: i64,
    /// false: only objects directly under the prefix (delimiter `/`).
    pub recursive_scan: bool,
    pub deletion_policy: DeletionPolicy,
    /// Interval sync: a sync every this many minutes, 1..=
    /// [`MAX_SYNC_INTERVAL_MINUTES`]; None: only when asked (issue 17).
    pub sync_interval: Option<i64>,
    /// Event-driven sync (issue 17): the service account whose OIDC token a
    /// Pub/Sub push subscription sends to `POST /api/storages/{kind}/{id}/notifications`
    /// (the token's `email` claim). Empty: the endpoint refuses every push.
    pub pubsub_push_service_account: String,
}

impl Default for ImportOptions {
    /// Label Studio's defaults: presign on, 1 minute, one level, keep.
    fn default() -> Self {
        ImportOptions {
            presign: true,
            presign_ttl: 1,
            recursive_scan: false,
            deletion_policy: DeletionPolicy::Keep,
            sync_interval: None,
            pubsub_push_service_account: String::new(),
        }
    }
}

/// Settings only a target storage has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Delete an annotation's object when the annotation (or its task or
    /// project) is deleted.
    pub can_delete_objects: bool,
    pub export_format: ExportFormat,
}

/// The direction's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectionOptions {
    Import(ImportOptions),
    Export(ExportOptions),
}

/// Everything a client edits on a storage, already checked. (Its `Debug`
/// never shows the credentials.)
#[derive(Clone, PartialEq, Eq)]
pub struct StorageSettings {
    pub title: String,
    pub description: String,
    /// The bucket's name, without `gs://` or `/`.
    pub bucket: String,
    /// As the client sent it; [`normalize_prefix`] gives the form used.
    pub prefix: String,
    /// Import: matched at the start of the full object name. Export:
    /// stored for compatibility, unused (as Label Studio).
    pub regex_filter: String,
    /// Import: one task per object (true) or task files (false). Export:
    /// stored for compatibility, unused.
    pub use_blob_urls: bool,
    pub google_project_id: String,
    /// A service-account key's JSON; None: the server's Application
    /// Default Credentials. Write-only in the API, never logged, sealed in
    /// the database.
    pub credentials: Option<Secret>,
    /// Workload Identity Federation (`gcswif` storages; empty otherwise).
    pub wif: WifSettings,
    pub options: DirectionOptions,
}

/// Where a `gcswif` storage gets its Google credentials: the pool and
/// provider that trust the server's identity, and the service account it
/// then acts as. None of it is secret. Google's rules for each shape:
/// <https://cloud.google.com/iam/docs/manage-workload-identity-pools-providers>.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WifSettings {
    /// `google_wif_pool_id`: 4–32 of `a-z 0-9 -`, not starting `gcp-`.
    pub pool_id: String,
    /// `google_wif_provider_id`: same shape as the pool id.
    pub provider_id: String,
    /// `google_service_account_email`: the account impersonated.
    pub service_account_email: String,
    /// `google_project_number`: the pool's project, as digits (not the id).
    pub project_number: String,
}

impl WifSettings {
    /// The provider's resource name, the `audience` of the STS exchange:
    /// `//iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/{pool}/providers/{provider}`
    /// (Google: "Workload Identity Federation", credential configuration).
    pub fn audience(&self) -> String {
        format!(
            "//iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool_id, self.provider_id
        )
    }

    /// Adds an error for each field of a `gcswif` storage that is missing
    /// or not of the shape Google allows, under Label Studio's field names.
    pub fn check(&self, errors: &mut ValidationErrors) {
        for (field, value, what) in [
            ("google_wif_pool_id", &self.pool_id, "workload identity pool id"),
            (
                "google_wif_provider_id",
                &self.provider_id,
                "workload identity pool provider id",
            ),
        ] {
            if value.is_empty() {
                errors.add(field, format!("This field is required: the {what}."));
            } else if !(4..=32).contains(&value.len())
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                errors.add(
                    field,
                    format!("{value:?} is not a {what}: Google allows 4 to 32 lowercase letters, digits and hyphens."),
                );
            } else if value.starts_with("gcp-") || value.starts_with('-') || value.ends_with('-') {
                errors.add(
                    field,
                    format!("{value:?} is not a {what}: it may not start with \"gcp-\" (reserved by Google) or start or end with a hyphen."),
                );
            }
        }
        let email = &self.service_account_email;
        if email.is_empty() {
            errors.add(
                "google_service_account_email",
                "This field is required: the e-mail address of the service account to act as.",
            );
        } else if !is_email(email) {
            errors.add(
                "google_service_account_email",
                format!("{email:?} is not an e-mail address (such as name@project-id.iam.gserviceaccount.com)."),
            );
        }
        let number = &self.project_number;
        if number.is_empty() {
            errors.add(
                "google_project_number",
                "This field is required: the pool's project number (IAM & Admin > Settings).",
            );
        } else if number.len() > 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
            errors.add(
                "google_project_number",
                format!("{number:?} is not a project number: it is digits only (the project id is google_project_id)."),
            );
        }
    }
}

/// A project id as Google allows it: 6–30 of `a-z 0-9 -`, a letter first,
/// no hyphen last; older ones may carry a domain (`example.com:my-project`).
fn is_project_id(s: &str) -> bool {
    let id = s.rsplit_once(':').map_or(s, |(_, id)| id);
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `local@domain.tld`, one `@`, no spaces or characters that would end a
/// URL path segment; the shape, not deliverability.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let ok = |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    s.len() <= 254
        && ok(local)
        && ok(domain)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("title", &self.title)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("regex_filter", &self.regex_filter)
            .field("use_blob_urls", &self.use_blob_urls)
            .field("google_project_id", &self.google_project_id)
            .field("credentials", &self.credentials)
            .field("wif", &self.wif)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A storage as clients send it (create, PATCH, PUT, validate, files): every
/// field optional, so PATCH sends only what changes; fields of the other
/// direction are ignored. `google_application_credentials` is write-only.
/// (No `Debug`: it would print the key.)
#[derive(Default, Deserialize, ToSchema)]
pub struct StorageInput {
    /// validate/files: an existing storage whose settings fill the gaps.
    pub id: Option<i64>,
    /// The project (required at create; a storage never moves).
    pub project: Option<i64>,
    pub title: Option<String>,
    pub description: Option<String>,
    /// The bucket's name (`gs://` and a trailing `/` are dropped).
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// Import: a regular expression matched at the start of each object's
    /// full name; empty: every object. Export: stored, unused.
    pub regex_filter: Option<String>,
    /// Import: true, one task per object; false, objects are task files
    /// (JSON, JSONL, Parquet). Export: stored, unused.
    pub use_blob_urls: Option<bool>,
    /// Service-account key JSON (or an `external_account` configuration),
    /// as a string or as the JSON object itself; empty means Application
    /// Default Credentials.
    #[serde(default, deserialize_with = "string_or_object")]
    pub google_application_credentials: Option<String>,
    pub google_project_id: Option<String>,
    /// `gcswif`: the workload identity pool id.
    pub google_wif_pool_id: Option<String>,
    /// `gcswif`: the pool's provider id.
    pub google_wif_provider_id: Option<String>,
    /// `gcswif`: the service account to act as (impersonated).
    pub google_service_account_email: Option<String>,
    /// `gcswif`: the pool's project number (digits).
    pub google_project_number: Option<String>,
    /// Import: media by signed URL (default true) or through the proxy.
    pub presign: Option<bool>,
    /// Import: signed-URL lifetime in minutes, 1–10080 (default 1).
    pub presign_ttl: Option<i64>,
    /// Import: scan sub-folders too (default false).
    pub recursive_scan: Option<bool>,
    /// Import: what happens to tasks whose object leaves the bucket: `keep`
    /// (default, as Label Studio), `flag`, or `delete` (tasks without
    /// annotations).
    pub deletion_policy: Option<String>,
    /// Import (a Labelport addition): sync every this many minutes,
    /// 1–525600; `0` or `null` turns it off (the default); absent leaves it
    /// as it is.
    #[serde(default, deserialize_with = "whole_minutes")]
    #[schema(value_type = Option<i64>)]
    pub sync_interval: Option<Option<i64>>,
    /// Import (a Labelport addition): the service account a Pub/Sub push
    /// subscription authenticates as when it delivers the bucket's
    /// notifications (`--push-auth-service-account`); empty turns
    /// notifications off (the default).
    pub pubsub_push_service_account: Option<String>,
    /// Export: delete an annotation's object when the annotation (or its
    /// task or project) is deleted. Default false.
    pub can_delete_objects: Option<bool>,
    /// Export: `annotation` (default, as Label Studio): `<prefix>/<annotation
    /// id>` holding the annotation with its task; `task`: `<prefix>/<task
    /// id>.json` holding the task with all its annotations.
    pub export_format: Option<String>,
    /// Accepted for compatibility; storages are always synchronizable.
    pub synchronizable: Option<bool>,
    /// files: how many objects to preview (1–10000, default 100).
    pub limit: Option<i64>,
}

/// `sync_interval`, which may be sent as `null`: absent is None (left as
/// it is; serde's `default`), `null` is `Some(None)`, a whole number of
/// minutes `Some(Some(n))`. Any other value (1.5, "often") is refused
/// naming the field, where a plain `i64` would give serde's bare "invalid
/// type".
fn whole_minutes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::Number(n)) if n.as_i64().is_some() => Ok(Some(n.as_i64())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "sync_interval must be a whole number of minutes (0 or null: off), not {other}"
        ))),
    }
}

/// A string, or a JSON object given as is (a key file pasted unquoted), as
/// its JSON text.
fn string_or_object<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(object @ serde_json::Value::Object(_)) => Ok(Some(object.to_string())),
        Some(_) => Err(serde::de::Error::custom(
            "google_application_credentials must be the key file's JSON, as a string or an object",
        )),
    }
}

impl StorageSettings {
    /// A new storage's settings before the client's fields: Label Studio's
    /// defaults for the direction.
    pub fn defaults(direction: Direction) -> StorageSettings {
        StorageSettings {
            title: String::new(),
            description: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            regex_filter: String::new(),
            use_blob_urls: false,
            google_project_id: String::new(),
            credentials: None,
            wif: WifSettings::default(),
            options: match direction {
                Direction::Import => DirectionOptions::Import(ImportOptions::default()),
                Direction::Export => DirectionOptions::Export(ExportOptions::default()),
            },
        }
    }

    pub fn direction(&self) -> Direction {
        match self.options {
            DirectionOptions::Import(_) => Direction::Import,
            DirectionOptions::Export(_) => Direction::Export,
        }
    }

    /// The source-storage settings; None on a target storage.
    pub fn import(&self) -> Option<&ImportOptions> {
        match &self.options {
            DirectionOptions::Import(o) => Some(o),
            DirectionOptions::Export(_) => None,
        }
    }

    /// The target-storage settings; None on a source storage.
    pub fn export(&self) -> Option<&ExportOptions> {
        match &self.options {
            DirectionOptions::Export(o) => Some(o),
            DirectionOptions::Import(_) => None,
        }
    }

    /// PUT's base: defaults, but the stored key is kept (it is write-only,
    /// so clients cannot send it back).
    pub fn replaced(&self) -> StorageSettings {
        StorageSettings {
            credentials: self.credentials.clone(),
            ..StorageSettings::defaults(self.direction())
        }
    }

    /// Applies `input` over these settings and checks every field, naming
    /// each bad one (400 `validation_errors`). Kind-specific checks (a key
    /// that parses) are the connector's: `labelport_storage::check_settings`.
    pub fn apply(self, input: &StorageInput) -> Result<StorageSettings, ValidationErrors> {
        let (settings, errors) = self.apply_collecting(input);
        errors.into_result().map(|()| settings)
    }

    /// As [`StorageSettings::apply`], but hands back the settings with the
    /// errors, so a caller can add its own checks and report all at once.
    pub fn apply_collecting(mut self, input: &StorageInput) -> (StorageSettings, ValidationErrors) {
        let mut errors = ValidationErrors::default();
        set(&mut self.title, &input.title);
        set(&mut self.description, &input.description);
        if let Some(v) = &input.bucket {
            self.bucket = normalize_bucket(v);
        }
        set(&mut self.prefix, &input.prefix);
        set(&mut self.regex_filter, &input.regex_filter);
        set(&mut self.use_blob_urls, &input.use_blob_urls);
        set(&mut self.google_project_id, &input.google_project_id);
        for (field, value) in [
            (&mut self.wif.pool_id, &input.google_wif_pool_id),
            (&mut self.wif.provider_id, &input.google_wif_provider_id),
            (&mut self.wif.service_account_email, &input.google_service_account_email),
            (&mut self.wif.project_number, &input.google_project_number),
        ] {
            if let Some(v) = value {
                *field = v.trim().to_owned();
            }
        }
        if let Some(v) = &input.google_application_credentials {
            self.credentials = (!v.trim().is_empty()).then(|| Secret::new(v.clone()));
        }
        if self.bucket.is_empty() {
            errors.add("bucket", "This field is required: the bucket name (without gs://).");
        } else if self.bucket.contains('/') {
            let (name, folder) = self.bucket.split_once('/').unwrap_or_default();
            errors.add(
                "bucket",
                format!(
                    "A bucket name has no '/': the bucket is \"{name}\"; put \"{folder}\" in the prefix \
                     (Bucket Prefix, with the import settings)."
                ),
            );
        }
        match &mut self.options {
            DirectionOptions::Import(o) => {
                set(&mut o.presign, &input.presign);
                set(&mut o.presign_ttl, &input.presign_ttl);
                set(&mut o.recursive_scan, &input.recursive_scan);
                if let Some(v) = &input.deletion_policy {
                    match DeletionPolicy::parse(v) {
                        Some(p) => o.deletion_policy = p,
                        None => errors.add(
                            "deletion_policy",
                            format!("Must be one of {}.", DeletionPolicy::NAMES.join(", ")),
                        ),
                    }
                }
                if let Some(v) = input.sync_interval {
                    match v {
                        None | Some(0) => o.sync_interval = None,
                        Some(m) if (1..=MAX_SYNC_INTERVAL_MINUTES).contains(&m) => o.sync_interval = Some(m),
                        Some(_) => errors.add(
                            "sync_interval",
                            format!(
                                "Must be a number of minutes from 1 to {MAX_SYNC_INTERVAL_MINUTES} (a year), \
                                 or 0 or null for no interval sync."
                            ),
                        ),
                    }
                }
                if let Some(v) = &input.pubsub_push_service_account {
                    let v = v.trim();
                    if !v.is_empty() && !is_email(v) {
                        errors.add(
                            "pubsub_push_service_account",
                            format!(
                                "{v:?} is not an e-mail address: give the service account the push subscription \
                                 authenticates as (name@project-id.iam.gserviceaccount.com), or leave it empty."
                            ),
                        );
                    }
                    o.pubsub_push_service_account = v.to_owned();
                }
                if !(1..=MAX_PRESIGN_TTL_MINUTES).contains(&o.presign_ttl) {
                    errors.add(
                        "presign_ttl",
                        format!("Must be between 1 and {MAX_PRESIGN_TTL_MINUTES} minutes (7 days, Google's limit)."),
                    );
                }
                if let Err(e) = compile_filter(&self.regex_filter) {
                    errors.add("regex_filter", e);
                }
            }
            DirectionOptions::Export(o) => {
                set(&mut o.can_delete_objects, &input.can_delete_objects);
                if let Some(v) = &input.export_format {
                    match ExportFormat::parse(v) {
                        Some(f) => o.export_format = f,
                        None => errors.add(
                            "export_format",
                            format!("Must be one of {}.", ExportFormat::NAMES.join(", ")),
                        ),
                    }
                }
            }
        }
        (self, errors)
    }

    /// The checks of a kind's own fields (no I/O), under Label Studio's
    /// field names: for `gcswif`, every WIF field present and of Google's
    /// shape, and no key (a `gcswif` storage never holds one).
    pub fn check_kind(&self, kind: StorageKind, errors: &mut ValidationErrors) {
        match kind {
            StorageKind::Gcs => {}
            StorageKind::GcsWif => {
                self.wif.check(errors);
                if !self.google_project_id.is_empty() && !is_project_id(&self.google_project_id) {
                    errors.add(
                        "google_project_id",
                        format!(
                            "{:?} is not a Google project id: 6 to 30 lowercase letters, digits and hyphens, \
                             starting with a letter (IAM & Admin > Settings; the number is google_project_number).",
                            self.google_project_id
                        ),
                    );
                }
                if self.credentials.is_some() {
                    errors.add(
                        "google_application_credentials",
                        "A gcswif storage uses no key: its credentials come from the workload identity pool. \
                         Leave this field empty (or use a gcs storage for a key).",
                    );
                }
            }
        }
    }

    /// Whether saving these settings over `before` must try the connection
    /// first. Import: always (as Label Studio). Export: when the place or
    /// the key changes, or deleting is newly asked for (Label Studio does
    /// not re-check; a typo is caught now rather than at the next save).
    pub fn needs_check_over(&self, before: &StorageSettings) -> bool {
        match (&self.options, &before.options) {
            (DirectionOptions::Export(new), DirectionOptions::Export(old)) => {
                self.bucket != before.bucket
                    || self.prefix != before.prefix
                    || self.credentials != before.credentials
                    || self.wif != before.wif
                    || (new.can_delete_objects && !old.can_delete_objects)
            }
            _ => true,
        }
    }

    /// Whether an export storage's object names change from `before` to
    /// these settings (bucket, prefix or format): what was written no
    /// longer counts and every link must be written again.
    pub fn moves_objects_from(&self, before: &StorageSettings) -> bool {
        self.bucket != before.bucket
            || self.prefix != before.prefix
            || self.export().map(|o| o.export_format) != before.export().map(|o| o.export_format)
    }
}

fn set<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}

/// A bucket as users type it (`gs://name/`) reduced to its name.
pub fn normalize_bucket(v: &str) -> String {
    v.trim().trim_start_matches("gs://").trim_end_matches('/').to_owned()
}

/// Prefix as Label Studio normalises it: stripped of `/` at both ends, then
/// one trailing `/` (empty stays empty).
pub fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim().trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// Whether a source storage lists `key`: under `prefix` (normalised, see
/// [`normalize_prefix`]), directly under it unless `recursive`, not a
/// folder placeholder (a name ending in `/`), and matching `filter`. One
/// rule for syncs and bucket notifications (Label Studio's scan: prefix,
/// delimiter `/` when not recursive, then `regex_filter`).
pub fn key_in_scope(prefix: &str, recursive: bool, filter: Option<&KeyFilter>, key: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| recursive || !rest.contains('/'))
        && !key.ends_with('/')
        && filter.is_none_or(|f| f.matches(key))
}

/// Largest compiled `regex_filter`, in bytes (the size limits of the
/// program and of the lazy DFA of the linear-time engine underneath).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Most backtracking steps one match may take: a pattern that needs more
/// (catastrophic backtracking, `(a+)+$` on a long name) does not match
/// that object, instead of hanging the sync.
pub const REGEX_BACKTRACK_LIMIT: usize = 1_000_000;

/// A compiled `regex_filter` with Python's `re.match` semantics (Label
/// Studio matches with Python's `re`): anchored at the start of the full
/// object name, not at the end; look-ahead and look-behind,
/// back-references (`\1`, `(?P=name)`), named groups (`(?P<name>…)`),
/// inline flags and `\Z`. `fancy-regex` runs patterns that need
/// backtracking with a step limit, and hands every other pattern to the
/// linear-time `regex` engine.
#[derive(Debug, Clone)]
pub struct KeyFilter {
    regex: fancy_regex::Regex,
}

impl KeyFilter {
    /// Whether `key` matches. A match that runs past
    /// [`REGEX_BACKTRACK_LIMIT`] counts as no match.
    pub fn matches(&self, key: &str) -> bool {
        self.regex.is_match(key).unwrap_or(false)
    }
}

/// Python's forms that the Rust engines spell differently: `\Z` (end of
/// string; `\z` here) and `(?P=name)` (`\k<name>` here). Escapes are
/// followed so `\\Z` (a backslash, then Z) stays as it is.
fn from_python_syntax(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('Z') => out.push_str("\\z"),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            '(' if chars.clone().take(3).collect::<String>() == "?P=" => {
                for _ in 0..3 {
                    chars.next();
                }
                let name: String = chars.by_ref().take_while(|&c| c != ')').collect();
                out.push_str(&format!("\\k<{name}>"));
            }
            other => out.push(other),
        }
    }
    out
}

fn build(pattern: &str) -> Result<fancy_regex::Regex, fancy_regex::Error> {
    fancy_regex::RegexBuilder::new(pattern)
        .backtrack_limit(REGEX_BACKTRACK_LIMIT)
        .delegate_size_limit(REGEX_SIZE_LIMIT)
        .delegate_dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Compiles a `regex_filter` (see [`KeyFilter`]); empty means no filter.
/// The error quotes the user's own pattern.
pub fn compile_filter(filter: &str) -> Result<Option<KeyFilter>, String> {
    if filter.is_empty() {
        return Ok(None);
    }
    let translated = from_python_syntax(filter);
    // Compiled alone first, so an error speaks of the user's pattern (not
    // of the anchored form below).
    build(&translated).map_err(|e| format!("regex_filter {filter:?} is not a valid regular expression: {e}"))?;
    // In verbose mode (`(?x)`) a `#` comment runs to the end of the line:
    // a newline (whitespace there) keeps the closing parenthesis out of it.
    let verbose = fancy_regex::Regex::new(r"\(\?[a-wyz]*x").is_ok_and(|r| r.is_match(&translated).unwrap_or(false));
    let end = if verbose { "\n)" } else { ")" };
    build(&format!("\\A(?:{translated}{end}"))
        .map(|regex| Some(KeyFilter { regex }))
        .map_err(|e| format!("regex_filter {filter:?} is not a valid regular expression: {e}"))
}

/// A storage's sync state, Label Studio's status machine: `initialized` →
/// `queued` → `in_progress` → `completed` | `completed_with_errors` |
/// `failed`, with what the last sync left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub status: String,
    /// When the last sync completed (RFC 3339).
    pub last_sync: Option<String>,
    /// Tasks made (import) or objects written (export) by the last sync.
    pub last_sync_count: Option<i64>,
    /// The id of the job of the last sync, as text (Label Studio's field).
    pub last_sync_job: Option<String>,
    /// The errors of the last sync, one a line.
    pub traceback: Option<String>,
    /// A JSON object: progress counters and Label Studio's `time_*` fields.
    pub meta: String,
}

impl SyncState {
    /// Whether a sync is waiting or running.
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "in_progress")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> StorageInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn each_direction_checks_its_own_fields_and_names_them() {
        let bad = input(r#"{"bucket": "gs://b/", "presign_ttl": 0, "deletion_policy": "nope", "export_format": "x"}"#);
        let import = StorageSettings::defaults(Direction::Import).apply(&bad).unwrap_err();
        let fields: Vec<&str> = import.0.keys().map(String::as_str).collect();
        assert_eq!(fields, ["deletion_policy", "presign_ttl"]);
        let export = StorageSettings::defaults(Direction::Export).apply(&bad).unwrap_err();
        assert_eq!(export.0.keys().collect::<Vec<_>>(), ["export_format"]);
        let ok = StorageSettings::defaults(Direction::Export)
            .apply(&input(r#"{"bucket": "gs://b/", "export_format": "task"}"#))
            .unwrap();
        assert_eq!(ok.bucket, "b");
        assert_eq!(ok.export().unwrap().export_format, ExportFormat::Task);
    }

    #[test]
    fn wif_fields_are_checked_for_googles_shapes_and_named() {
        let good = r#"{"bucket": "b", "google_project_id": "my-project-1", "google_wif_pool_id": "label-studio-pool-abc123",
            "google_wif_provider_id": "aws-provider", "google_service_account_email":
            "labelport@my-project.iam.gserviceaccount.com", "google_project_number": "123456789012"}"#;
        let settings = StorageSettings::defaults(Direction::Import)
            .apply(&input(good))
            .unwrap();
        let mut errors = ValidationErrors::default();
        settings.check_kind(StorageKind::GcsWif, &mut errors);
        assert!(errors.is_empty(), "{}", errors.summary());
        assert_eq!(
            settings.wif.audience(),
            "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/label-studio-pool-abc123/providers/aws-provider"
        );
        for (field, value, says) in [
            ("google_wif_pool_id", "abc", "4 to 32"),
            ("google_wif_pool_id", "Pool_1", "lowercase"),
            ("google_wif_pool_id", "gcp-pool", "reserved"),
            ("google_wif_provider_id", "", "required"),
            ("google_wif_provider_id", "a/../../x", "4 to 32"),
            ("google_service_account_email", "not-an-email", "e-mail"),
            ("google_service_account_email", "a@b/c.com", "e-mail"),
            ("google_project_number", "my-project", "digits only"),
            ("google_project_number", "", "required"),
            ("google_project_id", "My Project", "project id"),
            ("google_project_id", "abc", "project id"),
        ] {
            let mut body: serde_json::Value = serde_json::from_str(good).unwrap();
            body[field] = value.into();
            let settings = StorageSettings::defaults(Direction::Export)
                .apply(&input(&body.to_string()))
                .unwrap();
            let mut errors = ValidationErrors::default();
            settings.check_kind(StorageKind::GcsWif, &mut errors);
            assert_eq!(errors.0.keys().collect::<Vec<_>>(), [field], "{value:?}");
            assert!(errors.summary().contains(says), "{value:?}: {}", errors.summary());
            // The same fields mean nothing to a gcs storage.
            let mut errors = ValidationErrors::default();
            settings.check_kind(StorageKind::Gcs, &mut errors);
            assert!(errors.is_empty());
        }
        let keyed = StorageSettings::defaults(Direction::Import)
            .apply(&input(&good.replace(
                "\"bucket\"",
                "\"google_application_credentials\": \"{}\", \"bucket\"",
            )))
            .unwrap();
        let mut errors = ValidationErrors::default();
        keyed.check_kind(StorageKind::GcsWif, &mut errors);
        assert_eq!(errors.0.keys().collect::<Vec<_>>(), ["google_application_credentials"]);
    }

    #[test]
    fn credentials_may_be_pasted_as_a_string_or_as_the_object() {
        let object = input(r#"{"google_application_credentials": {"type": "service_account", "x": 1}}"#);
        let text = object.google_application_credentials.unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["type"],
            "service_account"
        );
        let string = input(r#"{"google_application_credentials": "{\"type\": \"x\"}"}"#);
        assert_eq!(
            string.google_application_credentials.as_deref(),
            Some(r#"{"type": "x"}"#)
        );
        assert!(input(r#"{"google_application_credentials": null}"#)
            .google_application_credentials
            .is_none());
        let e = serde_json::from_str::<StorageInput>(r#"{"google_application_credentials": 5}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("google_application_credentials"), "{e}");
    }

    #[test]
    fn both_gcs_kinds_are_listed_under_their_titles() {
        let types = listed_types();
        let gcs = types
            .iter()
            .position(|t| *t == ("gcs", "Google Cloud Storage"))
            .unwrap();
        assert_eq!(types[gcs + 1], ("gcswif", "Google Cloud Storage (WIF Auth)"));
    }

    #[test]
    fn a_filter_that_compiles_too_large_is_refused() {
        assert!(compile_filter(r".*\.jpg").is_ok());
        let e = compile_filter(r"\w{1000}\w{1000}\w{1000}").unwrap_err();
        assert!(e.contains("regex_filter"), "{e}");
    }

    /// Patterns as Label Studio users write them for Python's `re.match`,
    /// each with names it must and must not take.
    #[test]
    fn filters_take_pythons_syntax() {
        let cases: [(&str, &[&str], &[&str]); 12] = [
            (r"(?x) img / \d+  # numbered images", &["img/12"], &["img/x"]),
            (r"(?>a+)b|\u0041", &["aab", "A"], &["ac"]),
            (r"^(?!.*_thumb).*\.jpg$", &["a/b.jpg"], &["a/b_thumb.jpg", "a/b.png"]),
            (r"(\w+)_\1\.jpg", &["cat_cat.jpg", "cat_cat.jpg.bak"], &["cat_dog.jpg"]),
            (r".*\.jpg\Z", &["x/y.jpg"], &["x/y.jpg\n", "x/y.jpgx"]),
            (r"(?P<name>\w+)/(?P=name)\.png", &["a/a.png"], &["a/b.png"]),
            (r"(?i).*\.JPE?G", &["x.jpeg", "Y.JPG"], &["x.png"]),
            (r".*(?<!_mask)\.png", &["a.png"], &["a_mask.png"]),
            (r"img/", &["img/1.jpg"], &["x/img/1.jpg"]), // anchored at the start only
            (r"\d+", &["123abc"], &["abc123"]),
            (r"a|b", &["a1", "b1"], &["ca"]), // the whole pattern is anchored
            (r"\\Z", &["\\Z"], &["x"]),       // an escaped backslash, then Z
        ];
        for (pattern, yes, no) in cases {
            let f = compile_filter(pattern)
                .unwrap_or_else(|e| panic!("{pattern}: {e}"))
                .unwrap();
            for key in yes {
                assert!(f.matches(key), "{pattern} should match {key:?}");
            }
            for key in no {
                assert!(!f.matches(key), "{pattern} should not match {key:?}");
            }
        }
        // The error quotes the user's pattern, not the anchored form.
        let e = compile_filter("(unclosed").unwrap_err();
        assert!(e.contains("\"(unclosed\"") && !e.contains("\\A(?:"), "{e}");
    }

    #[test]
    fn catastrophic_backtracking_cannot_hang_a_sync() {
        let f = compile_filter(r"(a+)+\1b").unwrap().unwrap();
        let key = "a".repeat(5_000);
        let started = std::time::Instant::now();
        assert!(!f.matches(&key));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn put_keeps_the_key_and_debug_hides_it() {
        let mut s = StorageSettings::defaults(Direction::Import);
        s.credentials = Some(Secret::new("{\"private_key\": \"secret-material\"}".into()));
        s.title = "t".into();
        let replaced = s.replaced();
        assert_eq!(replaced.credentials, s.credentials);
        assert_eq!(replaced.title, "");
        assert!(!format!("{s:?}").contains("secret-material"));
    }

    #[test]
    fn export_rechecks_only_what_can_break_it() {
        let before = StorageSettings::defaults(Direction::Export)
            .apply(&input(r#"{"bucket": "b"}"#))
            .unwrap();
        let renamed = before.clone().apply(&input(r#"{"title": "new"}"#)).unwrap();
        assert!(!renamed.needs_check_over(&before));
        assert!(!renamed.moves_objects_from(&before));
        let moved = before.clone().apply(&input(r#"{"prefix": "p"}"#)).unwrap();
        assert!(moved.needs_check_over(&before) && moved.moves_objects_from(&before));
        let import = StorageSettings::defaults(Direction::Import)
            .apply(&input(r#"{"bucket": "b"}"#))
            .unwrap();
        assert!(
            import.needs_check_over(&import),
            "import storages are checked on every update"
        );
    }

    #[test]
    fn kinds_round_trip_and_are_listed_in_label_studios_order() {
        for kind in StorageKind::ALL {
            assert_eq!(StorageKind::parse(kind.name()), Some(kind));
        }
        let names: Vec<&str> = listed_types().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["s3", "gcs", "gcswif", "azure", "redis", "localfiles"]);
        assert_eq!(Direction::Export.dedup_key(7), "export_sync:7");
    }
}
