//! Presigning without a private key: Application Default Credentials give
//! an access token (from a local fake of Google's token endpoint) and IAM
//! `signBlob` (a local fake) signs. Both fakes check what they receive.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use labelport_storage::signing::{signed_url, KeySigner, SignedUrlRequest};
use labelport_testkit::{Backend, FakeGcs, TestApp};
use reqwest::header;
use serde_json::{json, Value};

const ACCESS_TOKEN: &str = "fake-access-token-for-tests";

#[derive(Clone)]
struct Fake {
    key: Arc<KeySigner>,
    email: String,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Google's OAuth token endpoint: a JWT-bearer grant from the key file.
async fn token(State(f): State<Fake>, body: String) -> (StatusCode, Json<Value>) {
    let form: Vec<(String, String)> = url_pairs(&body);
    let grant = form.iter().find(|(k, _)| k == "grant_type").map(|(_, v)| v.as_str());
    let assertion = form
        .iter()
        .find(|(k, _)| k == "assertion")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") || assertion.split('.').count() != 3 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "got": body})),
        );
    }
    // The JWT claims name the key's service account and the cloud-platform scope.
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(assertion.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    if claims["iss"] != f.email.as_str() || !claims["scope"].as_str().unwrap_or("").contains("cloud-platform") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unexpected claims", "claims": claims})),
        );
    }
    f.seen.lock().unwrap().push("token".into());
    (
        StatusCode::OK,
        Json(json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600})),
    )
}

fn url_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.replace("%3A", ":").replace("%3a", ":").replace('+', " "),
            )
        })
        .collect()
}

/// IAM Credentials `signBlob`.
async fn sign_blob(
    State(f): State<Fake>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {ACCESS_TOKEN}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}})),
        );
    }
    if name != format!("{}:signBlob", f.email) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": 404, "message": format!("no account {name}"), "status": "NOT_FOUND"}})),
        );
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(body["payload"].as_str().unwrap_or(""))
        .unwrap_or_default();
    let text = String::from_utf8(payload.clone()).unwrap_or_default();
    if !text.starts_with("GOOG4-RSA-SHA256\n") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": 400, "message": "not a V4 string to sign", "status": "INVALID_ARGUMENT"}})),
        );
    }
    let signature = f.key.sign_now(&payload).unwrap();
    f.seen.lock().unwrap().push("signBlob".into());
    let signed = base64::engine::general_purpose::STANDARD.encode(signature);
    (StatusCode::OK, Json(json!({"keyId": "test-key", "signedBlob": signed})))
}

#[tokio::test]
async fn presign_without_a_key_signs_through_iam_sign_blob() {
    let key_json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/test_service_account.not-a-test.json"
    ))
    .expect("shared/conformance beside the repository");
    let key: Value = serde_json::from_str(&key_json).unwrap();
    let email = key["client_email"].as_str().unwrap().to_owned();
    let fake = Fake {
        key: Arc::new(KeySigner::from_service_account_json(&key_json).unwrap()),
        email: email.clone(),
        seen: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    let app_router = Router::new()
        .route("/token", post(token))
        .route("/v1/projects/-/serviceAccounts/{name}", post(sign_blob))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app_router).await.unwrap() });

    // ADC: a key file whose token endpoint is the fake (this process only).
    let dir = tempfile::tempdir().unwrap();
    let mut adc = key.clone();
    adc["token_uri"] = json!(format!("{fake_url}/token"));
    let adc_path = dir.path().join("adc.json");
    std::fs::write(&adc_path, adc.to_string()).unwrap();
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &adc_path);

    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("iam-signed").await.unwrap();
    gcs.upload("iam-signed", "a.jpg", b"jpeg".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let app = TestApp::spawn_with_iam(Backend::Sqlite, &gcs, &fake_url).await;
    let (_, p) = app
        .post(
            "/api/projects",
            json!({"title": "i", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"}),
        )
        .await;
    let pid = p["id"].as_i64().unwrap();
    // No key on the storage: signing must go through IAM.
    let (s, st) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "iam-signed", "presign": true, "presign_ttl": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let (_, t) = app
        .post(
            "/api/tasks",
            json!({"project": pid, "data": {"image": "gs://iam-signed/a.jpg"}}),
        )
        .await;
    let tid = t["id"].as_i64().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!(
            "{}/tasks/{tid}/resolve/?fileuri={}",
            app.base_url,
            labelport_domain::resolve::encode_fileuri("gs://iam-signed/a.jpg")
        ))
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(*fake.seen.lock().unwrap(), vec!["token", "signBlob"]);
    // The IAM-signed URL equals the one signed locally with the same key.
    let date = location
        .split("X-Goog-Date=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let at = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let mut req = SignedUrlRequest::new("GET", "iam-signed", "a.jpg", 120, at);
    req.host = Some(gcs.endpoint.clone());
    assert_eq!(location, signed_url(&req, fake.key.as_ref()).await.unwrap());
    assert_eq!(
        reqwest::get(&location).await.unwrap().bytes().await.unwrap().as_ref(),
        b"jpeg"
    );

    // When IAM refuses (unknown account), the resolve answers 404 and logs why.
    std::env::set_var(
        labelport_api::signing::SIGNING_ACCOUNT_ENV,
        "nobody@elsewhere.iam.gserviceaccount.com",
    );
    let r = client
        .get(format!(
            "{}/tasks/{tid}/resolve/?fileuri={}",
            app.base_url,
            labelport_domain::resolve::encode_fileuri("gs://iam-signed/a.jpg")
        ))
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
