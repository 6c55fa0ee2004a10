//! Test connection (`POST …/validate`, and the check before a create or
//! an update): what is tried, and how a failure is answered.
//!
//! Label Studio answers every failed check with one `non_field_errors`
//! message (`label-studio-storage-spec.md` §7). Labelport keeps the shape —
//! 400, `validation_errors` — but files each problem under the field a user
//! would change (`bucket`, `prefix`, `google_application_credentials`, a WIF
//! field…) and says, in plain words, what to do next: which role to grant
//! to which account, what the prefix should look like. The web UI shows each
//! message at its field (issue 15, item 4).

use std::time::Duration;

use bytes::Bytes;
use labelport_domain::storage::{normalize_prefix, Direction, DirectionOptions, StorageKind, StorageSettings};
use labelport_domain::ValidationErrors;
use labelport_storage::wif::WifError;
use labelport_storage::{ObjectStore, StorageError};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The connection check gives up after this long.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// One of Google's predefined roles that the advice names
/// (<https://cloud.google.com/storage/docs/access-control/iam-roles>,
/// <https://cloud.google.com/iam/docs/service-account-permissions>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    /// `roles/storage.objectViewer`
    pub id: &'static str,
    /// Its title in the console: `Storage Object Viewer`.
    pub title: &'static str,
}

impl Role {
    /// `Storage Object Viewer (roles/storage.objectViewer)`.
    pub fn named(&self) -> String {
        format!("{} ({})", self.title, self.id)
    }
}

/// Reading: `storage.objects.list` and `storage.objects.get`.
pub(crate) const READ_ROLE: Role = Role {
    id: "roles/storage.objectViewer",
    title: "Storage Object Viewer",
};
/// Writing: `storage.objects.create`, and `storage.objects.delete`, which
/// GCS also asks for to overwrite an object (an annotation saved again).
pub(crate) const WRITE_ROLE: Role = Role {
    id: "roles/storage.objectUser",
    title: "Storage Object User",
};
/// The bucket's own metadata (`storage.buckets.get`: its CORS policy),
/// which the object roles above do not grant.
pub(crate) const BUCKET_READ_ROLE: Role = Role {
    id: "roles/storage.legacyBucketReader",
    title: "Storage Legacy Bucket Reader",
};
/// Signing as a service account (`iam.serviceAccounts.signBlob`), granted
/// on that account.
pub(crate) const TOKEN_CREATOR_ROLE: Role = Role {
    id: "roles/iam.serviceAccountTokenCreator",
    title: "Service Account Token Creator",
};

/// `storage.buckets.get`: only Test connection's CORS check reads the
/// bucket resource; syncs, media and exports use objects only.
pub(crate) const BUCKETS_GET: &str = "storage.buckets.get";

/// One IAM permission a storage needs: on what, for what, and the
/// predefined role that grants it. Serialized in the `permissions` member
/// of Test connection's answers.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Permission {
    /// `storage.objects.get`, `iam.serviceAccounts.signBlob`…
    pub permission: &'static str,
    /// Where it must be granted: `gs://{bucket}`, or
    /// `serviceAccounts/{email}` for signing.
    pub resource: String,
    /// What Labelport does with it.
    pub used_for: &'static str,
    /// The role to grant (`roles/…`) and its title.
    pub role: &'static str,
    pub role_title: &'static str,
    /// The gcloud command that grants the role, when the account is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_command: Option<String>,
}

/// The structured part of a permission diagnosis: who acts, and what it
/// lacks (`{"account": …, "missing": [Permission…]}`).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PermissionReport {
    pub account: String,
    pub missing: Vec<Permission>,
}

impl PermissionReport {
    /// `{"permissions": {…}}`, the member an answer carries.
    pub fn as_member(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("permissions".into(), serde_json::to_value(self).unwrap_or_default());
        m
    }

