//! `POST /api/storages/{kind}/{id}/notifications`: bucket notifications
//! delivered by a Pub/Sub push subscription (issue 17, item 5).
//!
//! GCS publishes a message to a Pub/Sub topic for every change of an object
//! (Google: "Pub/Sub notifications for Cloud Storage"); a push subscription
//! POSTs each message here, wrapped as
//! `{"message": {"attributes": {...}, "data": "<base64>", "messageId": "…"}, "subscription": "…"}`,
//! with an OIDC token of its service account in `Authorization: Bearer`
//! (Google: "Authentication for push subscriptions"). The token is checked
//! here — a Google-signed RS256 JWT (keys from [`GOOGLE_JWKS_URL`], cached),
//! issuer `https://accounts.google.com`, audience this endpoint's public
//! URL, `email` the storage's `pubsub_push_service_account`, and
//! `email_verified` — so the route needs no Labelport user.
//!
//! Answers: 202 when the object's change is queued
//! (`labelport_sync::notification`), 200 when the message is acknowledged
//! but ignored (not a Cloud Storage notification, another bucket, an event
//! type that does not change tasks, an object outside the storage's scope)
//! — Pub/Sub counts both as an acknowledgement; 401 for a missing or
//! invalid token, 403 for a valid token of another account or a storage
//! with notifications off, or a server without `LABELPORT_PUBLIC_URL`;
//! 404 for an unknown storage (only after the token checked out); 503 when
//! Google's keys cannot be fetched. Pub/Sub redelivers what was not
//! acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use labelport_domain::storage::{compile_filter, key_in_scope, normalize_prefix, Direction};
use labelport_sync::notification::{queue_notification, NotificationJob};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::storages::KindIdPath;

/// Google's OAuth 2.0 signing keys (JWKS), which sign the OIDC tokens of
/// Pub/Sub push requests; `LABELPORT_PUBSUB_JWKS_URL` overrides it.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The issuers Google's ID tokens carry (Google: "Validating an ID token").
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// How long fetched keys are used before they are fetched again, when the
/// key server gives no `Cache-Control: max-age` (Google rotates its keys
/// over days and publishes new ones well before use).
const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(3600);
/// Bounds on a key server's `max-age`: `max-age=0` must not mean a fetch
/// per push, nor a huge one keep a revoked key for months.
const MIN_KEYS_TTL: Duration = Duration::from_secs(60);
const MAX_KEYS_TTL: Duration = Duration::from_secs(24 * 3600);

/// A token naming a key that is not in the cached set makes the keys be
/// fetched again, at most this often (a stream of forged `kid`s cannot turn
/// every push into a request to the key server).
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// GCS's event types that may change what a storage's tasks should be
/// (Google: "Pub/Sub notifications for Cloud Storage", event types). In a
/// bucket with versioning, deleting or overwriting the live object sends
/// `OBJECT_ARCHIVE` instead of `OBJECT_DELETE`, so it counts too. Any other
/// type (one added later) is acknowledged and ignored.
pub const APPLIED_EVENTS: [&str; 4] = [
    "OBJECT_FINALIZE",
    "OBJECT_DELETE",
    "OBJECT_ARCHIVE",
    "OBJECT_METADATA_UPDATE",
];

/// Checks the OIDC tokens of Pub/Sub push requests against Google's keys,
/// fetched from a JWKS URL and cached.
pub struct PushVerifier {
    jwks_url: String,
    http: reqwest::Client,
    /// The keys and the last fetch; held only for a look or an update,
    /// never across a fetch, so pushes whose key is cached never wait.
    cache: std::sync::Mutex<KeyCache>,
    /// One fetch at a time: a burst of pushes with a cold cache waits for
    /// the first one's fetch instead of each fetching.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: Option<CachedKeys>,
    /// The last fetch tried, and how it failed (None: it worked).
    last_attempt: Option<(Instant, Option<String>)>,
}

struct CachedKeys {
    set: Arc<JwkSet>,
    fetched: Instant,
    ttl: Duration,
}

/// The claims of a push request's token that are checked here.
#[derive(Debug, Deserialize)]
pub struct PushClaims {
    /// The service account the subscription authenticates as.
    #[serde(default)]
    pub email: String,
    /// Google sets it for service accounts; a token without it is refused.
    #[serde(default)]
    pub email_verified: bool,
}

