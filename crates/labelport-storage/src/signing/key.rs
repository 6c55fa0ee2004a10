//! Local signing with the private key of a service-account key file.

use std::future::Future;

use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use super::{BlobSigner, SignError};

/// Signs with a service account's own RSA key (`RSASSA-PKCS1-v1_5`,
/// SHA-256), so no network call is needed. `ring` does the RSA operation
/// in constant time with blinding (the `rsa` crate it replaced carries
/// RUSTSEC-2023-0071, a timing side channel).
///
/// Debug output shows the email only.
pub struct KeySigner {
    email: String,
    key: RsaKeyPair,
    rng: SystemRandom,
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
        // The pem and ring errors name a tag or a reason, never key bytes.
        let block = pem::parse(pem.trim())
            .map_err(|e| SignError::InvalidKey(format!("\"private_key\" is not a PEM private key ({e})")))?;
        let key = match block.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
            other => {
                return Err(SignError::InvalidKey(format!(
                    "\"private_key\" is a PEM \"{other}\", not an RSA private key"
                )))
            }
        }
        .map_err(|e| SignError::InvalidKey(format!("\"private_key\" is not a usable RSA private key ({e})")))?;
        Ok(KeySigner {
            email: email.into(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// Signs right away. PKCS#1 v1.5 signatures are deterministic: the same
    /// payload always gives the same signature.
    pub fn sign_now(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, payload, &mut signature)
            .map_err(|_| SignError::Rsa("the RSA operation failed".into()))?;
        Ok(signature)
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
