//! A pass-through HTTP proxy in front of the GCS emulator that can make
//! chosen uploads fail with 503, to test retries and partial failures
//! against the real emulator (which has no fault injection of its own),
//! counts object downloads, and can require each request to carry a
//! bearer token a check accepts (the token Workload Identity Federation
//! issued). It can also answer a share of list pages, object reads and
//! uploads 429 or 503 ([`FaultProxy::throttle`]), and leave requests
//! without an answer ([`FaultProxy::hang`]).

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

#[derive(Default)]
struct Rule {
    /// Uploads whose object name contains this fail…
    name_contains: String,
    /// …this many more times (`u64::MAX`: always)…
    remaining: u64,
    /// …with this status.
    status: u16,
}

/// After `after` uploads into `bucket` have gone through, every request
/// naming the bucket is sent to a bucket that does not exist, so the real
/// emulator answers as it does for a deleted bucket.
struct Vanish {
    bucket: String,
    after: u64,
    uploads: u64,
}

struct Inner {
    upstream: String,
    http: reqwest::Client,
    rule: Mutex<Option<Rule>>,
    vanish: Mutex<Option<Vanish>>,
    failed: Mutex<u64>,
    /// Object downloads (`alt=media`) requested so far.
    downloads: Mutex<u64>,
    /// When set, a request whose bearer token this refuses is answered 401.
    bearer: Mutex<Option<BearerCheck>>,
    /// Requests answered 401 by the bearer check.
    unauthorized: Mutex<Vec<String>>,
    /// Requests that passed the bearer check.
    authorized: Mutex<u64>,
    /// Downloads of objects whose name contains `.0` are cut after `.2`
    /// bytes, `.1` more times (the connection breaks mid-body).
    cut: Mutex<Option<(String, u64, usize)>>,
    throttle: Mutex<Option<Throttle>>,
    /// The next requests of a kind left without an answer, and how many
    /// have been so far.
    hang: Mutex<(std::collections::HashMap<RequestKind, u64>, u64)>,
    /// Requests of a kind answered only after this delay.
    slow: Mutex<std::collections::HashMap<RequestKind, std::time::Duration>>,
    /// When set, `buckets.testIamPermissions` (which the emulator lacks)
    /// is answered here: these permissions are held, and the permissions
    /// each request asked about are recorded.
    granted: Mutex<Option<Vec<String>>>,
    permission_checks: Mutex<Vec<Vec<String>>>,
    /// When set, the bucket resource (`GET`/`PATCH /storage/v1/b/{bucket}`)
    /// is answered here with this CORS policy and metageneration (the
    /// emulator keeps no CORS policy), and each PATCH is recorded.
    cors: Mutex<Option<(Vec<serde_json::Value>, i64)>>,
    cors_patches: Mutex<Vec<CorsPatch>>,
    /// Requests of these kinds are answered 403, as GCS refuses an
    /// identity without the permission.
    denied: Mutex<std::collections::HashSet<RequestKind>>,
    /// The `error.message` of those 403s (None: a missing-permission one).
    denied_message: Mutex<Option<String>>,
}

/// A `PATCH` of the bucket resource as the proxy received it.
#[derive(Debug, Clone)]
pub struct CorsPatch {
    /// The query (`ifMetagenerationMatch`, `fields`…).
    pub query: Vec<(String, String)>,
    /// The JSON body.
    pub body: serde_json::Value,
    /// The answer given: 200, or 412 for a stale metageneration.
    pub status: u16,
}

/// What a request to the JSON API does, for choosing which ones fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `GET /storage/v1/b/{bucket}/o`: one page of a listing.
    List,
    /// `alt=media`: an object's bytes (a download, or the media proxy).
    Read,
    /// `/upload/…`: writing an object.
    Upload,
    /// `/storage/v1/b/{bucket}` itself: the bucket's metadata and CORS
    /// policy (`buckets.get`, `buckets.patch`).
    Bucket,
    /// Anything else (object metadata, deletes).
    Other,
}

