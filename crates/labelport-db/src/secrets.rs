//! Secrets at rest: every credential column is stored sealed with
//! AES-256-GCM (RustCrypto's `aes-gcm`) under the server's key, so a copy of
//! the database (a backup, a dump, a stolen disk) holds no usable key.
//!
//! Stored form: `lp1:<key id>:<base64 of 12-byte nonce ‖ ciphertext ‖ tag>`,
//! where the key id is the first 8 hex digits of the SHA-256 of the key (it
//! says which key sealed a value; it reveals nothing of the key). A fresh
//! random nonce per value. The storage id is not bound as associated data,
//! so a rotation can re-seal rows in place.
//!
//! Keys: the current one seals; old ones only open, so a key can be
//! changed without downtime: every process gets the new key as current and
//! the old one as old (a rolling restart), then `labelport secrets rotate`
//! re-seals every row under the new key, then the old key can go.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::{on_read, on_write, Db, DbError, DbResult};

const PREFIX: &str = "lp1:";
const NONCE_BYTES: usize = 12;

/// One AES-256 key and its id.
#[derive(Clone)]
struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
    /// SHA-256 of a fixed label and the key: a key for other uses (signing
    /// media URLs) that tells nothing of this one.
    derived: [u8; 32],
}

impl SealingKey {
    fn new(bytes: &[u8; 32]) -> SealingKey {
        let mut derived = Sha256::new();
        derived.update(b"labelport derived key v1\n");
        derived.update(bytes);
        SealingKey {
            id: hex::encode(&Sha256::digest(bytes)[..4]),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)),
            derived: derived.finalize().into(),
        }
    }
}

/// The server's keys: one that seals, any number that still open.
#[derive(Clone)]
pub struct SecretKeys {
    current: SealingKey,
    old: Vec<SealingKey>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: they name keys without revealing them.
        f.debug_struct("SecretKeys")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// A new random key, as `LABELPORT_SECRET_KEY` and the key file hold it:
/// 32 bytes in standard base64.
pub fn generate_key() -> String {
    B64.encode(Aes256Gcm::generate_key(OsRng))
}

/// Parses a key as written by [`generate_key`]; the error never shows it.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| "a secret key must be 32 bytes in base64 (see `labelport secrets new-key`)".to_owned())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("a secret key must be 32 bytes in base64, not {} bytes", b.len()))
}

impl SecretKeys {
    /// `current` seals and opens; `old` only open.
    pub fn new(current: &[u8; 32], old: &[[u8; 32]]) -> SecretKeys {
        SecretKeys {
            current: SealingKey::new(current),
            old: old.iter().map(SealingKey::new).collect(),
        }
    }

    /// A random key that lives as long as the process: tests and
    /// benchmarks, whose databases do too.
    pub fn ephemeral() -> SecretKeys {
        let key = Aes256Gcm::generate_key(OsRng);
        SecretKeys::new(&key.into(), &[])
    }

    /// A key derived from the current one for uses other than sealing (the
    /// media origin's URL signatures): the same on every process that has
    /// the same key, useless for opening credentials.
    pub fn derived_key(&self) -> [u8; 32] {
        self.current.derived
    }