    /// "grant it A (roles/a) on gs://b (gcloud …); and B (roles/b) on …",
    /// one clause per role.
    pub fn next_step(&self) -> String {
        let mut clauses: Vec<String> = Vec::new();
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for p in &self.missing {
            if seen.contains(&(p.role, p.resource.as_str())) {
                continue;
            }
            seen.push((p.role, p.resource.as_str()));
            let on = if p.resource.starts_with("gs://") {
                "the bucket".to_owned()
            } else {
                p.resource.trim_start_matches("serviceAccounts/").to_owned()
            };
            let command = p.grant_command.as_ref().map_or(String::new(), |c| format!(" ({c})"));
            clauses.push(format!("{} ({}) on {on}{command}", p.role_title, p.role));
        }
        format!("grant it {}", clauses.join("; and "))
    }
}

/// A problem Test connection found: messages by field, and for missing
/// permissions which ones.
pub(crate) struct Problem {
    errors: ValidationErrors,
    permissions: Option<PermissionReport>,
}

impl From<ValidationErrors> for Problem {
    fn from(errors: ValidationErrors) -> Self {
        Problem {
            errors,
            permissions: None,
        }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        match p.permissions {
            Some(report) => ApiError::Diagnosed(p.errors, Box::new(report.as_member())),
            None => ApiError::Validation(p.errors),
        }
    }
}

/// Tries the connection as the storage is configured (Test connection).
/// Source: the bucket is readable and, with a prefix, lists at least one
/// object under it; with presign on and a federated identity, one URL is
/// signed through IAM. Target: a small probe object under the prefix is
/// written and deleted; with `can_delete_objects` a probe that cannot be
/// deleted is an error too.
///
/// Errors: a 400 whose `validation_errors` names the field to change and
/// the next step ([`advice`]); a check that takes over [`CHECK_TIMEOUT`] is
/// a `non_field_errors` 400.
pub(crate) async fn check_connection(state: &AppState, kind: StorageKind, s: &StorageSettings) -> ApiResult<()> {
    let check = async {
        let store = state.storage_env.connect(kind, s).await?;
        match probe(state, kind, s, &store).await {
            // Refused: ask GCS which permissions are held, so every missing
            // one is named at once (issue 17, item 1). Only after a refusal:
            // grants on a prefix or a managed folder are not seen by
            // testIamPermissions, and must not fail a check that works.
            Err(StorageError::PermissionDenied(detail)) => {
                let needed = needed_permissions(kind, s);
                let asked: Vec<&str> = needed.iter().map(|p| p.permission).collect();
                let missing: Option<Vec<Permission>> = store.granted_permissions(&asked).await.map(|granted| {
                    needed
                        .into_iter()
                        .filter(|p| !granted.iter().any(|g| g == p.permission))
                        .collect()
                });
                // The probe reads objects only: a missing storage.buckets.get
                // does not explain its refusal (it is named beside the rest).
                let explains = |m: &Vec<Permission>| m.iter().any(|p| p.permission != BUCKETS_GET);
                match missing {
                    Some(missing) if explains(&missing) => Ok(Some(missing_permissions(kind, s, missing))),
                    // GCS named another cause (a retention policy, a KMS
                    // key, billing): its own words say more than a guess.
                    _ if names_other_cause(&detail) => Err(StorageError::PermissionDenied(detail)),
                    // Every permission the probe uses held, and still
                    // refused: not IAM's doing (issue 17, item 3). A missing
                    // storage.buckets.get is named beside it.
                    Some(missing) => {
                        let mut problem: Problem =
                            network_refusal(kind, s, &detail, network_rule_named(&detail)).into();
                        if !missing.is_empty() {
                            problem.permissions = Some(PermissionReport {
                                account: account(kind, s),
                                missing,
                            });
                        }
                        Ok(Some(problem))
                    }
                    None => match network_rule_named(&detail) {
                        Some(rule) => Ok(Some(network_refusal(kind, s, &detail, Some(rule)).into())),
                        None => Err(StorageError::PermissionDenied(detail)),
                    },
                }
            }
            other => other,
        }
    };
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Err(_) => Err(ApiError::body(format!(
            "Connecting to gs://{} timed out after {CHECK_TIMEOUT:?}. Next step: try again; if it keeps \
             timing out, check that this server can reach Google Cloud Storage (proxy, firewall, VPC).",
            s.bucket
        ))),
        Ok(Err(e)) => Err(advice(kind, s, e)),
        Ok(Ok(Some(problem))) => Err(problem.into()),
        Ok(Ok(None)) => Ok(()),
    }
}

