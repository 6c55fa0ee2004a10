//! Signed URLs for presigned media: signed locally with the storage's
//! service-account key, or — with no key — remotely through IAM `signBlob`
//! as a service account: for Workload Identity Federation (`gcswif`
//! storages, `external_account` configurations pasted or as ADC) the
//! impersonated account, with the federation's own tokens; for other
//! Application Default Credentials `LABELPORT_SIGNING_SERVICE_ACCOUNT` when
//! set, else the ADC key file's `client_email`, else the metadata server's
//! default account.

use std::sync::Arc;

use chrono::Utc;
use gcloud_storage::client::google_cloud_auth;
use labelport_domain::storage::{StorageKind, StorageSettings};
use labelport_storage::connect::Credentials;
use labelport_storage::signing::{self, AccessTokenSource, IamSigner, KeySigner, SignError, SignedUrlRequest};
use labelport_storage::wif::WifTokenProvider;
use token_source::{TokenSource, TokenSourceProvider};
use tokio::sync::OnceCell;

use crate::state::AppState;

/// Env var naming the service account to sign as through IAM when ADC
/// does not say (user credentials, or to override).
pub const SIGNING_ACCOUNT_ENV: &str = "LABELPORT_SIGNING_SERVICE_ACCOUNT";

/// Application Default Credentials, resolved once per process.
struct Adc {
    source: Arc<dyn TokenSource>,
    /// The key file's account (service-account key or impersonation).
    key_email: Option<String>,
    /// Credentials from the metadata server (GCE, GKE, Cloud Run), which
    /// name no account: the server says which.
    from_metadata: bool,
}

// Kept once resolved; a failure is not kept, so the next URL tries again
// (a metadata server can be slow to answer right after a pod starts).
static ADC: OnceCell<Adc> = OnceCell::const_new();
static METADATA_EMAIL: OnceCell<String> = OnceCell::const_new();

async fn adc() -> Result<&'static Adc, String> {
    ADC.get_or_try_init(|| async {
        let config = google_cloud_auth::project::Config::default()
            .with_scopes(&["https://www.googleapis.com/auth/cloud-platform"]);
        let provider = google_cloud_auth::token::DefaultTokenSourceProvider::new(config)
            .await
            .map_err(|e| format!("Application Default Credentials are not available: {e}"))?;
        let key_email = provider
            .source_credentials
            .as_ref()
            .and_then(|c| c.client_email.clone());
        Ok(Adc {
            source: provider.token_source(),
            key_email,
            from_metadata: provider.source_credentials.is_none(),
        })
    })
    .await
}

/// The service account to sign as through IAM.
async fn signing_account(adc: &Adc) -> Result<String, String> {
    if let Some(email) = std::env::var(SIGNING_ACCOUNT_ENV).ok().filter(|e| !e.is_empty()) {
        return Ok(email);
    }
    if let Some(email) = &adc.key_email {
        return Ok(email.clone());
    }
    if !adc.from_metadata {
        return Err(format!(
            "no service account to sign as: the credentials name none; set {SIGNING_ACCOUNT_ENV}"
        ));
    }
    METADATA_EMAIL
        .get_or_try_init(|| async {
            match gcloud_metadata::email("default").await {
                Ok(found) if !found.trim().is_empty() => Ok(found.trim().to_owned()),
                Ok(_) => Err(format!(
                    "the metadata server names no default service account; set {SIGNING_ACCOUNT_ENV}"
                )),
                Err(e) => Err(format!(
                    "could not read the service account from the metadata server ({e}); set {SIGNING_ACCOUNT_ENV}"
                )),
            }
        })
        .await
        .cloned()
}

struct AdcTokens(Arc<dyn TokenSource>);

impl AccessTokenSource for AdcTokens {
    async fn token(&self) -> Result<String, SignError> {
        let value = self.0.token().await.map_err(|e| SignError::Token(e.to_string()))?;
        // gcloud-auth answers "Bearer <token>".
        Ok(value.strip_prefix("Bearer ").unwrap_or(&value).to_owned())
    }
}

/// Where an IAM signer gets its tokens: the federation's, or ADC's.
enum SigningTokens {
    Federated(WifTokenProvider),
    Adc(AdcTokens),
}

impl AccessTokenSource for SigningTokens {
    async fn token(&self) -> Result<String, SignError> {
        match self {
            SigningTokens::Federated(t) => AccessTokenSource::token(t).await,
            SigningTokens::Adc(t) => t.token().await,
        }
    }
}

/// How a storage's media URLs are signed.
enum UrlSigner {
    /// Locally, with a pasted service-account key.
    Key(KeySigner),
    /// Remotely, through IAM `signBlob`, as a service account;
    /// `as_itself`: the identity asking IAM is that account (its own
    /// token: impersonated, a key file, the metadata server), not another
    /// principal allowed to sign as it.
    Iam {
        signer: IamSigner<SigningTokens>,
        as_itself: bool,
    },
}

