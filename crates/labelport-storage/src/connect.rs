//! From a stored storage to a connected store, by kind: the one place that
//! knows which connector serves which [`StorageKind`], and the checks of a
//! storage's settings that only a connector can make.

use labelport_domain::storage::{StorageKind, StorageSettings};
use labelport_domain::ValidationErrors;

use crate::credentials::validate_service_account_json;
use crate::gcs::{GcsConfig, GcsStore};
use crate::StorageError;

/// Where connectors connect: the defaults of the process (tests point GCS
/// at the emulator).
#[derive(Clone, Debug, Default)]
pub struct StorageEnv {
    /// A GCS endpoint (`http://host:port`) for every GCS storage; None:
    /// Google's, or `STORAGE_EMULATOR_HOST` when set.
    pub gcs_endpoint: Option<String>,
}

impl StorageEnv {
    /// Connects to the bucket of `settings` as a storage of `kind`. Builds
    /// the client and its credentials; no request is made yet.
    ///
    /// Errors: [`StorageError::Auth`] when the credentials cannot be used.
    pub async fn connect(&self, kind: StorageKind, settings: &StorageSettings) -> Result<GcsStore, StorageError> {
        match kind {
            StorageKind::Gcs => {
                GcsStore::connect(GcsConfig {
                    bucket: settings.bucket.clone(),
                    service_account_json: settings.credentials.as_ref().map(|c| c.expose().to_owned()),
                    endpoint: self.gcs_endpoint.clone(),
                })
                .await
            }
        }
    }
}

/// The checks of `settings` a storage of `kind` needs beyond the domain's
/// (`StorageSettings::apply`), added to `errors` under Label Studio's field
/// names: for GCS, a pasted key must be a service-account key we can sign
/// with (`google_application_credentials`).
pub fn check_settings(kind: StorageKind, settings: &StorageSettings, errors: &mut ValidationErrors) {
    match kind {
        StorageKind::Gcs => {
            if let Some(creds) = &settings.credentials {
                if let Err(e) = validate_service_account_json(creds.expose()) {
                    errors.add("google_application_credentials", e);
                }
            }
        }
    }
}