/// The tries of [`check_connection`]: Ok(None) when all pass, Ok(Some(…))
/// for a problem found by looking, Err for a refused or failed request.
async fn probe(
    state: &AppState,
    kind: StorageKind,
    s: &StorageSettings,
    store: &labelport_storage::gcs::GcsStore,
) -> Result<Option<Problem>, StorageError> {
    store.check().await?;
    match &s.options {
        DirectionOptions::Import(o) => {
            // The prefix as a sync lists it (`/images/` is `images/`).
            let prefix = normalize_prefix(&s.prefix);
            if !prefix.is_empty() {
                let page = store.list_page(&prefix, true, None, 1).await?;
                if page.objects.is_empty() {
                    return Ok(Some(empty_prefix(&s.bucket, &prefix).into()));
                }
            }
            // With presign on, media of a keyless storage will be signed
            // through IAM signBlob: sign once now, so a refusal (no Token
            // Creator role, no account to sign as) is found here rather
            // than by annotators.
            // Keyless: a federated identity, or the server's own (ADC),
            // except against the emulator without credentials, where media
            // go through the proxy (`signing::proxied_instead`).
            let keyless = match state.storage_env.credentials(kind, s) {
                Ok(labelport_storage::connect::Credentials::Federated(_)) => true,
                Ok(labelport_storage::connect::Credentials::Adc) => !state.storage_env.anonymous_emulator(),
                _ => false,
            };
            if o.presign && keyless {
                let probe = format!("{prefix}labelport-signing-check");
                if let Err(failure) = crate::signing::try_signed_url(state, kind, s, &probe, 60).await {
                    return Ok(Some(signing_refused(state, kind, s, failure).await));
                }
            }
            Ok(None)
        }
        DirectionOptions::Export(o) => {
            let prefix = s.prefix.trim_end_matches('/');
            let probe = format!(
                "{}{}.labelport-write-check-{}",
                prefix,
                if prefix.is_empty() { "" } else { "/" },
                uuid::Uuid::new_v4()
            );
            store
                .write(&probe, Bytes::from_static(b"{}"), "application/json")
                .await?;
            match store.delete(&probe).await {
                Ok(()) => Ok(None),
                Err(e) if o.can_delete_objects => Ok(Some(
                    ValidationErrors::field(
                        "can_delete_objects",
                        format!(
                            "\"Can delete objects\" is on, but objects in gs://{} cannot be deleted ({e}). \
                             Next step: grant {} {} on the bucket, or turn this option off.",
                            s.bucket,
                            account(kind, s),
                            WRITE_ROLE.named()
                        ),
                    )
                    .into(),
                )),
                Err(e) => {
                    tracing::warn!(
                        "export check: the probe gs://{}/{probe} could not be deleted: {e}",
                        s.bucket
                    );
                    Ok(None)
                }
            }
        }
    }
}

