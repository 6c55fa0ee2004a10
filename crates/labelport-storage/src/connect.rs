//! From a stored storage to a connected store, by kind: the one place that
//! knows which connector and which credentials serve which
//! [`StorageKind`], and the checks of a storage's settings that only a
//! connector can make.

use std::sync::Arc;

use labelport_domain::storage::{StorageKind, StorageSettings};
use labelport_domain::ValidationErrors;

use crate::credentials::validate_service_account_json;
use crate::gcs::{emulator_from_env, GcsAuth, GcsConfig, GcsStore};
use crate::wif::{is_external_account, ExternalAccount, WifEnv, WifTokens};
use crate::StorageError;

/// Where connectors connect, and with what: the settings of the process.
#[derive(Clone, Debug, Default)]
pub struct StorageEnv {
    /// A GCS emulator (`http://host:port`) reached without credentials, as
    /// Google's libraries do with `STORAGE_EMULATOR_HOST` (read when None).
    pub emulator: Option<String>,
    /// A GCS JSON API base URL reached **with** each storage's credentials
    /// (`LABELPORT_GCS_ENDPOINT`); takes precedence over the emulator, as a
    /// client endpoint does in Google's libraries.
    pub gcs_endpoint: Option<String>,
    /// Workload Identity Federation: STS and IAM endpoints, the server's
    /// subject token source, and the token caches.
    pub wif: WifEnv,
    /// Application Default Credentials when they are an `external_account`
    /// configuration this server runs itself (read once at start by
    /// [`StorageEnv::read_adc`]); None: `gcloud-auth`'s ADC.
    pub adc_external_account: Option<ExternalAccount>,
    /// How long a storage request may wait for an answer before it is
    /// retried (`LABELPORT_STORAGE_TIMEOUT_SECS`); None: 60 s.
    pub request_timeout: Option<std::time::Duration>,
}

/// The credentials a storage of `kind` with `settings` uses.
pub enum Credentials {
    /// A pasted service-account key.
    ServiceAccountKey(String),
    /// The server's Application Default Credentials (not WIF).
    Adc,
    /// Workload Identity Federation: a `gcswif` storage, a pasted
    /// `external_account` configuration, or ADC that is one.
    Federated(Arc<WifTokens>),
}

impl StorageEnv {
    /// Reads `GOOGLE_APPLICATION_CREDENTIALS` once: an `external_account`
    /// file is run by this server's own chain (so its endpoints are the
    /// configured ones and it can sign); one this chain does not take
    /// (executable source, workforce pool, another token URL) is left to
    /// `gcloud-auth`, with a warning. Call after setting `wif`.
    pub fn read_adc(&mut self) {
        let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            // gcloud-auth reports an unreadable file in its own words.
            return;
        };
        if !is_external_account(&text) {
            return;
        }
        match ExternalAccount::parse(&text, &self.wif, false) {
            Ok(account) => self.adc_external_account = Some(account),
            Err(e) => tracing::warn!(
                "GOOGLE_APPLICATION_CREDENTIALS ({}): {e}; left to the Google auth library, which cannot sign URLs with it",
                path.to_string_lossy()
            ),
        }
    }

    /// The credentials of a storage: which identity it acts as. No request
    /// is made.
    ///
    /// Errors: [`StorageError::Invalid`] for a pasted configuration that is
    /// refused.
    pub fn credentials(&self, kind: StorageKind, settings: &StorageSettings) -> Result<Credentials, StorageError> {
        match kind {
            StorageKind::GcsWif => Ok(Credentials::Federated(
                self.wif.tokens(self.wif.storage_exchange(&settings.wif)),
            )),
            StorageKind::Gcs => match settings.credentials.as_ref().map(|c| c.expose()) {
                Some(json) if is_external_account(json) => {
                    let account = ExternalAccount::parse(json, &self.wif, true).map_err(StorageError::Invalid)?;
                    Ok(Credentials::Federated(self.wif.tokens(account.exchange)))
                }
                Some(json) => Ok(Credentials::ServiceAccountKey(json.to_owned())),
                None => match &self.adc_external_account {
                    Some(account) => Ok(Credentials::Federated(self.wif.tokens(account.exchange.clone()))),
                    None => Ok(Credentials::Adc),
                },
            },
        }
    }

    /// Whether buckets are reached through the GCS emulator without
    /// credentials (`STORAGE_EMULATOR_HOST` or `emulator`, and no
    /// `LABELPORT_GCS_ENDPOINT`).
    pub fn anonymous_emulator(&self) -> bool {
        self.gcs_endpoint.is_none() && (self.emulator.is_some() || emulator_from_env().is_some())
    }

    /// The XML API host signed URLs point at: the endpoint given, else the
    /// emulator, else Google's (None).
    pub fn signing_host(&self) -> Option<String> {
        self.gcs_endpoint
            .clone()
            .or_else(|| self.emulator.clone())
            .or_else(emulator_from_env)
    }

    /// Connects to the bucket of `settings` as a storage of `kind`. Builds
    /// the client and its credentials; no request is made yet.
    ///
    /// Errors: [`StorageError::Auth`] when the credentials cannot be used.
    pub async fn connect(&self, kind: StorageKind, settings: &StorageSettings) -> Result<GcsStore, StorageError> {
        let bucket = settings.bucket.clone();
        let emulator = self.emulator.clone().or_else(emulator_from_env);
        if self.gcs_endpoint.is_none() {
            if let Some(endpoint) = emulator {
                return GcsStore::connect(GcsConfig {
                    timeout: self.request_timeout,
                    ..GcsConfig::emulator(bucket, endpoint)
                })
                .await;
            }
        }
        let (auth, permission_hint) = match self.credentials(kind, settings)? {
            Credentials::ServiceAccountKey(json) => (GcsAuth::ServiceAccountKey(json), None),
            Credentials::Adc => (GcsAuth::Adc, None),
            Credentials::Federated(tokens) => {
                let who = tokens
                    .service_account_email()
                    .map_or("the federated identity".to_owned(), |e| {
                        format!("the service account {e}")
                    });
                let hint = format!(
                    "{who} needs Storage Admin (roles/storage.admin) on the bucket, or at least Storage Object \
                     Viewer (roles/storage.objectViewer) to import and Storage Object User \
                     (roles/storage.objectUser: create, and delete to overwrite) to export"
                );
                (GcsAuth::Federated(tokens), Some(hint))
            }
        };
        GcsStore::connect(GcsConfig {
            bucket,
            auth,
            endpoint: self.gcs_endpoint.clone(),
            permission_hint,
            timeout: self.request_timeout,
        })
        .await
    }
}

/// The checks of `settings` a storage of `kind` needs beyond the domain's
/// (`StorageSettings::apply`, `check_kind`), added to `errors` under Label
/// Studio's field names: for GCS, a pasted key must be a service-account
/// key we can sign with, or an `external_account` configuration we accept
/// (`google_application_credentials`).
pub fn check_settings(env: &StorageEnv, kind: StorageKind, settings: &StorageSettings, errors: &mut ValidationErrors) {
    match kind {
        StorageKind::Gcs => {
            if let Some(creds) = &settings.credentials {
                let checked = if is_external_account(creds.expose()) {
                    ExternalAccount::parse(creds.expose(), &env.wif, true).map(|_| ())
                } else {
                    validate_service_account_json(creds.expose())
                };
                if let Err(e) = checked {
                    errors.add("google_application_credentials", e);
                }
            }
        }
        StorageKind::GcsWif => {}
    }
}