impl RequestKind {
    fn of(req: &Request) -> RequestKind {
        let path = req.uri().path();
        if path.starts_with("/upload/") {
            return RequestKind::Upload;
        }
        let query = req.uri().query().unwrap_or_default();
        if url_params(query).iter().any(|(k, v)| k == "alt" && v == "media") {
            return RequestKind::Read;
        }
        let p = path.trim_end_matches('/');
        if req.method() == axum::http::Method::GET && p.starts_with("/storage/v1/b/") && p.ends_with("/o") {
            return RequestKind::List;
        }
        if p.starts_with("/storage/v1/b/") && p.matches('/').count() == 4 {
            return RequestKind::Bucket;
        }
        RequestKind::Other
    }
}

/// Every `every`-th request of each kind in `kinds` (the first, then
/// `1 + every`, `1 + 2·every`, …) is answered 429 and 503 in turn.
struct Throttle {
    kinds: Vec<RequestKind>,
    every: u64,
    seen: std::collections::HashMap<RequestKind, u64>,
    answered: std::collections::HashMap<RequestKind, u64>,
}

/// Accepts or refuses a bearer token.
pub type BearerCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct FaultProxy {
    pub endpoint: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rule: Mutex::new(None),
            vanish: Mutex::new(None),
            failed: Mutex::new(0),
            downloads: Mutex::new(0),
            bearer: Mutex::new(None),
            unauthorized: Mutex::default(),
            authorized: Mutex::new(0),
            cut: Mutex::new(None),
            throttle: Mutex::new(None),
            hang: Mutex::default(),
            slow: Mutex::default(),
            granted: Mutex::default(),
            permission_checks: Mutex::default(),
            cors: Mutex::default(),
            cors_patches: Mutex::default(),
            denied: Mutex::default(),
            denied_message: Mutex::default(),
        });
        let app = axum::Router::new().fallback(forward).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FaultProxy {
            endpoint,
            inner,
            server,
        })
    }

    /// Makes the next `times` uploads of objects whose name contains
    /// `name_contains` answer 503 (`u64::MAX`: until [`FaultProxy::heal`]).
    pub fn fail_uploads(&self, name_contains: &str, times: u64) {
        self.fail_uploads_with(name_contains, times, 503);
    }

    /// As [`FaultProxy::fail_uploads`] with another status (403: no
    /// permission to write).
    pub fn fail_uploads_with(&self, name_contains: &str, times: u64, status: u16) {
        *self.inner.rule.lock().unwrap() = Some(Rule {
            name_contains: name_contains.to_owned(),
            remaining: times,
            status,
        });
    }

    /// Lets `uploads` more uploads into `bucket` through, then makes the
    /// bucket look deleted (until [`FaultProxy::heal`]).
    pub fn vanish_bucket_after(&self, bucket: &str, uploads: u64) {
        *self.inner.vanish.lock().unwrap() = Some(Vanish {
            bucket: bucket.to_owned(),
            after: uploads,
            uploads: 0,
        });
    }

    /// Ends the failing uploads, the vanished bucket, the throttling, the
    /// slowness, the hangs still due and the permissions answer.
    pub fn heal(&self) {
        *self.inner.rule.lock().unwrap() = None;
        *self.inner.vanish.lock().unwrap() = None;
        if let Some(t) = self.inner.throttle.lock().unwrap().as_mut() {
            t.kinds.clear();
        }
        self.inner.hang.lock().unwrap().0.clear();
        self.inner.slow.lock().unwrap().clear();
        // testIamPermissions and the bucket resource go back to the
        // emulator (which cannot say, and keeps no CORS policy).
        *self.inner.granted.lock().unwrap() = None;
        *self.inner.cors.lock().unwrap() = None;
        self.inner.denied.lock().unwrap().clear();
        *self.inner.denied_message.lock().unwrap() = None;
    }

    /// Uploads answered 503 so far.
    pub fn failed_uploads(&self) -> u64 {
        *self.inner.failed.lock().unwrap()
    }

    /// From now on answers GCS's `buckets.testIamPermissions`
    /// (`GET /storage/v1/b/{bucket}/iam/testPermissions?permissions=…`) as
    /// GCS does: the asked permissions that are in `granted`, the field
    /// left out when there are none.
    pub fn grant_permissions(&self, granted: &[&str]) {
        *self.inner.granted.lock().unwrap() = Some(granted.iter().map(|p| (*p).to_owned()).collect());
    }

    /// From now on answers every request of `kind` 403 (until
    /// [`FaultProxy::heal`]), as GCS answers an identity that lacks the
    /// permission.
    pub fn deny(&self, kind: RequestKind) {
        self.inner.denied.lock().unwrap().insert(kind);
    }

    /// As [`FaultProxy::deny`], with GCS's `error.message` set to `message`
    /// (a refusal by a network rule rather than by IAM).
    pub fn deny_with(&self, kind: RequestKind, message: &str) {
        *self.inner.denied_message.lock().unwrap() = Some(message.to_owned());
        self.deny(kind);
    }

    /// From now on answers the bucket resource itself with this CORS policy
    /// (each rule as GCS's JSON writes it), as GCS does; a PATCH must carry
    /// the current `ifMetagenerationMatch` (else 412) and replaces the
    /// policy with its body's `cors`.
    pub fn set_cors(&self, rules: Vec<serde_json::Value>) {
        *self.inner.cors.lock().unwrap() = Some((rules, 1));
    }

    /// The CORS policy now held (None: not set).
    pub fn cors(&self) -> Option<Vec<serde_json::Value>> {
        self.inner.cors.lock().unwrap().as_ref().map(|(r, _)| r.clone())
    }

    /// Every PATCH of the bucket resource received.
    pub fn cors_patches(&self) -> Vec<CorsPatch> {
        self.inner.cors_patches.lock().unwrap().clone()
    }

    /// The permissions each `testIamPermissions` request asked about.
    pub fn permission_checks(&self) -> Vec<Vec<String>> {
        self.inner.permission_checks.lock().unwrap().clone()
    }

    /// From now on, every request must carry `Authorization: Bearer <t>`
    /// with a `t` that `check` accepts; others are answered 401, as GCS
    /// answers a missing or expired token.
    pub fn require_bearer(&self, check: BearerCheck) {
        *self.inner.bearer.lock().unwrap() = Some(check);
    }

    /// Cuts the next `times` downloads of objects whose name contains
    /// `name_contains` after `after_bytes` bytes of the body: the
    /// connection breaks mid-download, as a reset would.
    pub fn cut_downloads(&self, name_contains: &str, times: u64, after_bytes: usize) {
        *self.inner.cut.lock().unwrap() = Some((name_contains.to_owned(), times, after_bytes));
    }

    /// From now on answers one request in `every` of each kind in `kinds`
    /// with 429 or 503 (in turn), as a throttled or briefly unavailable
    /// service does; the first request of each kind is one of them, so a
    /// short test meets every fault. Retries are counted as new requests,
    /// so one request fails again only when `every` others of its kind ran
    /// in between.
    pub fn throttle(&self, kinds: &[RequestKind], every: u64) {
        *self.inner.throttle.lock().unwrap() = Some(Throttle {
            kinds: kinds.to_vec(),
            every: every.max(1),
            seen: Default::default(),
            answered: Default::default(),
        });
    }

    /// Requests of `kind` answered 429 or 503 by [`FaultProxy::throttle`].
    pub fn throttled(&self, kind: RequestKind) -> u64 {
        self.inner
            .throttle
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|t| t.answered.get(&kind).copied())
            .unwrap_or(0)
    }

    /// Leaves the next `times` requests of `kind` without any answer (the
    /// connection stays open, nothing is sent): the client must time out.
    pub fn hang(&self, kind: RequestKind, times: u64) {
        self.inner.hang.lock().unwrap().0.insert(kind, times);
    }

    /// Answers every request of `kind` only after `delay` (a slow bucket:
    /// a long sync that a test can interrupt half-way).
    pub fn slow(&self, kind: RequestKind, delay: std::time::Duration) {
        self.inner.slow.lock().unwrap().insert(kind, delay);
    }

    /// Requests left without an answer so far.
    pub fn hung(&self) -> u64 {
        self.inner.hang.lock().unwrap().1
    }

    /// Requests refused by the bearer check (`METHOD path`).
    pub fn unauthorized(&self) -> Vec<String> {
        self.inner.unauthorized.lock().unwrap().clone()
    }

    /// Requests that passed the bearer check.
    pub fn authorized(&self) -> u64 {
        *self.inner.authorized.lock().unwrap()
    }

    /// Object downloads (`alt=media` requests) that went through so far.
    pub fn downloads(&self) -> u64 {
        *self.inner.downloads.lock().unwrap()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The object name of a simple or multipart upload request, if it is one.
fn upload_name(req: &Request) -> Option<String> {
    if !req.uri().path().starts_with("/upload/") {
        return None;
    }
    let query = req.uri().query()?;
    url_params(query).into_iter().find(|(k, _)| k == "name").map(|(_, v)| v)
}

/// The path with encoded slashes of object names decoded.
fn percent_decoded(path: &str) -> String {
    path.replace("%2F", "/").replace("%2f", "/")
}

fn url_params(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let check = inner.bearer.lock().unwrap().clone();
    // A signed URL carries its own authorization, as GCS accepts it.
    let signed_url = req.uri().query().is_some_and(|q| q.contains("X-Goog-Signature="));
    if let Some(check) = check.filter(|_| !signed_url) {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if token.is_some_and(|t| check(t)) {
            *inner.authorized.lock().unwrap() += 1;
        } else {
            inner
                .unauthorized
                .lock()
                .unwrap()
                .push(format!("{} {}", req.method(), req.uri().path()));
            let body = r#"{"error":{"code":401,"message":"Invalid Credentials","status":"UNAUTHENTICATED"}}"#;
            return Response::builder().status(401).body(Body::from(body)).unwrap();
        }
    }
    let segments: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let bucket_resource = segments.len() == 4 && segments[..3] == ["storage", "v1", "b"];
    if bucket_resource {
        if let Some(refusal) = refusal(&inner, RequestKind::Bucket) {
            return refusal;
        }
    }
    if bucket_resource && inner.cors.lock().unwrap().is_some() {
        let bucket = segments[3].to_owned();
        let method = req.method().clone();
        let query = url_params(req.uri().query().unwrap_or_default());
        let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
        let mut held = inner.cors.lock().unwrap();
        let (rules, metageneration) = held.as_mut().expect("checked above");
        let answer = |rules: &Vec<serde_json::Value>, m: i64| {
            let mut b = serde_json::json!({"kind": "storage#bucket", "name": bucket, "metageneration": m.to_string()});
            if !rules.is_empty() {
                b["cors"] = serde_json::json!(rules);
            }
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap()
        };
        if method == axum::http::Method::PATCH {
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let expected = metageneration.to_string();
            let current = query
                .iter()
                .any(|(k, v)| k == "ifMetagenerationMatch" && *v == expected);
            let status = if current { 200 } else { 412 };
            inner.cors_patches.lock().unwrap().push(CorsPatch {
                query: query.clone(),
                body: parsed.clone(),
                status,
            });
            if !current {
                let body = r#"{"error":{"code":412,"message":"Precondition Failed"}}"#;
                return Response::builder().status(412).body(Body::from(body)).unwrap();
            }
            *rules = parsed["cors"].as_array().cloned().unwrap_or_default();
            *metageneration += 1;
        }
        return answer(rules, *metageneration);
    }
    let granted = inner.granted.lock().unwrap().clone();
    if let Some(granted) = granted {
        if req.method() == axum::http::Method::GET && req.uri().path().ends_with("/iam/testPermissions") {
            let asked: Vec<String> = url_params(req.uri().query().unwrap_or_default())
                .into_iter()
                .filter(|(k, _)| k == "permissions")
                .map(|(_, v)| v)
                .collect();
            inner.permission_checks.lock().unwrap().push(asked.clone());
            let held: Vec<&String> = asked.iter().filter(|p| granted.contains(p)).collect();
            let mut body = serde_json::json!({"kind": "storage#testIamPermissionsResponse"});
            if !held.is_empty() {
                body["permissions"] = serde_json::json!(held);
            }
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
        }
    }
    let kind = RequestKind::of(&req);
    if let Some(refusal) = refusal(&inner, kind) {
        return refusal;
    }
    let hangs = {
        let mut hang = inner.hang.lock().unwrap();
        match hang.0.get_mut(&kind) {
            Some(n) if *n > 0 => {
                *n -= 1;
                hang.1 += 1;
                true
            }
            _ => false,
        }
    };
    let delay = inner.slow.lock().unwrap().get(&kind).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if hangs {
        // Never answers; the server task holding it ends with the proxy.
        std::future::pending::<()>().await;
    }
    let throttled = inner.throttle.lock().unwrap().as_mut().and_then(|t| {
        if !t.kinds.contains(&kind) {
            return None;
        }
        let n = t.seen.entry(kind).or_default();
        *n += 1;
        if (*n - 1) % t.every != 0 {
            return None;
        }
        let answered = t.answered.entry(kind).or_default();
        *answered += 1;
        Some(if *answered % 2 == 1 { 429 } else { 503 })
    });
    if let Some(status) = throttled {
        let body = format!("{{\"error\":{{\"code\":{status},\"message\":\"injected: rate limit or unavailable\"}}}}");
        return Response::builder().status(status).body(Body::from(body)).unwrap();
    }
    if let Some(name) = upload_name(&req) {
        let mut rule = inner.rule.lock().unwrap();
        if let Some(r) = rule.as_mut() {
            if name.contains(&r.name_contains) && r.remaining > 0 {
                if r.remaining != u64::MAX {
                    r.remaining -= 1;
                }
                *inner.failed.lock().unwrap() += 1;
                let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let body = format!(
                    "{{\"error\":{{\"code\":{},\"message\":\"injected failure\"}}}}",
                    status.as_u16()
                );
                return Response::builder().status(status).body(Body::from(body)).unwrap();
            }
        }
    }
    let is_upload = upload_name(&req).is_some();
    let mut cut_after = None;
    if req
        .uri()
        .query()
        .is_some_and(|q| url_params(q).iter().any(|(k, v)| k == "alt" && v == "media"))
    {
        *inner.downloads.lock().unwrap() += 1;
        let path = percent_decoded(req.uri().path());
        if let Some((name, times, after)) = inner.cut.lock().unwrap().as_mut() {
            if *times > 0 && path.contains(name.as_str()) {
                *times -= 1;
                cut_after = Some(*after);
            }
        }
    }
    let (parts, body) = req.into_parts();
    let mut path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    if let Some(v) = inner.vanish.lock().unwrap().as_mut() {
        let segment = format!("/b/{}", v.bucket);
        let names_bucket = path.split(['?', '/']).any(|s| s == v.bucket) && path.contains(&segment);
        if names_bucket {
            if v.uploads >= v.after {
                path = path.replacen(&segment, &format!("{segment}-vanished"), 1);
            } else if is_upload {
                v.uploads += 1;
            }
        }
    }
    let url = format!("{}{path}", inner.upstream);
    let body: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return Response::builder().status(400).body(Body::empty()).unwrap(),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in parts.headers.iter() {
        if k != "host" && k != "content-length" {
            headers.insert(k.clone(), v.clone());
        }
    }
    let sent = inner
        .http
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) => {
            let mut out = Response::builder().status(r.status());
            for (k, v) in r.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    out = out.header(k, v);
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            match cut_after {
                Some(after) if after < bytes.len() => {
                    // The first bytes, then (once they are on their way)
                    // the connection breaks.
                    use futures::StreamExt;
                    let head = bytes.slice(..after);
                    let body =
                        futures::stream::iter([Ok::<_, std::io::Error>(head)]).chain(futures::stream::once(async {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "injected reset",
                            ))
                        }));
                    out.body(Body::from_stream(body)).unwrap()
                }
                _ => out.body(Body::from(bytes)).unwrap(),
            }
        }
        Err(e) => Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
    }
}

/// GCS's 403 for a request of a kind the test denies, if it does.
fn refusal(inner: &Inner, kind: RequestKind) -> Option<Response> {
    if !inner.denied.lock().unwrap().contains(&kind) {
        return None;
    }
    let message = inner
        .denied_message
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| "caller does not have storage permission (injected)".into());
    // GCS's error shape: `errors` with one item, as JSON.
    let body = serde_json::json!({"error": {"code": 403, "message": message,
        "errors": [{"message": message, "domain": "global", "reason": "forbidden"}]}})
    .to_string();
    Some(
        Response::builder()
            .status(403)
            .header("content-type", "application/json; charset=UTF-8")
            .body(Body::from(body))
            .unwrap(),
    )
}