/// The bucket permissions a storage uses
/// (<https://cloud.google.com/storage/docs/access-control/iam-permissions>):
/// a source lists and reads objects, and with presign on Test connection
/// reads the bucket's CORS policy (`storage.buckets.get`); a target lists
/// and writes objects, and deletes them to overwrite (an annotation saved
/// again) and with `can_delete_objects`. Signing without a key
/// (`iam.serviceAccounts.signBlob`) is asked of IAM separately
/// ([`signing_refused`]): it is held on a service account, not the bucket.
fn needed_permissions(kind: StorageKind, s: &StorageSettings) -> Vec<Permission> {
    let resource = format!("gs://{}", s.bucket);
    let who = account(kind, s);
    let need = |permission: &'static str, used_for: &'static str, role: Role| Permission {
        permission,
        resource: resource.clone(),
        used_for,
        role: role.id,
        role_title: role.title,
        grant_command: grant_command(kind, s, &who, role),
    };
    match &s.options {
        DirectionOptions::Import(o) => {
            let mut needed = vec![
                need("storage.objects.list", "listing objects (sync, preview)", READ_ROLE),
                need(
                    "storage.objects.get",
                    "reading objects (task files, media through the proxy)",
                    READ_ROLE,
                ),
            ];
            if o.presign {
                needed.push(need(
                    BUCKETS_GET,
                    "reading the bucket's CORS policy (pre-signed URLs)",
                    BUCKET_READ_ROLE,
                ));
            }
            needed
        }
        DirectionOptions::Export(_) => vec![
            need("storage.objects.list", "listing exported annotations", WRITE_ROLE),
            need("storage.objects.create", "writing annotations", WRITE_ROLE),
            need(
                "storage.objects.delete",
                "overwriting annotations; deleting them (can_delete_objects)",
                WRITE_ROLE,
            ),
        ],
    }
}

/// The 400 naming the missing permissions, the roles that grant them and
/// the commands that grant those.
fn missing_permissions(kind: StorageKind, s: &StorageSettings, missing: Vec<Permission>) -> Problem {
    let report = PermissionReport {
        account: account(kind, s),
        missing,
    };
    let names: Vec<&str> = report.missing.iter().map(|p| p.permission).collect();
    let message = format!(
        "{} lacks {} on gs://{}. Next step: {}.",
        report.account,
        names.join(", "),
        s.bucket,
        report.next_step()
    );
    Problem {
        errors: ValidationErrors::field(credentials_field(kind), message),
        permissions: Some(report),
    }
}

/// When the bucket's CORS policy could not be read: whether the account
/// lacks `storage.buckets.get` on the bucket (GCS's `testIamPermissions`),
/// as a report; None when it holds it or GCS cannot say.
pub(crate) async fn bucket_read_missing(
    store: &labelport_storage::gcs::GcsStore,
    kind: StorageKind,
    s: &StorageSettings,
) -> Option<PermissionReport> {
    let granted = store.granted_permissions(&[BUCKETS_GET]).await?;
    if granted.iter().any(|g| g == BUCKETS_GET) {
        return None;
    }
    let missing = needed_permissions(kind, s)
        .into_iter()
        .filter(|p| p.permission == BUCKETS_GET)
        .collect();
    Some(PermissionReport {
        account: account(kind, s),
        missing,
    })
}

