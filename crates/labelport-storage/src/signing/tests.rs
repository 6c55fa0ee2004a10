//! Google's V4 conformance vectors, key handling, and IAM signBlob against a
//! local fake.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

/// CI copies `shared/` next to the repository root, as it is on a
/// developer's machine.
const CONFORMANCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/conformance");
const EMAIL: &str = "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com";

fn read_conformance(name: &str) -> String {
    let path = format!("{CONFORMANCE_DIR}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {path}: {e}\nThe V4 signing conformance files are vendored in testdata/conformance/ \
             (Google's, Apache-2.0; see its README)."
        )
    })
}

fn key_json() -> String {
    read_conformance("test_service_account.not-a-test.json")
}

fn key_signer() -> KeySigner {
    KeySigner::from_service_account_json(&key_json()).expect("the conformance key loads")
}

fn vectors() -> Vec<Value> {
    let file: Value = serde_json::from_str(&read_conformance("v4_signatures.json")).expect("v4_signatures.json parses");
    file["signingV4Tests"]
        .as_array()
        .expect("signingV4Tests is a list")
        .clone()
}

/// Maps one `SigningV4Test` (see tests.proto) onto our request type.
fn request_for(v: &Value) -> SignedUrlRequest {
    let s = |key: &str| v.get(key).and_then(Value::as_str);
    let pairs = |key: &str| -> Vec<(String, String)> {
        v.get(key)
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let timestamp: DateTime<Utc> = DateTime::parse_from_rfc3339(s("timestamp").unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let mut req = SignedUrlRequest::new(
        s("method").unwrap(),
        s("bucket").unwrap_or(""),
        s("object").unwrap_or(""),
        v["expiration"].as_u64().unwrap(),
        timestamp,
    );
    req.headers = pairs("headers");
    req.query_parameters = pairs("queryParameters");
    if let Some(scheme) = s("scheme") {
        req.scheme = scheme.to_owned();
    }
    req.url_style = match s("urlStyle") {
        None | Some("PATH_STYLE") => UrlStyle::PathStyle,
        Some("VIRTUAL_HOSTED_STYLE") => UrlStyle::VirtualHostedStyle,
        Some("BUCKET_BOUND_HOSTNAME") => UrlStyle::BucketBoundHostname,
        Some(other) => panic!("unknown urlStyle {other}"),
    };
    req.bucket_bound_hostname = s("bucketBoundHostname").map(str::to_owned);
    // tests.proto: `hostname` wins over the client's endpoint, which wins over
    // the emulator host; the universe domain only changes the default host.
    req.host = s("hostname")
        .or(s("clientEndpoint"))
        .or(s("emulatorHostname"))
        .map(str::to_owned)
        .or_else(|| s("universeDomain").map(|domain| format!("storage.{domain}")));
    req
}

/// Where two strings part, with some context, for a readable failure.
fn diff(expected: &str, actual: &str) -> String {
    let at = expected
        .bytes()
        .zip(actual.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let from = at.saturating_sub(40);
    let context = |s: &str| {
        s.get(from..(at + 40).min(s.len()))
            .unwrap_or("<not at a char boundary>")
            .to_owned()
    };
    format!(
        "first difference at byte {at}\n    expected: …{:?}…\n    actual:   …{:?}…\n    full expected: {expected:?}\n    full actual:   {actual:?}",
        context(expected),
        context(actual)
    )
}

#[tokio::test]
async fn all_v4_conformance_vectors_match_byte_for_byte() {
    let signer = key_signer();
    let vectors = vectors();
    assert_eq!(vectors.len(), 29, "expected the 29 signingV4Tests of the vendored file");
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let name = format!("#{} \"{}\"", i + 1, v["description"].as_str().unwrap_or("?"));
        let req = request_for(v);
        let mut check = |what: &str, expected: Option<&str>, actual: Result<String, SignError>| match (expected, actual)
        {
            (None, _) => {}
            (Some(expected), Ok(actual)) if actual == expected => {}
            (Some(expected), Ok(actual)) => {
                failures.push(format!("{name}: {what} differs: {}", diff(expected, &actual)))
            }
            (Some(_), Err(e)) => failures.push(format!("{name}: {what} failed: {e}")),
        };
        check(
            "canonical request",
            v["expectedCanonicalRequest"].as_str(),
            canonical_request(&req, EMAIL),
        );
        check(
            "string to sign",
            v["expectedStringToSign"].as_str(),
            string_to_sign(&req, EMAIL),
        );
        check("URL", v["expectedUrl"].as_str(), signed_url(&req, &signer).await);
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors fail:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n\n")
    );
}

/// The public half of the test key, as DER `RSAPublicKey`.
fn public_key() -> Vec<u8> {
    let json: Value = serde_json::from_str(&key_json()).unwrap();
    let block = pem::parse(json["private_key"].as_str().unwrap()).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(block.contents()).unwrap();
    ring::signature::KeyPair::public_key(&pair).as_ref().to_vec()
}

fn verify(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public)
        .verify(message, signature)
        .is_ok()
}

#[tokio::test]
async fn key_signer_signatures_verify_with_the_public_key() {
    let public = public_key();
    let signer = key_signer();
    let message = b"GOOG4-RSA-SHA256\n20190201T090000Z\n20190201/auto/storage/goog4_request\nabc";
    let signature = signer.sign(message).await.unwrap();
    assert_eq!(signature.len(), 256, "RSA-2048");
    assert!(verify(&public, message, &signature), "KeySigner's signature verifies");
    assert!(!verify(&public, b"another message", &signature));
    // PKCS#1 v1.5 is deterministic.
    assert_eq!(signer.sign(message).await.unwrap(), signature);

    // And the signature inside a URL verifies against its string to sign.
    let v = &vectors()[0];
    let req = request_for(v);
    let url = signed_url(&req, &signer).await.unwrap();
    let hex_signature = url.rsplit_once("X-Goog-Signature=").unwrap().1;
    assert!(
        verify(
            &public,
            string_to_sign(&req, EMAIL).unwrap().as_bytes(),
            &hex::decode(hex_signature).unwrap()
        ),
        "URL signature verifies"
    );
}

#[test]
fn key_errors_never_show_the_key() {
    let secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDSECRETSECRET";
    let json = format!(
        r#"{{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"}}"#
    );
    let message = KeySigner::from_service_account_json(&json).unwrap_err().to_string();
    assert!(
        message.contains("\"private_key\" is not a") && !message.contains("SECRET"),
        "{message}"
    );

    let message =
        KeySigner::from_service_account_json(&format!("{{\"private_key\": 5, \"x\": \"{secret}\"")).unwrap_err();
    assert!(!message.to_string().contains("SECRET"), "{message}");

    // Not PEM at all, and PEM of another kind.
    let json = format!(r#"{{"client_email":"a@b.c","private_key":"{secret}"}}"#);
    let message = KeySigner::from_service_account_json(&json).unwrap_err().to_string();
    assert!(
        message.contains("not a PEM private key") && !message.contains("SECRET"),
        "{message}"
    );
    let json = r#"{"client_email":"a@b.c","private_key":"-----BEGIN CERTIFICATE-----\nMIIBCgKCAQEA\n-----END CERTIFICATE-----\n"}"#;
    let message = KeySigner::from_service_account_json(json).unwrap_err().to_string();
    assert!(
        message.contains("\"CERTIFICATE\", not an RSA private key") && !message.contains("SECRET"),
        "{message}"
    );

    let message = KeySigner::from_service_account_json(r#"{"type":"authorized_user"}"#)
        .unwrap_err()
        .to_string();
    assert!(message.contains("authorized_user"), "{message}");
    let message = KeySigner::from_service_account_json(r#"{"type":"service_account"}"#)
        .unwrap_err()
        .to_string();
    assert!(message.contains("client_email"), "{message}");

    let pem = serde_json::from_str::<Value>(&key_json()).unwrap()["private_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let debug = format!("{:?}", key_signer());
    assert!(debug.contains(EMAIL) && !debug.contains(&pem[30..60]), "{debug}");
}

fn base_request() -> SignedUrlRequest {
    let timestamp = DateTime::parse_from_rfc3339("2019-02-01T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    SignedUrlRequest::new("GET", "test-bucket", "test-object", 10, timestamp)
}

fn line(canonical: &str, n: usize) -> &str {
    canonical.split('\n').nth(n).unwrap()
}

#[test]
fn expiration_is_bounded_to_seven_days() {
    let mut req = base_request();
    req.expiration_secs = MAX_EXPIRATION_SECS;
    assert!(canonical_request(&req, EMAIL).is_ok());
    for bad in [MAX_EXPIRATION_SECS + 1, 0] {
        req.expiration_secs = bad;
        let e = canonical_request(&req, EMAIL).unwrap_err();
        assert!(
            matches!(e, SignError::InvalidRequest(_)) && e.to_string().contains("604800"),
            "{e}"
        );
    }
}

#[test]
fn object_names_are_encoded_per_spec() {
    let mut req = base_request();
    req.object = "dir/a+b&c=d(e);f,g*h@i$j'k!l%m n~o é.txt".into();
    let canonical = canonical_request(&req, EMAIL).unwrap();
    assert_eq!(
        line(&canonical, 1),
        "/test-bucket/dir/a%2Bb%26c%3Dd%28e%29%3Bf%2Cg%2Ah%40i%24j%27k%21l%25m%20n~o%20%C3%A9.txt"
    );
}

#[tokio::test]
async fn hosts_styles_and_emulators() {
    let signer = key_signer();

    let mut req = base_request();
    req.host = Some("http://127.0.0.1:4443".into());
    let url = signed_url(&req, &signer).await.unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:4443/test-bucket/test-object?X-Goog-Algorithm="),
        "{url}"
    );
    assert!(canonical_request(&req, EMAIL).unwrap().contains("\nhost:127.0.0.1\n"));

    let mut req = base_request();
    req.object.clear();
    req.url_style = UrlStyle::VirtualHostedStyle;
    let canonical = canonical_request(&req, EMAIL).unwrap();
    assert_eq!(line(&canonical, 1), "/");
    assert!(canonical.contains("\nhost:test-bucket.storage.googleapis.com\n"));

    let mut req = base_request();
    req.url_style = UrlStyle::BucketBoundHostname;
    assert!(matches!(
        canonical_request(&req, EMAIL),
        Err(SignError::InvalidRequest(_))
    ));
    req.bucket_bound_hostname = Some("https://cdn.example.com".into());
    req.scheme = "http".into();
    let url = signed_url(&req, &signer).await.unwrap();
    assert!(url.starts_with("https://cdn.example.com/test-object?"), "{url}");

    let mut req = base_request();
    req.scheme = "ftp".into();
    assert!(canonical_request(&req, EMAIL).is_err());
    req.scheme = "https".into();
    req.host = Some("http://127.0.0.1:4443/storage/v1".into());
    assert!(canonical_request(&req, EMAIL).is_err());
}

#[test]
fn headers_and_query_are_normalized() {
    let mut req = base_request();
    req.headers = vec![
        ("X-Goog-Meta-B".into(), "  two\t\twords ".into()),
        ("x-goog-meta-a".into(), "1".into()),
        ("X-GOOG-META-A".into(), "2".into()),
    ];
    req.query_parameters = vec![("b".into(), "x y".into()), ("A".into(), "/".into())];
    let canonical = canonical_request(&req, EMAIL).unwrap();
    assert!(
        canonical.contains("\nhost:storage.googleapis.com\nx-goog-meta-a:1,2\nx-goog-meta-b:two words\n\n"),
        "{canonical}"
    );
    assert!(
        canonical.contains("\nhost;x-goog-meta-a;x-goog-meta-b\nUNSIGNED-PAYLOAD"),
        "{canonical}"
    );
    let query = line(&canonical, 2);
    assert!(
        query.starts_with("A=%2F&X-Goog-Algorithm=") && query.ends_with("&b=x%20y"),
        "{query}"
    );

    let mut bad = base_request();
    bad.headers = vec![("Host".into(), "evil.example.com".into())];
    assert!(canonical_request(&bad, EMAIL)
        .unwrap_err()
        .to_string()
        .contains("host header"));
    let mut bad = base_request();
    bad.query_parameters = vec![("x-goog-signature".into(), "00".into())];
    assert!(canonical_request(&bad, EMAIL).is_err());
}

// ---------------------------------------------------------------------------
// IAM signBlob against a local fake.

/// A loopback IAM Credentials that checks every request the way Google
/// does and signs with the conformance key.
struct FakeIam {
    token: &'static str,
    /// Answer this status and body instead of signing.
    forced: Option<(StatusCode, &'static str)>,
    key: KeySigner,
    /// Payloads signed.
    signed: Mutex<Vec<Vec<u8>>>,
    /// Why requests were refused.
    refused: Mutex<Vec<String>>,
}

fn google_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": status.as_u16(), "message": message, "status": status.canonical_reason()}
    });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn fake_iam(
    State(fake): State<Arc<FakeIam>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refuse = |status: StatusCode, why: String| {
        fake.refused.lock().unwrap().push(why.clone());
        google_error(status, &why)
    };
    if method != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, format!("method {method}"));
    }
    let expected_path = format!("/v1/projects/-/serviceAccounts/{EMAIL}:signBlob");
    if uri.path() != expected_path || uri.query().is_some() {
        return refuse(StatusCode::NOT_FOUND, format!("unexpected path {uri}"));
    }
    let expected_auth = format!("Bearer {}", fake.token);
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected_auth.as_str()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.".into(),
        );
    }
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return refuse(StatusCode::BAD_REQUEST, "content-type is not application/json".into());
    }
    let payload = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|json| json.as_object().is_some_and(|o| o.len() == 1))
        .and_then(|json| json["payload"].as_str().and_then(|p| BASE64.decode(p).ok()));
    let Some(payload) = payload else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("body is not {{\"payload\": base64}}: {body:?}"),
        );
    };
    if let Some((status, body)) = fake.forced {
        return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let signature = fake.key.sign_now(&payload).unwrap();
    fake.signed.lock().unwrap().push(payload);
    let body = serde_json::json!({"keyId": "fake-key-id", "signedBlob": BASE64.encode(signature)});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Starts the fake on a loopback port; it lives as long as the test's runtime.
async fn start_fake_iam(forced: Option<(StatusCode, &'static str)>) -> (String, Arc<FakeIam>) {
    let fake = Arc::new(FakeIam {
        token: "good-token",
        forced,
        key: key_signer(),
        signed: Mutex::default(),
        refused: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(fake_iam).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, fake)
}

fn iam_signer(endpoint: &str, token: &str) -> IamSigner<StaticToken> {
    IamSigner::new(EMAIL, StaticToken(token.to_owned()))
        .unwrap()
        .with_endpoint(format!("{endpoint}/"))
}

#[tokio::test]
async fn iam_signer_gives_the_same_urls_as_the_key() {
    let (endpoint, fake) = start_fake_iam(None).await;
    let iam = iam_signer(&endpoint, "good-token");
    let key = key_signer();
    let vectors = vectors();
    for v in &vectors {
        let req = request_for(v);
        let via_iam = signed_url(&req, &iam).await.unwrap();
        assert_eq!(via_iam, signed_url(&req, &key).await.unwrap());
        assert_eq!(via_iam, v["expectedUrl"].as_str().unwrap());
    }
    assert!(
        fake.refused.lock().unwrap().is_empty(),
        "{:?}",
        fake.refused.lock().unwrap()
    );
    let signed = fake.signed.lock().unwrap();
    assert_eq!(signed.len(), vectors.len());
    assert_eq!(
        signed[0],
        string_to_sign(&request_for(&vectors[0]), EMAIL).unwrap().into_bytes()
    );
}

#[tokio::test]
async fn iam_refuses_a_wrong_token() {
    let (endpoint, fake) = start_fake_iam(None).await;
    let e = signed_url(&base_request(), &iam_signer(&endpoint, "wrong-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::Iam { status: 401, .. }), "{e:?}");
    assert!(e.to_string().contains("invalid authentication credentials"), "{e}");
    assert!(!e.to_string().contains("wrong-token"), "the token must not appear: {e}");
    assert_eq!(fake.refused.lock().unwrap().len(), 1);
    assert!(fake.signed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn iam_permission_denied_is_a_clear_error() {
    let denied = r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist).","status":"PERMISSION_DENIED"}}"#;
    let (endpoint, _fake) = start_fake_iam(Some((StatusCode::FORBIDDEN, denied))).await;
    let e = signed_url(&base_request(), &iam_signer(&endpoint, "good-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SignError::Iam { status: 403, .. }) && !e.is_transient(),
        "{e:?}"
    );
    let message = e.to_string();
    assert_eq!(
        message,
        format!(
            "IAM signBlob for {EMAIL} was refused with HTTP 403: PERMISSION_DENIED: \
             Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist)."
        )
    );
}

#[tokio::test]
async fn iam_unusable_answers_and_outages() {
    let (endpoint, _fake) = start_fake_iam(Some((StatusCode::OK, r#"{"keyId":"k","signedBlob":"%%%"}"#))).await;
    let e = signed_url(&base_request(), &iam_signer(&endpoint, "good-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::InvalidResponse { .. }), "{e:?}");

    let (endpoint, _fake) = start_fake_iam(Some((StatusCode::SERVICE_UNAVAILABLE, "upstream down"))).await;
    let e = signed_url(&base_request(), &iam_signer(&endpoint, "good-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SignError::Iam { status: 503, .. }) && e.is_transient(),
        "{e:?}"
    );
    assert!(e.to_string().contains("upstream down"), "{e}");

    // Nothing listens on a port we just released.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let e = signed_url(&base_request(), &iam_signer(&format!("http://{closed}"), "good-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::Transport { .. }) && e.is_transient(), "{e:?}");
}

/// A PKCS#1 key (`BEGIN RSA PRIVATE KEY`) signs exactly as the same key in
/// PKCS#8, the form Google issues.
#[test]
fn pkcs1_keys_sign_like_pkcs8() {
    let json: Value = serde_json::from_str(&key_json()).unwrap();
    let pkcs8 = pem::parse(json["private_key"].as_str().unwrap()).unwrap();
    // PrivateKeyInfo of an RSA-2048 key: SEQUENCE(len16) { INTEGER 0,
    // SEQUENCE { rsaEncryption OID, NULL }, OCTET STRING(len16) { RSAPrivateKey } }:
    // the RSAPrivateKey starts after these 26 bytes.
    let der = pkcs8.contents();
    let header = hex::encode(&der[..26]);
    assert!(
        header.starts_with("3082")
            && header[8..].starts_with("020100300d06092a864886f70d0101010500")
            && header[44..].starts_with("0482"),
        "unexpected PKCS#8 layout {header}"
    );
    let pkcs1 = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der[26..].to_vec()));
    let from_pkcs1 = KeySigner::from_pem(EMAIL, &pkcs1).unwrap();
    let message = b"GOOG4-RSA-SHA256\nsome string to sign";
    assert_eq!(
        from_pkcs1.sign_now(message).unwrap(),
        key_signer().sign_now(message).unwrap()
    );
}