/// Why a push token was refused: the message for the 401 answer.
#[derive(Debug, thiserror::Error)]
pub enum PushAuthError {
    #[error("no push token: a Pub/Sub push subscription with authentication (--push-auth-service-account) sends `Authorization: Bearer <OIDC token>`")]
    Missing,
    #[error("the push token was refused: {0}")]
    Invalid(String),
    #[error("Google's signing keys could not be fetched from {url}: {cause}")]
    Keys { url: String, cause: String },
}

impl PushVerifier {
    /// A verifier fetching keys from `jwks_url` (Google's by default).
    pub fn new(jwks_url: &str) -> PushVerifier {
        PushVerifier {
            jwks_url: jwks_url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            cache: std::sync::Mutex::new(KeyCache::default()),
            fetching: Mutex::new(()),
        }
    }

    /// The JWKS URL keys come from.
    pub fn jwks_url(&self) -> &str {
        &self.jwks_url
    }

    /// Checks `token` (a JWT) for `audience`: RS256 signature by a key of
    /// the set (by `kid`), `exp` not past (60 s leeway), issuer one of
    /// [`GOOGLE_ISSUERS`], audience exactly `audience`. Returns its claims;
    /// the caller compares the e-mail.
    pub async fn verify(&self, token: &str, audience: &str) -> Result<PushClaims, PushAuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| PushAuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(PushAuthError::Invalid(format!(
                "signed with {:?}; Google signs ID tokens with RS256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| PushAuthError::Invalid("its header names no key (kid)".into()))?;
        let keys = self.keys_with(&kid).await?;
        let jwk = keys.find(&kid).ok_or_else(|| {
            PushAuthError::Invalid(format!("it names key {kid:?}, which Google's key set does not hold"))
        })?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| PushAuthError::Invalid(format!("key {kid:?}: {e}")))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<PushClaims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            PushAuthError::Invalid(match e.kind() {
                ErrorKind::InvalidAudience => format!(
                    "its audience is not this endpoint ({audience}); create the subscription with \
                     --push-auth-token-audience={audience}, or set LABELPORT_PUBLIC_URL to the address Pub/Sub calls"
                ),
                ErrorKind::ExpiredSignature => "it has expired".into(),
                ErrorKind::InvalidIssuer => {
                    "its issuer is not Google's (https://accounts.google.com or accounts.google.com)".into()
                }
                ErrorKind::InvalidSignature => {
                    format!("its signature does not match Google's key {kid:?}: it is not a token Google signed")
                }
                _ => e.to_string(),
            })
        })?;
        Ok(data.claims)
    }

    /// The cached key set. It is fetched when it is missing or past its
    /// time, or lacks `kid` — but never twice within
    /// [`REFETCH_AT_MOST_EVERY`], failed fetches included, so neither a
    /// stream of made-up `kid`s nor a key server that is down turns pushes
    /// into requests to it.
    async fn keys_with(&self, kid: &str) -> Result<Arc<JwkSet>, PushAuthError> {
        if let Some(set) = self.cached_with(kid) {
            return Ok(set);
        }
        let _one_fetch = self.fetching.lock().await;
        // Another push may have fetched while this one waited.
        if let Some(set) = self.cached_with(kid) {
            return Ok(set);
        }
        let usable = {
            let mut cache = self.cache.lock().expect("key cache");
            let usable = cache
                .keys
                .as_ref()
                .filter(|k| k.fetched.elapsed() < k.ttl)
                .map(|k| Arc::clone(&k.set));
            let recently = cache
                .last_attempt
                .as_ref()
                .filter(|(at, _)| at.elapsed() < REFETCH_AT_MOST_EVERY);
            if let Some((_, failure)) = recently {
                return match (usable, failure) {
                    (Some(set), _) => Ok(set),
                    (None, Some(cause)) => Err(PushAuthError::Keys {
                        url: self.jwks_url.clone(),
                        cause: format!("{cause} (tried again within {REFETCH_AT_MOST_EVERY:?})"),
                    }),
                    (None, None) => Err(PushAuthError::Invalid("no key set is held".into())),
                };
            }
            // Recorded before the fetch, so a push dropped half-way still
            // counts as an attempt.
            cache.last_attempt = Some((Instant::now(), Some("the fetch did not finish".into())));
            usable
        };
        let fetched = self.fetch().await;
        let mut cache = self.cache.lock().expect("key cache");
        match fetched {
            Ok((set, ttl)) => {
                let set = Arc::new(set);
                cache.keys = Some(CachedKeys {
                    set: Arc::clone(&set),
                    fetched: Instant::now(),
                    ttl,
                });
                cache.last_attempt = Some((Instant::now(), None));
                Ok(set)
            }
            Err(e) => {
                let cause = match &e {
                    PushAuthError::Keys { cause, .. } => cause.clone(),
                    other => other.to_string(),
                };
                cache.last_attempt = Some((Instant::now(), Some(cause)));
                match usable {
                    // Keys still within their time serve while the key
                    // server is down.
                    Some(set) => {
                        tracing::warn!("{e}; using the cached keys");
                        Ok(set)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// The cached set, when it is within its time and holds `kid`.
    fn cached_with(&self, kid: &str) -> Option<Arc<JwkSet>> {
        let cache = self.cache.lock().expect("key cache");
        cache
            .keys
            .as_ref()
            .filter(|k| k.fetched.elapsed() < k.ttl && k.set.find(kid).is_some())
            .map(|k| Arc::clone(&k.set))
    }

    async fn fetch(&self) -> Result<(JwkSet, Duration), PushAuthError> {
        let failed = |cause: String| PushAuthError::Keys {
            url: self.jwks_url.clone(),
            cause,
        };
        let response = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        let ttl = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_KEYS_TTL)
            .clamp(MIN_KEYS_TTL, MAX_KEYS_TTL);
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| failed(format!("not a JWK set: {e}")))?;
        tracing::info!(keys = set.keys.len(), url = %self.jwks_url, "fetched Pub/Sub push signing keys");
        Ok((set, ttl))
    }
}

/// `max-age=N` of a `Cache-Control` value (RFC 9111 §5.2.2.1), in seconds.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (name, value) = d.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| value.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

/// A Pub/Sub push request's body (Google: "Receive messages from push
/// subscriptions", wrapped payload).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PushRequest {
    pub message: PushMessage,
    /// `projects/{project}/subscriptions/{name}`.
    #[serde(default)]
    pub subscription: String,
}

/// One Pub/Sub message as pushed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PushMessage {
    /// GCS's notification attributes: `eventType`, `bucketId`, `objectId`,
    /// `objectGeneration`, `payloadFormat`, `notificationConfig`, …
    #[serde(default)]
    pub attributes: std::collections::HashMap<String, String>,
    /// Base64 of the payload (the object's JSON resource with
    /// `JSON_API_V1`, empty with `NONE`).
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default, rename = "messageId")]
    pub message_id: String,
}