/// The 400 for a URL that could not be signed. After IAM refused
/// `signBlob` (403), IAM's `testIamPermissions` on the account says whether
/// `iam.serviceAccounts.signBlob` is missing: then that permission and the
/// role that grants it (Token Creator, on the account; the command when the
/// identity asking is the account itself); when it is held, the refusal is
/// not IAM's roles (an API disabled, an organization policy). Any other
/// failure is shown as it came.
async fn signing_refused(
    state: &AppState,
    kind: StorageKind,
    s: &StorageSettings,
    failure: crate::signing::SigningFailure,
) -> Problem {
    let reason = failure.reason;
    let turn_off = "or turn pre-signed URLs off so that media go through Labelport's proxy";
    let plain = |message: String| -> Problem { ValidationErrors::field("presign", message).into() };
    let Some((email, as_itself)) = failure.refused_as else {
        return plain(format!(
            "Pre-signed URLs cannot be made for gs://{}: {reason}. Next step: fix that, {turn_off}.",
            s.bucket
        ));
    };
    match crate::signing::sign_blob_granted(state, kind, s).await {
        Some(false) => {}
        Some(true) => {
            return plain(format!(
                "Pre-signed URLs cannot be made for gs://{}: IAM refused signBlob ({reason}), although the identity \
                 signing holds {} on {email}, so the refusal is not about roles. Next step: check that the IAM \
                 Service Account Credentials API (iamcredentials.googleapis.com) is enabled in the project of \
                 {email} and that no organization policy or VPC Service Controls perimeter blocks it, {turn_off}.",
                s.bucket,
                crate::signing::SIGN_BLOB
            ))
        }
        None => {
            return plain(format!(
                "Pre-signed URLs cannot be made for gs://{}: {reason}. Next step: grant the identity signing {} on \
                 {email}, {turn_off}.",
                s.bucket,
                TOKEN_CREATOR_ROLE.named()
            ))
        }
    }
    // The account signs with its own token (impersonated, a key file, the
    // metadata server): it needs the role on itself. Another principal
    // (a federated identity signing as a named account) needs it on the
    // account; its member name is not known here.
    let who = if as_itself {
        format!("the service account {email}")
    } else {
        "the identity this storage signs with".to_owned()
    };
    let report = PermissionReport {
        account: who.clone(),
        missing: vec![Permission {
            permission: crate::signing::SIGN_BLOB,
            resource: format!("serviceAccounts/{email}"),
            used_for: "signing media URLs without a key (pre-signed URLs)",
            role: TOKEN_CREATOR_ROLE.id,
            role_title: TOKEN_CREATOR_ROLE.title,
            grant_command: as_itself.then(|| {
                format!(
                    "gcloud iam service-accounts add-iam-policy-binding {email} \
                     --member=serviceAccount:{email} --role={}",
                    TOKEN_CREATOR_ROLE.id
                )
            }),
        }],
    };
    // IAM's own refusal is in the server log; the message says what the
    // permission check found, which is what to act on.
    tracing::info!("signing check for gs://{}: {reason}", s.bucket);
    let on = if as_itself { "itself".to_owned() } else { email.clone() };
    let message = format!(
        "Pre-signed URLs cannot be made for gs://{}: {who} lacks {} on {on}, so IAM refuses to sign. Next step: \
         {}, {turn_off}.",
        s.bucket,
        crate::signing::SIGN_BLOB,
        report.next_step()
    );
    Problem {
        errors: ValidationErrors::field("presign", message),
        permissions: Some(report),
    }
}

/// `gcloud storage buckets add-iam-policy-binding …` granting `role` on
/// the bucket to the account, when it is known.
fn grant_command(kind: StorageKind, s: &StorageSettings, who: &str, role: Role) -> Option<String> {
    let member = match kind {
        StorageKind::GcsWif => Some(s.wif.service_account_email.as_str()),
        StorageKind::Gcs => None,
    }
    .filter(|e| !e.is_empty())
    .map(str::to_owned)
    .or_else(|| who.strip_prefix("the service account ").map(str::to_owned))?;
    Some(format!(
        "gcloud storage buckets add-iam-policy-binding gs://{} --member=serviceAccount:{member} --role={}",
        s.bucket, role.id
    ))
}

/// A network rule that refuses requests whatever the caller's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkRule {
    /// The bucket's IP filter (Google: "Bucket IP filtering").
    IpFilter,
    /// A VPC Service Controls perimeter (its 403 reads "Request is
    /// prohibited by organization's policy. vpcServiceControlsUniqueIdentifier: …").
    Perimeter,
}

/// The network rule a refusal's own words name, if any.
fn network_rule_named(detail: &str) -> Option<NetworkRule> {
    let d = detail.to_ascii_lowercase();
    if [
        "vpcservicecontrols",
        "vpc service controls",
        "organization's policy",
        "organization\\u0027s policy",
    ]
    .iter()
    .any(|w| d.contains(w))
    {
        Some(NetworkRule::Perimeter)
    } else if ["ip filter", "ipfilter", "ip address"].iter().any(|w| d.contains(w)) {
        Some(NetworkRule::IpFilter)
    } else {
        None
    }
}

