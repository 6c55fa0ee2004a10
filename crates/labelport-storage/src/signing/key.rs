//! Local signing with the private key of a service-account key file.

use std::future::Future;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::RsaPrivateKey;
use sha2::Sha256;

use super::{BlobSigner, SignError};

/// Signs with a service account's own RSA key (`RSASSA-PKCS1-v1_5`,
/// SHA-256), so no network call is needed.
///
/// Debug output shows the email only; the key is zeroized on drop by `rsa`.
pub struct KeySigner {
    email: String,
    key: SigningKey<Sha256>,
}

/// The fields of a service-account key file that signing needs; the rest
/// (`private_key_id`, `token_uri`, ...) is ignored.
#[derive(serde::Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
}

impl KeySigner {
    /// Reads a service-account key file (`"type": "service_account"`,
    /// `client_email`, PEM `private_key`).
    pub fn from_service_account_json(json: &str) -> Result<Self, SignError> {
        // serde's own messages can quote input; report only the position.
        let file: ServiceAccountKey = serde_json::from_str(json).map_err(|e| {
            SignError::InvalidKey(format!(
                "not a service-account key file: invalid JSON or field type (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if let Some(kind) = file.kind.as_deref().filter(|kind| *kind != "service_account") {
            return Err(SignError::InvalidKey(format!(
                "\"type\" is \"{kind}\", not \"service_account\"; only a service-account key can sign locally"
            )));
        }
        let email = file
            .client_email
            .filter(|email| !email.is_empty())
            .ok_or_else(|| SignError::InvalidKey("the key file has no \"client_email\"".into()))?;
        let pem = file
            .private_key
            .filter(|pem| !pem.is_empty())
            .ok_or_else(|| SignError::InvalidKey("the key file has no \"private_key\"".into()))?;
        Self::from_pem(email, &pem)
    }

    /// A signer from an email and a PEM private key, PKCS#8 (`BEGIN PRIVATE
    /// KEY`, what Google issues) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(email: impl Into<String>, pem: &str) -> Result<Self, SignError> {
        let key = match RsaPrivateKey::from_pkcs8_pem(pem) {
            Ok(key) => key,
            Err(pkcs8_err) => RsaPrivateKey::from_pkcs1_pem(pem).map_err(|_| {
                // The pkcs8/der errors name a position or a tag, never key bytes.
                SignError::InvalidKey(format!("\"private_key\" is not a PEM RSA private key ({pkcs8_err})"))
            })?,
        };
        Ok(KeySigner {
            email: email.into(),
            key: SigningKey::new(key),
        })
    }

    /// Signs right away. RSA blinding with OS randomness hides the key from
    /// timing side channels; PKCS#1 v1.5 signatures stay deterministic.
    pub fn sign_now(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .try_sign_with_rng(&mut OsRng, payload)
            .map(|signature| signature.to_vec())
            .map_err(|e| SignError::Rsa(e.to_string()))
    }
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl BlobSigner for KeySigner {
    fn email(&self) -> &str {
        &self.email
    }

    fn sign(&self, payload: &[u8]) -> impl Future<Output = Result<Vec<u8>, SignError>> + Send {
        // One 2048-bit RSA operation takes a millisecond or two: cheap enough to
        // run inline rather than on a blocking thread.
        std::future::ready(self.sign_now(payload))
    }
}
