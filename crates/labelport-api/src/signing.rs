//! Signed URLs for presigned media: signed locally with the storage's
//! service-account key, or — with no key (Application Default Credentials)
//! — remotely through IAM `signBlob` as a service account:
//! `LABELPORT_SIGNING_SERVICE_ACCOUNT` when set, else the ADC key file's
//! `client_email`, else the metadata server's default account.

use std::sync::Arc;

use chrono::Utc;
use gcloud_storage::client::google_cloud_auth;
use labelport_db::StorageRow;
use labelport_storage::gcs::emulator_from_env;
use labelport_storage::signing::{self, AccessTokenSource, IamSigner, KeySigner, SignError, SignedUrlRequest};
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

/// A V4 signed GET URL for `key`, valid `expires_secs`; the error explains
/// why it could not be made (for the log).
pub async fn signed_url(
    state: &AppState,
    storage: &StorageRow,
    key: &str,
    expires_secs: u64,
) -> Result<String, String> {
    let mut req = SignedUrlRequest::new("GET", &storage.settings.bucket, key, expires_secs, Utc::now());
    if let Some(endpoint) = state.storage_env.gcs_endpoint.clone().or_else(emulator_from_env) {
        req.host = Some(endpoint);
    }
    if let Some(json) = storage.settings.credentials.as_ref().map(|c| c.expose()) {
        let signer = KeySigner::from_service_account_json(json).map_err(|e| e.to_string())?;
        return signing::signed_url(&req, &signer).await.map_err(|e| e.to_string());
    }
    let adc = adc().await?;
    let email = signing_account(adc).await?;
    let signer = IamSigner::new(email, AdcTokens(adc.source.clone()))
        .map_err(|e| e.to_string())?
        .with_endpoint(state.iam_endpoint.clone());
    signing::signed_url(&req, &signer).await.map_err(|e| e.to_string())
}