/// The event a message describes: from its attributes, else (a message
/// republished without them) from its JSON payload.
fn event_of(message: &PushMessage) -> Result<(String, String, String, Option<i64>), String> {
    let attr = |k: &str| message.attributes.get(k).cloned();
    let payload: Option<Value> = message
        .data
        .as_deref()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let from_payload = |k: &str| payload.as_ref().and_then(|p| p[k].as_str()).map(str::to_owned);
    let event_type =
        attr("eventType").ok_or("not a Cloud Storage notification: the message has no eventType attribute")?;
    let bucket = attr("bucketId")
        .or_else(|| from_payload("bucket"))
        .ok_or("not a Cloud Storage notification: no bucketId attribute")?;
    let key = attr("objectId")
        .or_else(|| from_payload("name"))
        .ok_or("not a Cloud Storage notification: no objectId attribute")?;
    let generation = attr("objectGeneration")
        .or_else(|| from_payload("generation"))
        .and_then(|g| g.parse().ok());
    Ok((event_type, bucket, key, generation))
}

/// Longest object name GCS allows, in bytes (Google: "Object naming
/// requirements"); a longer one in a message is not a real object's.
const MAX_OBJECT_NAME_BYTES: usize = 1024;

/// An acknowledgement that applies nothing (200).
fn ignored(reason: String) -> (StatusCode, Json<Value>) {
    tracing::info!("bucket notification ignored: {reason}");
    (StatusCode::OK, Json(json!({"queued": false, "reason": reason})))
}