/// The signer of a storage's URLs (see the module's comment); the error
/// says why there is none.
async fn url_signer(state: &AppState, kind: StorageKind, settings: &StorageSettings) -> Result<UrlSigner, String> {
    let env = &state.storage_env;
    let iam_endpoint = env.wif.iam_endpoint.clone();
    let named = || std::env::var(SIGNING_ACCOUNT_ENV).ok().filter(|e| !e.is_empty());
    let (email, tokens, as_itself) = match env.credentials(kind, settings).map_err(|e| e.to_string())? {
        Credentials::ServiceAccountKey(json) => {
            return KeySigner::from_service_account_json(&json)
                .map(UrlSigner::Key)
                .map_err(|e| e.to_string())
        }
        Credentials::Federated(tokens) => {
            // The impersonated account; without one (a federated token used
            // as is), the account the operator names.
            let (email, as_itself) = match tokens.service_account_email() {
                Some(email) => (email.to_owned(), true),
                None => (
                    named().ok_or(format!(
                        "the external_account configuration impersonates no service account \
                         (service_account_impersonation_url), so there is no account to sign URLs as; \
                         add one, set {SIGNING_ACCOUNT_ENV}, or turn presign off to serve media through the proxy"
                    ))?,
                    false,
                ),
            };
            (email, SigningTokens::Federated(WifTokenProvider(tokens)), as_itself)
        }
        Credentials::Adc => {
            let adc = adc().await?;
            let email = signing_account(adc).await?;
            // A named account may be another than the credentials' own.
            let as_itself = named().is_none() || adc.key_email.as_deref() == Some(email.as_str());
            (email, SigningTokens::Adc(AdcTokens(adc.source.clone())), as_itself)
        }
    };
    let signer = IamSigner::new(email, tokens)
        .map_err(|e| e.to_string())?
        .with_endpoint(iam_endpoint);
    Ok(UrlSigner::Iam { signer, as_itself })
}

/// Whether media of this storage are served through the proxy although
/// presign is on: against the GCS emulator reached without credentials
/// (`STORAGE_EMULATOR_HOST`), a storage with no key has no account to sign
/// URLs as, and the emulator does not check signatures anyway.
/// Application Default Credentials that the server has (ADC through the
/// metadata server or a key file) still sign, through IAM, as in tests of
/// that path.
pub async fn proxied_instead(state: &AppState, kind: StorageKind, settings: &StorageSettings) -> bool {
    // Remembered once found: looking for ADC again on every media request
    // would try the metadata server each time.
    static NO_ADC: OnceCell<()> = OnceCell::const_new();
    if !state.storage_env.anonymous_emulator()
        || !matches!(state.storage_env.credentials(kind, settings), Ok(Credentials::Adc))
    {
        return false;
    }
    if NO_ADC.get().is_some() {
        return true;
    }
    match adc().await {
        Ok(_) => false,
        Err(e) => {
            tracing::info!("emulator without credentials ({e}): media of storages without a key go through the proxy");
            let _ = NO_ADC.set(());
            true
        }
    }
}

/// A V4 signed GET URL for `key`, valid `expires_secs`; the error explains
/// why it could not be made (for the log), with the role a refused
/// `signBlob` usually lacks.
pub async fn signed_url(
    state: &AppState,
    kind: StorageKind,
    settings: &StorageSettings,
    key: &str,
    expires_secs: u64,
) -> Result<String, String> {
    try_signed_url(state, kind, settings, key, expires_secs)
        .await
        .map_err(|f| match f.refused_as {
            Some((email, _)) => format!(
                "{}. The identity signing needs iam.serviceAccounts.signBlob on {email}: grant it the Service \
                 Account Token Creator role (roles/iam.serviceAccountTokenCreator) on that service account",
                f.reason
            ),
            None => f.reason,
        })
}

/// Why a URL could not be signed.
pub struct SigningFailure {
    /// In words: IAM's own refusal as it came for a 403 (whose fix Test
    /// connection finds out), else with the fix when it is known.
    pub reason: String,
    /// IAM refused `signBlob` with a 403: the account signed as, and
    /// whether the identity asking was that account itself.
    pub refused_as: Option<(String, bool)>,
}

/// [`signed_url`], keeping whether IAM refused (Test connection asks IAM
/// which permission is missing only then).
pub async fn try_signed_url(
    state: &AppState,
    kind: StorageKind,
    settings: &StorageSettings,
    key: &str,
    expires_secs: u64,
) -> Result<String, SigningFailure> {
    let failed = |reason: String| SigningFailure {
        reason,
        refused_as: None,
    };
    let mut req = SignedUrlRequest::new("GET", &settings.bucket, key, expires_secs, Utc::now());
    req.host = state.storage_env.signing_host();
    match url_signer(state, kind, settings).await.map_err(failed)? {
        UrlSigner::Key(signer) => signing::signed_url(&req, &signer)
            .await
            .map_err(|e| failed(e.to_string())),
        UrlSigner::Iam { signer, as_itself } => signing::signed_url(&req, &signer).await.map_err(|e| {
            let refused_as = match &e {
                SignError::Iam { email, status: 403, .. } => Some((email.clone(), as_itself)),
                _ => None,
            };
            SigningFailure {
                reason: e.to_string(),
                refused_as,
            }
        }),
    }
}

/// The permission IAM `signBlob` needs on the account signed as.
pub const SIGN_BLOB: &str = "iam.serviceAccounts.signBlob";

/// For a storage whose URLs are signed through IAM: whether the signing
/// identity holds [`SIGN_BLOB`] on the account it signs as, from the IAM
/// API's `testIamPermissions` (`LABELPORT_IAM_API_ENDPOINT`). None when the
/// storage signs with a key, or IAM cannot say (then the caller keeps the
/// refusal it had).
pub async fn sign_blob_granted(state: &AppState, kind: StorageKind, settings: &StorageSettings) -> Option<bool> {
    let UrlSigner::Iam { signer, .. } = url_signer(state, kind, settings).await.ok()? else {
        return None;
    };
    use labelport_storage::signing::BlobSigner;
    let granted = signer
        .granted_permissions(&state.storage_env.wif.iam_api_endpoint, &[SIGN_BLOB])
        .await
        .map_err(|e| tracing::info!("testIamPermissions on {} failed: {e}", signer.email()))
        .ok()?;
    Some(granted.iter().any(|p| p == SIGN_BLOB))
}
