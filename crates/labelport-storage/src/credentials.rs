//! Checks of Google credentials a user pastes into a storage.

use serde_json::Value;

/// Checks that `text` is a service-account key file (JSON with
/// `"type": "service_account"`, `client_email` and a PEM `private_key`).
/// The message names what is wrong and never echoes the key.
/// Google's OAuth 2.0 token endpoint, as service-account keys name it.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The older name of the same endpoint, found in keys made before 2019.
const GOOGLE_LEGACY_TOKEN_URI: &str = "https://accounts.google.com/o/oauth2/token";

/// Whether a pasted key may name `uri` as its token endpoint: Google's, or
/// one listed in `LABELPORT_ALLOWED_TOKEN_URIS` (comma-separated; for tests
/// and private Google endpoints set up by the server's operator).
pub fn allowed_token_uri(uri: &str) -> bool {
    uri == GOOGLE_TOKEN_URI
        || uri == GOOGLE_LEGACY_TOKEN_URI
        || std::env::var("LABELPORT_ALLOWED_TOKEN_URIS")
            .unwrap_or_default()
            .split(',')
            .any(|allowed| !allowed.trim().is_empty() && allowed.trim() == uri)
}

/// Checks a pasted service-account key before it is stored or used: JSON,
/// `type: service_account`, `client_email`, a private key we can sign with,
/// and a `token_uri` of Google's. Errors name the problem, never key bytes.
pub fn validate_service_account_json(text: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "Google Application Credentials must be the JSON of a service-account key file; this is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let obj = value
        .as_object()
        .ok_or("Google Application Credentials must be a JSON object (a service-account key file)")?;
    match obj.get("type").and_then(Value::as_str) {
        Some("service_account") => {}
        Some(other) => {
            return Err(format!(
                "Google Application Credentials must be a service-account key (\"type\": \"service_account\") or a Workload Identity Federation configuration (\"type\": \"external_account\"), not \"{other}\"; leave the field empty to use Application Default Credentials"
            ))
        }
        None => return Err("Google Application Credentials has no \"type\"; a service-account key has \"type\": \"service_account\"".into()),
    }
    for field in ["client_email", "private_key"] {
        if obj.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(format!("the service-account key has no \"{field}\""));
        }
    }
    // The token endpoint is where the server POSTs a signed assertion: it
    // must be Google's (or one the server's settings name), never an
    // address a user chose. Checked before any connection is made.
    if let Some(uri) = obj.get("token_uri") {
        let uri = uri.as_str().unwrap_or_default();
        if !allowed_token_uri(uri) {
            return Err(format!(
                "the service-account key's token_uri must be Google's ({GOOGLE_TOKEN_URI}), not {uri:?}"
            ));
        }
    }
    // The key must be one we can sign with (presigned URLs): parsed here so
    // a bad one is refused at once, not at the first signed URL. The
    // messages name the problem, never key bytes.
    crate::signing::KeySigner::from_service_account_json(text)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "the service-account key's {}",
                e.to_string().trim_start_matches("invalid service-account key: ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_uri_that_is_not_googles_is_refused() {
        let mut key: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/conformance/test_service_account.not-a-test.json"
            ))
            .expect("testdata/conformance in the repository"),
        )
        .unwrap();
        for evil in [
            "http://169.254.169.254/computeMetadata/v1/",
            "https://attacker.example/token",
            "",
            "https://oauth2.googleapis.com/token/../x",
        ] {
            key["token_uri"] = evil.into();
            let e = validate_service_account_json(&key.to_string()).unwrap_err();
            assert!(e.contains("token_uri"), "{evil}: {e}");
        }
        key["token_uri"] = GOOGLE_LEGACY_TOKEN_URI.into();
        assert!(validate_service_account_json(&key.to_string()).is_ok());
    }

    #[test]
    fn accepts_service_account_and_names_problems() {
        let good = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/conformance/test_service_account.not-a-test.json"
        ))
        .expect("testdata/conformance in the repository");
        assert!(validate_service_account_json(&good).is_ok());
        // A PEM header around something that is not a key.
        let e = validate_service_account_json(
            r#"{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIBCgKCAQEA\n-----END PRIVATE KEY-----\n"}"#,
        )
        .unwrap_err();
        assert!(e.contains("\"private_key\" is not a usable RSA private key"), "{e}");
        assert!(validate_service_account_json("not json")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(validate_service_account_json("[1]")
            .unwrap_err()
            .contains("JSON object"));
        assert!(validate_service_account_json(r#"{"type":"authorized_user"}"#)
            .unwrap_err()
            .contains("authorized_user"));
        let e = validate_service_account_json(
            r#"{"type":"service_account","client_email":"x","private_key":"secret-but-not-pem"}"#,
        )
        .unwrap_err();
        assert!(e.contains("PEM") && !e.contains("secret-but-not-pem"), "{e}");
    }
}