/// The push token of a request, checked: signature, issuer, expiry and an
/// audience of exactly this endpoint's public URL. The URL comes from
/// `LABELPORT_PUBLIC_URL` only, never from the request's own headers (which
/// the caller writes: a token minted for another server could then be
/// replayed here).
async fn authenticate_push(state: &AppState, headers: &HeaderMap, path: &str) -> ApiResult<PushClaims> {
    let refused = |e: PushAuthError| {
        tracing::warn!(path, "push request refused: {e}");
        match e {
            PushAuthError::Keys { .. } => ApiError::Unavailable(e.to_string()),
            _ => ApiError::Unauthorized(e.to_string().into()),
        }
    };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refused(PushAuthError::Missing))?;
    if state.public_url.is_empty() {
        // Refused rather than "unavailable": a server without a public URL
        // does not take pushes at all, until its operator sets one.
        return Err(ApiError::Forbidden(
            "Bucket notifications need the server's public URL: start it with LABELPORT_PUBLIC_URL set to the \
             https:// address Pub/Sub pushes to (the token's audience is that address and this path)."
                .into(),
        ));
    }
    let audience = format!("{}{path}", state.public_url);
    state.push_verifier.verify(token, &audience).await.map_err(refused)
}

#[utoipa::path(post, path = "/api/storages/{kind}/{id}/notifications", tag = "storages",
    request_body = PushRequest,
    params(("kind" = String, Path, description = "Storage type: gcs or gcswif"), ("id" = i64, Path)),
    responses(
        (status = 202, description = "{queued: true}: the object's change is queued and applied within seconds by the rules of a sync (a Labelport addition)"),
        (status = 200, description = "{queued: false, reason}: acknowledged and ignored (not a Cloud Storage notification, another bucket, an event type that changes no task, an object outside the storage's scope)"),
        (status = 401, description = "No OIDC token, or not one Google signed for this endpoint"),
        (status = 403, description = "LABELPORT_PUBLIC_URL is not set; or the token is not the storage's pubsub_push_service_account's, or the storage has none"),
        (status = 404, description = "No such source storage"),
        (status = 503, description = "Google's signing keys could not be fetched")))]
pub async fn storage_notification(
    State(state): State<AppState>,
    KindIdPath(kind, id): KindIdPath,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // The token first: nothing about the storage is told to a caller that
    // is not a push subscription of Google's for this endpoint.
    let path = format!("/api/storages/{}/{id}/notifications", kind.name());
    let claims = authenticate_push(&state, &headers, &path).await?;
    let row = match state.db.get_storage(Direction::Import, id).await {
        Ok(row) if row.kind == kind && row.project_id.is_some() => row,
        Ok(_) | Err(labelport_db::DbError::NotFound) => return Err(ApiError::not_found()),
        Err(e) => return Err(e.into()),
    };
    let options = row.settings.import().ok_or_else(ApiError::not_found)?;
    let account = options.pubsub_push_service_account.as_str();
    if account.is_empty() {
        return Err(ApiError::Forbidden(
            "Bucket notifications are off for this storage: set its pubsub_push_service_account to the \
             service account of the push subscription."
                .into(),
        ));
    }
    if !claims.email.eq_ignore_ascii_case(account) || !claims.email_verified {
        tracing::warn!(storage.id = id, email = %claims.email, "push request of another account refused");
        // The configured account is not named: any Google user can mint a
        // token for this audience.
        return Err(ApiError::Forbidden(if claims.email_verified {
            format!(
                "The push token is {}'s, which is not this storage's pubsub_push_service_account.",
                if claims.email.is_empty() {
                    "no account"
                } else {
                    claims.email.as_str()
                },
            )
        } else {
            "The push token's e-mail is not verified (email_verified is not true): Google sets it for service \
             accounts, so this is not a push subscription's token."
                .to_owned()
        }));
    }
    // Whatever Google's subscription delivers from here on is acknowledged:
    // a message it cannot use would otherwise be redelivered for days.
    let push: PushRequest = match serde_json::from_slice(&body) {
        Ok(push) => push,
        Err(e) => {
            tracing::warn!(storage.id = id, "push body is not a Pub/Sub push message: {e}");
            return Ok(ignored(format!(
                "not a Pub/Sub push message ({e}); the subscription must wrap messages (not --push-no-wrapper)"
            )));
        }
    };
    let (event_type, bucket, key, generation) = match event_of(&push.message) {
        Ok(event) => event,
        Err(reason) => return Ok(ignored(reason)),
    };
    if bucket != row.settings.bucket {
        return Ok(ignored(format!(
            "the event is for bucket {bucket}; this storage reads {}",
            row.settings.bucket
        )));
    }
    if !APPLIED_EVENTS.contains(&event_type.as_str()) {
        return Ok(ignored(format!("event type {event_type} changes no task")));
    }
    if key.len() > MAX_OBJECT_NAME_BYTES {
        return Ok(ignored(format!(
            "an object name of {} bytes (GCS allows {MAX_OBJECT_NAME_BYTES})",
            key.len()
        )));
    }
    let filter = match compile_filter(&row.settings.regex_filter) {
        Ok(filter) => filter,
        Err(e) => return Ok(ignored(format!("the storage's regex_filter does not compile: {e}"))),
    };
    if !key_in_scope(
        &normalize_prefix(&row.settings.prefix),
        options.recursive_scan,
        filter.as_ref(),
        &key,
    ) {
        return Ok(ignored(format!(
            "{key} is outside this storage's scope (prefix, sub-folders, regex_filter)"
        )));
    }
    let job = NotificationJob {
        storage_id: id,
        key,
        event_type,
        generation,
    };
    queue_notification(&state.db, &job).await?;
    state.db.note_notification(id).await?;
    state.jobs_notify.notify_waiters();
    metrics::counter!(NOTIFICATIONS_RECEIVED).increment(1);
    tracing::info!(
        storage.id = id,
        key = %job.key,
        event = %job.event_type,
        generation = job.generation,
        message.id = %push.message.message_id,
        subscription = %push.subscription,
        "bucket notification queued"
    );
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))))
}