    /// The id of the sealing key (logs, `secrets rotate`).
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext` under the current key.
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .current
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, B64.encode(out))
    }

    /// Opens a sealed value; a value that is not sealed (a row written
    /// before sealing existed) is returned as it is, so the startup pass
    /// can seal it. Errors name the key id, never the value.
    pub fn open(&self, stored: &str) -> DbResult<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, data) = rest
            .split_once(':')
            .ok_or_else(|| DbError::Secret("a sealed value without a key id".into()))?;
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                DbError::Secret(format!(
                    "a credential is sealed under key {id}, which this server does not have \
                     (set LABELPORT_SECRET_KEY, or LABELPORT_OLD_SECRET_KEYS during a rotation)"
                ))
            })?;
        let bytes = B64
            .decode(data)
            .map_err(|_| DbError::Secret("a sealed value is not base64".into()))?;
        if bytes.len() < NONCE_BYTES {
            return Err(DbError::Secret("a sealed value is too short".into()));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = key.cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| {
            DbError::Secret(format!(
                "a credential sealed under key {id} does not open (corrupt or altered)"
            ))
        })?;
        String::from_utf8(plain).map_err(|_| DbError::Secret("an opened credential is not UTF-8".into()))
    }

    /// Whether `stored` is sealed under the current key.
    fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.id)
    }
}

/// The tables and columns that hold secrets.
const SECRET_COLUMNS: [(&str, &str); 2] = [("import_storages", "credentials"), ("export_storages", "credentials")];

impl Db {
    /// The keys credentials are sealed with; an error when none was set
    /// (the binary and the test kit always set one).
    pub(crate) fn keys(&self) -> DbResult<&SecretKeys> {
        self.secrets
            .as_deref()
            .ok_or_else(|| DbError::Secret("no secret key is configured to seal credentials".into()))
    }

    /// The id of the key that seals (None without keys).
    pub fn secret_key_id(&self) -> Option<String> {
        self.secrets.as_ref().map(|k| k.current_id().to_owned())
    }

    /// Seals what is stored in plaintext (rows from before sealing existed),
    /// and checks that every sealed value is under a key this server has:
    /// run at every start, after the migrations. Values under an old key
    /// are left as they are, so processes not restarted yet in a key change
    /// keep reading them; `labelport secrets rotate` re-seals those.
    pub async fn seal_plaintext_secrets(&self) -> DbResult<u64> {
        self.reseal(false).await
    }

    /// Re-seals every stored secret that is not sealed under the current
    /// key (`labelport secrets rotate`). Returns how many rows changed.
    pub async fn reseal_secrets(&self) -> DbResult<u64> {
        self.reseal(true).await
    }

    /// Each row is written in its own statement, compared with the value
    /// read, so a concurrent change is never overwritten.
    async fn reseal(&self, old_keys_too: bool) -> DbResult<u64> {
        let keys = self.keys()?.clone();
        let mut done = 0;
        for (table, column) in SECRET_COLUMNS {
            let select = format!("SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL");
            let rows: Vec<(i64, String)> = on_read!(self, p => sqlx::query_as(&select).fetch_all(p).await)?;
            let update = format!("UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3");
            for (id, stored) in rows {
                if keys.is_current(&stored) {
                    continue;
                }
                // Opening proves the key is there (an error names the id).
                let plain = keys.open(&stored)?;
                if stored.starts_with(PREFIX) && !old_keys_too {
                    continue;
                }
                let resealed = keys.seal(&plain);
                let n = on_write!(self, p => sqlx::query(&update).bind(&resealed).bind(id).bind(&stored)
                    .execute(p).await.map(|r| r.rows_affected()))?;
                done += n;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn seals_opens_and_rotates() {
        let keys = SecretKeys::new(&key(1), &[]);
        let sealed = keys.seal("{\"private_key\": \"k\"}");
        assert!(
            sealed.starts_with("lp1:") && !sealed.contains("private_key"),
            "{sealed}"
        );
        assert_ne!(sealed, keys.seal("{\"private_key\": \"k\"}"), "a fresh nonce each time");
        assert_eq!(keys.open(&sealed).unwrap(), "{\"private_key\": \"k\"}");
        assert_eq!(keys.open("plain").unwrap(), "plain", "unsealed rows read as they are");
        // A new key: the old one still opens what it sealed.
        let rotated = SecretKeys::new(&key(2), &[key(1)]);
        assert_eq!(rotated.open(&sealed).unwrap(), "{\"private_key\": \"k\"}");
        assert!(!rotated.is_current(&sealed) && rotated.is_current(&rotated.seal("x")));
        // Without it: an error naming the key id, not the value.
        let e = SecretKeys::new(&key(2), &[]).open(&sealed).unwrap_err().to_string();
        assert!(e.contains(keys.current_id()) && !e.contains("private_key"), "{e}");
        // Altered: refused.
        let (head, data) = sealed.rsplit_once(':').unwrap();
        let mut bytes = B64.decode(data).unwrap();
        bytes[NONCE_BYTES] ^= 1;
        assert!(keys.open(&format!("{head}:{}", B64.encode(bytes))).is_err());
    }

    #[test]
    fn keys_parse_from_their_text_only() {
        let text = generate_key();
        assert_eq!(parse_key(&text).unwrap().len(), 32);
        assert!(parse_key("short").is_err());
        assert!(parse_key(&B64.encode([0u8; 16])).unwrap_err().contains("16 bytes"));
    }
}