/// Whether a refusal names a cause that is neither IAM nor the network
/// (a retention policy or hold, a customer-managed encryption key, billing,
/// a requester-pays bucket): its message is then shown as it is.
fn names_other_cause(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "retention",
        "temporary hold",
        "event-based hold",
        "object hold",
        "kms",
        "encryption key",
        "billing",
        "requester pays",
        "userproject",
    ]
    .iter()
    .any(|w| d.contains(w))
}

/// The 400 for a refusal that IAM does not explain: GCS refused although
/// `testIamPermissions` reports every needed permission held (`rule` None:
/// the IP filter is the likely cause), or its message names a network rule.
/// A bucket's IP filter refuses requests from addresses outside its allowed
/// ranges or VPC networks with a 403 whatever the caller's roles (Google:
/// "Bucket IP filtering"), as does a VPC Service Controls perimeter. With
/// presign on, browsers fetch objects themselves, from their own addresses.
fn network_refusal(
    kind: StorageKind,
    s: &StorageSettings,
    detail: &str,
    rule: Option<NetworkRule>,
) -> ValidationErrors {
    let who = account(kind, s);
    let (why, next) = match rule {
        None => (
            format!(
                "Google refused ({detail}) although {who} holds every permission this check uses. That is how a \
                 bucket's IP filter answers a request from an address it does not allow (or a VPC Service \
                 Controls perimeter, or an IAM condition): the bucket's IP filter probably does not allow this \
                 server's address."
            ),
            ip_filter_step(&s.bucket),
        ),
        Some(NetworkRule::IpFilter) => (
            format!("The bucket's IP filter does not allow this server's address ({detail})."),
            ip_filter_step(&s.bucket),
        ),
        Some(NetworkRule::Perimeter) => (
            format!("A VPC Service Controls perimeter does not allow this request ({detail})."),
            "ask your organization's admin for an ingress rule that lets this server (its network or its \
             identity) reach the project of the bucket, or run Labelport inside the perimeter."
                .to_owned(),
        ),
    };
    let presign = match s.import() {
        Some(o) if o.presign => {
            " Pre-signed URLs are on: browsers outside the allowed ranges cannot load signed URLs either, so use \
             the proxy (turn pre-signed URLs off) for a bucket behind an IP filter."
        }
        _ => "",
    };
    ValidationErrors::field("bucket", format!("{why} Next step: {next}{presign}"))
}

fn ip_filter_step(bucket: &str) -> String {
    format!(
        "add the address this server connects from (its outbound or NAT address; inside Google Cloud, its VPC \
         network) to the bucket's IP filter (gcloud alpha storage buckets update gs://{bucket} \
         --ip-filter-file=ip-filter.json), or run Labelport inside an allowed network."
    )
}

fn empty_prefix(bucket: &str, prefix: &str) -> ValidationErrors {
    ValidationErrors::field(
        "prefix",
        format!(
            "No objects found in gs://{bucket}/{prefix}: the prefix does not exist or is empty. Next step: \
             check the prefix — a folder path inside the bucket such as images/2024/, without gs:// or the \
             bucket's name — or leave it empty to use the whole bucket."
        ),
    )
}

/// Who the storage acts as, for advice: the key's `client_email`, the WIF
/// service account, or the server's own identity.
fn account(kind: StorageKind, s: &StorageSettings) -> String {
    let email = match kind {
        StorageKind::GcsWif => Some(s.wif.service_account_email.clone()).filter(|e| !e.is_empty()),
        StorageKind::Gcs => {
            let Some(pasted) = s
                .credentials
                .as_ref()
                .and_then(|c| serde_json::from_str::<serde_json::Value>(c.expose()).ok())
            else {
                return "the server's own Google identity".to_owned();
            };
            // A key names its account; an external_account configuration
            // names the one it impersonates in its URL, if any. (Only these
            // two public fields are read: nothing of the key goes out.)
            let key_email = pasted.get("client_email").and_then(|v| v.as_str()).map(str::to_owned);
            let impersonated = pasted
                .get("service_account_impersonation_url")
                .and_then(|v| v.as_str())
                .and_then(|url| url.split("serviceAccounts/").nth(1))
                .and_then(|rest| rest.split(':').next())
                .map(str::to_owned);
            match key_email.or(impersonated) {
                Some(e) => Some(e),
                None => return "the federated identity of the pasted configuration".to_owned(),
            }
        }
    };
    match email {
        Some(e) => format!("the service account {e}"),
        None => "the server's own Google identity".to_owned(),
    }
}

