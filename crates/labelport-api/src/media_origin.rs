//! An optional media origin (`LABELPORT_MEDIA_URL`): resolve URLs in task
//! data point at another host name that reaches this same server, so bucket
//! objects never render on the app's origin, where the session cookie
//! works. The media host has no cookie (the session cookie is host-only),
//! so each resolve URL carries its own short-lived signature instead:
//! `&exp=<unix seconds>&sig=<HMAC-SHA256>` over the task id, the URI and
//! the expiry, minted when a reader who may see the task reads it. The
//! media host serves task resolve URLs with a valid signature and nothing
//! else (every other request there is a 404).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hmac;

/// How long a signed media URL works. Signatures are minted for the end of
/// the current period plus one, so a URL stays the same (and cacheable) for
/// a while across reads.
pub const MEDIA_URL_TTL: Duration = Duration::from_secs(3600);

/// The media origin and its signing key.
#[derive(Clone)]
pub struct MediaOrigin {
    /// Base of resolve URLs, e.g. `https://media.label.example.com`.
    pub base: String,
    /// Its `host[:port]`, as the `Host` header names it.
    pub host: String,
    key: hmac::Key,
}

impl std::fmt::Debug for MediaOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaOrigin")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl MediaOrigin {
    /// `base` must be an http(s) URL with a host; `key` signs URLs (derive it
    /// from the server's secret key so every process agrees).
    pub fn new(base: &str, key: &[u8]) -> Result<MediaOrigin, String> {
        let base = base.trim().trim_end_matches('/');
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or("the media URL must start with http:// or https://")?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || rest.contains('/') {
            return Err("the media URL must be a scheme and a host name, without a path".into());
        }
        Ok(MediaOrigin {
            base: base.to_owned(),
            host: host.to_ascii_lowercase(),
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        })
    }

    fn mac(&self, task_id: i64, uri: &str, exp: u64) -> String {
        let tag = hmac::sign(&self.key, format!("{task_id}\n{uri}\n{exp}").as_bytes());
        B64.encode(tag.as_ref())
    }

    /// The query suffix (`&exp=…&sig=…`) for one URI of one task.
    pub fn suffix(&self, task_id: i64, uri: &str, now: SystemTime) -> String {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let ttl = MEDIA_URL_TTL.as_secs();
        let exp = (now / ttl + 2) * ttl;
        format!("&exp={exp}&sig={}", self.mac(task_id, uri, exp))
    }

    /// Whether `sig` signs (task, uri, exp) and `exp` has not passed.
    pub fn verify(&self, task_id: i64, uri: &str, exp: u64, sig: &str, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let Ok(tag) = B64.decode(sig) else { return false };
        exp > now && hmac::verify(&self.key, format!("{task_id}\n{uri}\n{exp}").as_bytes(), &tag).is_ok()
    }

    /// Whether a request's `Host` header names the media origin.
    pub fn is_media_host(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| h.trim().eq_ignore_ascii_case(&self.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_task_uri_and_time() {
        let m = MediaOrigin::new("https://media.example.com/", b"key").unwrap();
        assert_eq!(m.host, "media.example.com");
        let now = SystemTime::now();
        let suffix = m.suffix(7, "gs://b/a.jpg", now);
        let exp: u64 = suffix
            .split("&exp=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sig = suffix.split("&sig=").nth(1).unwrap();
        assert!(m.verify(7, "gs://b/a.jpg", exp, sig, now));
        assert!(!m.verify(8, "gs://b/a.jpg", exp, sig, now), "another task");
        assert!(!m.verify(7, "gs://b/b.jpg", exp, sig, now), "another object");
        assert!(!m.verify(7, "gs://b/a.jpg", exp + 1, sig, now), "another expiry");
        assert!(
            !m.verify(7, "gs://b/a.jpg", exp, sig, now + MEDIA_URL_TTL * 3),
            "expired"
        );
        assert!(!MediaOrigin::new("https://other", b"key2")
            .unwrap()
            .verify(7, "gs://b/a.jpg", exp, sig, now));
        assert!(MediaOrigin::new("ftp://x", b"k").is_err());
        assert!(MediaOrigin::new("https://x/path", b"k").is_err());
    }
}