/// Prometheus counter: bucket notifications accepted and queued.
pub const NOTIFICATIONS_RECEIVED: &str = "labelport_notifications_received_total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=22270, must-revalidate, no-transform"),
            Some(Duration::from_secs(22270))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    /// A token with an RS256 header naming `kid` (its signature is never
    /// reached: the keys are missing).
    fn unsigned_token(kid: &str) -> String {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            b64(json!({"alg": "RS256", "kid": kid, "typ": "JWT"})),
            b64(json!({"aud": "x"}))
        )
    }

    #[tokio::test]
    async fn a_key_server_that_is_down_is_asked_at_most_every_30_seconds() {
        // A port nothing listens on: the fetch fails at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        drop(listener);
        let verifier = PushVerifier::new(&url);
        let first = verifier.verify(&unsigned_token("k1"), "aud").await.unwrap_err();
        assert!(matches!(first, PushAuthError::Keys { .. }), "{first}");
        assert!(!first.to_string().contains("tried again"), "{first}");
        // Another kid at once: no new fetch, the same failure.
        let second = verifier.verify(&unsigned_token("k2"), "aud").await.unwrap_err();
        assert!(
            matches!(&second, PushAuthError::Keys { cause, .. } if cause.contains("tried again within")),
            "{second}"
        );
        // A token naming no key, and one of another algorithm, are refused
        // before any fetch.
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let no_kid = format!("{}.{}.c2ln", b64(json!({"alg": "RS256"})), b64(json!({})));
        assert!(matches!(verifier.verify(&no_kid, "aud").await, Err(PushAuthError::Invalid(m)) if m.contains("kid")));
        let none = format!("{}.{}.", b64(json!({"alg": "none"})), b64(json!({})));
        assert!(matches!(
            verifier.verify(&none, "aud").await,
            Err(PushAuthError::Invalid(_))
        ));
    }

    #[test]
    fn events_come_from_attributes_or_the_payload() {
        let message: PushMessage = serde_json::from_value(json!({
            "attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "a/1.jpg", "objectGeneration": "17"},
            "messageId": "1"
        }))
        .unwrap();
        assert_eq!(
            event_of(&message).unwrap(),
            ("OBJECT_FINALIZE".into(), "b".into(), "a/1.jpg".into(), Some(17))
        );
        let data = base64::engine::general_purpose::STANDARD
            .encode(json!({"bucket": "b", "name": "x.json", "generation": "9"}).to_string());
        let message: PushMessage = serde_json::from_value(json!({
            "attributes": {"eventType": "OBJECT_DELETE"}, "data": data
        }))
        .unwrap();
        assert_eq!(
            event_of(&message).unwrap(),
            ("OBJECT_DELETE".into(), "b".into(), "x.json".into(), Some(9))
        );
        let message: PushMessage = serde_json::from_value(json!({"attributes": {}})).unwrap();
        assert!(event_of(&message).is_err());
    }
}