/// The field a credentials problem is filed under for this kind.
fn credentials_field(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Gcs => "google_application_credentials",
        StorageKind::GcsWif => "google_service_account_email",
    }
}

/// A failed check as the 400 a user can act on: the field concerned and,
/// in plain words, the next step.
pub(crate) fn advice(kind: StorageKind, s: &StorageSettings, e: StorageError) -> ApiError {
    let bucket = &s.bucket;
    let who = account(kind, s);
    let (field, message) = match e {
        StorageError::BucketNotFound(_) => (
            "bucket",
            format!(
                "Bucket \"{bucket}\" does not exist, or {who} may not see it. Next step: check the name — only the \
                 bucket's name, such as my-bucket, without gs:// or a folder."
            ),
        ),
        StorageError::PermissionDenied(detail) => {
            let (verb, role) = match s.direction() {
                Direction::Import => ("list and read objects in", READ_ROLE),
                Direction::Export => ("write objects to", WRITE_ROLE),
            };
            let command = grant_command(kind, s, &who, role).map_or(String::new(), |c| format!(" ({c})"));
            (
                credentials_field(kind),
                format!(
                    "Google refused: {who} may not {verb} gs://{bucket} ({detail}). Next step: grant it {} on \
                     the bucket{command}.",
                    role.named()
                ),
            )
        }
        StorageError::Auth(detail) => (
            credentials_field(kind),
            match (kind, &s.credentials) {
                (StorageKind::Gcs, Some(_)) => format!(
                    "Google did not accept this key ({detail}). Next step: the key may have been deleted or \
                     disabled, or its service account removed: create a new JSON key (IAM & Admin > Service \
                     Accounts > Keys > Add key) and paste it here."
                ),
                (StorageKind::Gcs, None) => format!(
                    "This server could not get Google credentials ({detail}). Next step: paste a service account \
                     key, or give the server an identity (GOOGLE_APPLICATION_CREDENTIALS, or run it on Google \
                     Cloud)."
                ),
                (StorageKind::GcsWif, _) => format!(
                    "Workload Identity Federation gave no Google token ({detail}). Next step: check the pool, \
                     provider and service account fields, and that this server has the identity the pool \
                     trusts (its AWS role, or LABELPORT_WIF_CREDENTIAL_SOURCE)."
                ),
            },
        ),
        StorageError::Federation { what, cause } => {
            // A gcs storage with a pasted external_account configuration
            // has no WIF fields: its federation problems are its key's.
            let field = match (&cause, kind) {
                (_, StorageKind::Gcs) => "google_application_credentials",
                (WifError::StsRefused { .. }, StorageKind::GcsWif) => "google_wif_provider_id",
                (WifError::ImpersonationRefused { .. }, StorageKind::GcsWif) => "google_service_account_email",
                _ => "non_field_errors",
            };
            (field, format!("{what}: {cause}"))
        }
        StorageError::Transient(detail) => (
            "non_field_errors",
            format!(
                "Google Cloud Storage did not answer properly ({detail}). Next step: try again in a minute; if it \
                 keeps failing, check that this server can reach Google Cloud Storage."
            ),
        ),
        StorageError::Invalid(detail) if detail.contains("bucket name") => ("bucket", detail),
        StorageError::Invalid(detail) if matches!(kind, StorageKind::Gcs) && s.credentials.is_some() => {
            ("google_application_credentials", detail)
        }
        other => ("non_field_errors", other.to_string()),
    };
    ApiError::Validation(ValidationErrors::field(field, message))
}
