//! Google's side of a Pub/Sub push with authentication, for tests and
//! benchmarks: a JWK-set endpoint (what `https://www.googleapis.com/oauth2/v3/certs`
//! serves) holding the public half of a local RSA key, and push requests
//! shaped as Pub/Sub sends them — a wrapped message with Cloud Storage's
//! notification attributes, and an RS256 OIDC token signed by that key.
//! (Google has no emulator for either; the server under test fetches the
//! keys over HTTP and checks every claim, as it does with Google's.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The `kid` of the key the fake serves and signs with.
pub const PUSH_KEY_ID: &str = "labelport-test-push-key";

/// A JWK-set server and the key behind it.
pub struct FakePubSubKeys {
    /// `http://127.0.0.1:<port>/oauth2/v3/certs`: `LABELPORT_PUBSUB_JWKS_URL`.
    pub jwks_url: String,
    fetches: Arc<AtomicUsize>,
    encoding: EncodingKey,
    task: tokio::task::JoinHandle<()>,
}

/// The claims of a push token; [`FakePubSubKeys::claims`] gives Google's.
pub type Claims = Value;

impl FakePubSubKeys {
    /// Serves the public half of the service-account key `key_json`'s RSA
    /// key (the repository's test key) as a JWK set.
    pub async fn start(key_json: &str) -> anyhow::Result<FakePubSubKeys> {
        let key: Value = serde_json::from_str(key_json)?;
        let pem = key["private_key"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the key has no private_key"))?;
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(der)?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [
            // A key the tokens never use comes first, as Google's set holds two.
            {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "another-key", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": PUSH_KEY_ID, "n": b64(&public.n), "e": b64(&public.e)},
        ]});
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fetches);
        let router = Router::new().route(
            "/oauth2/v3/certs",
            get(move || {
                let counter = Arc::clone(&counter);
                let jwks = jwks.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    ([("cache-control", "public, max-age=3600")], axum::Json(jwks))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakePubSubKeys {
            jwks_url: format!("http://{addr}/oauth2/v3/certs"),
            fetches,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes())?,
            task,
        })
    }

    /// How many times the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The claims Google puts in a push token for `audience` and the
    /// subscription's service account `email`, valid for an hour.
    pub fn claims(audience: &str, email: &str) -> Claims {
        let now = chrono::Utc::now().timestamp();
        json!({
            "aud": audience,
            "azp": "113774264463038321964",
            "email": email,
            "email_verified": true,
            "exp": now + 3600,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": "113774264463038321964",
        })
    }

    /// `claims` signed RS256 with the served key (header `kid` set).
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(PUSH_KEY_ID.into());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a test token")
    }
}

impl Drop for FakePubSubKeys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A push request body as Pub/Sub sends it for a Cloud Storage
/// notification (`payloadFormat` `JSON_API_V1`): the attributes GCS sets
/// and the object's resource as base64 data.
pub fn storage_push_body(event_type: &str, bucket: &str, key: &str, generation: i64) -> Value {
    let resource = json!({
        "kind": "storage#object", "bucket": bucket, "name": key,
        "id": format!("{bucket}/{key}/{generation}"), "generation": generation.to_string(),
        "metageneration": "1", "contentType": "application/octet-stream",
    });
    json!({
        "message": {
            "attributes": {
                "bucketId": bucket,
                "eventTime": chrono::Utc::now().to_rfc3339(),
                "eventType": event_type,
                "notificationConfig": format!("projects/_/buckets/{bucket}/notificationConfigs/1"),
                "objectGeneration": generation.to_string(),
                "objectId": key,
                "payloadFormat": "JSON_API_V1",
            },
            "data": base64::engine::general_purpose::STANDARD.encode(resource.to_string()),
            "messageId": format!("{}", rand_id()),
            "publishTime": chrono::Utc::now().to_rfc3339(),
        },
        "subscription": "projects/test-project/subscriptions/labelport-notifications",
    })
}

fn rand_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
