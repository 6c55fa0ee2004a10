use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::*;

#[test]
fn credential_sources_read_googles_shapes() {
    let aws = SubjectConfig::from_json(&json!({"environment_id": "aws1", "url": "http://169.254.169.254/x"})).unwrap();
    assert_eq!(aws, SubjectConfig::default());
    let file = SubjectConfig::from_setting(
        r#"{"subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "credential_source": {"file": "/var/run/token", "format": {"type": "json", "subject_token_field_name": "id_token"}}}"#,
    )
    .unwrap();
    assert_eq!(file.token_type, "urn:ietf:params:oauth:token-type:id_token");
    assert_eq!(
        file.source,
        SubjectSource::File {
            path: "/var/run/token".into(),
            format: TokenFormat::Json {
                field: "id_token".into()
            }
        }
    );
    let url = SubjectConfig::from_json(&json!({"url": "http://169.254.169.254/metadata/identity/oauth2/token",
        "headers": {"Metadata": "true"}}))
    .unwrap();
    assert_eq!(url.token_type, JWT_TOKEN_TYPE);
    assert!(matches!(url.source, SubjectSource::Url { ref headers, .. } if headers["Metadata"] == "true"));
    for (bad, says) in [
        (json!({"executable": {"command": "x"}}), "executable"),
        (json!({"environment_id": "azure1"}), "environment_id"),
        (json!({"url": "file:///etc/passwd"}), "http(s)"),
        (
            json!({"file": "/x", "format": {"type": "json"}}),
            "subject_token_field_name",
        ),
        (json!({}), "needs environment_id"),
        (json!("text"), "JSON object"),
    ] {
        let e = SubjectConfig::from_json(&bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(SubjectConfig::from_setting("/nonexistent/labelport.json")
        .unwrap_err()
        .contains("/nonexistent/labelport.json"));
}

fn config(token_url: &str, impersonation: &str, source: Value) -> String {
    json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        "subject_token_type": AWS_TOKEN_TYPE,
        "token_url": token_url,
        "service_account_impersonation_url": impersonation,
        "credential_source": source,
    })
    .to_string()
}

#[test]
fn external_account_configurations_name_only_googles_endpoints() {
    let env = WifEnv::default();
    let iam = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa%40p.iam.gserviceaccount.com:generateAccessToken";
    let ok = ExternalAccount::parse(
        &config(
            "https://sts.googleapis.com/v1/token",
            iam,
            json!({"environment_id": "aws1"}),
        ),
        &env,
        true,
    )
    .unwrap();
    assert_eq!(
        ok.exchange.service_account_email.as_deref(),
        Some("sa@p.iam.gserviceaccount.com")
    );
    assert_eq!(ok.exchange.subject, SubjectConfig::default());
    for (text, says) in [
        (config("https://evil.example/v1/token", iam, json!({"environment_id": "aws1"})), "token_url"),
        (config("https://sts.googleapis.com/v1/token/../x", iam, json!({"environment_id": "aws1"})), "token_url"),
        (
            config(
                "https://sts.googleapis.com/v1/token",
                "https://evil.example/v1/projects/-/serviceAccounts/a@b.c:generateAccessToken",
                json!({"environment_id": "aws1"}),
            ),
            "service_account_impersonation_url",
        ),
        (
            config(
                "https://sts.googleapis.com/v1/token",
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b.c/x:generateAccessToken",
                json!({"environment_id": "aws1"}),
            ),
            "service_account_impersonation_url",
        ),
        (config("https://sts.googleapis.com/v1/token", iam, json!({"file": "/etc/passwd"})), "AWS credential source"),
        (
            config("https://sts.googleapis.com/v1/token", iam, json!({"url": "http://169.254.169.254/"})),
            "AWS credential source",
        ),
        (
            json!({"type": "external_account", "audience": "//iam.googleapis.com/locations/global/workforcePools/w/providers/p"})
                .to_string(),
            "workforce",
        ),
        (json!({"type": "service_account"}).to_string(), "not an external_account"),
    ] {
        let e = ExternalAccount::parse(&text, &env, true).unwrap_err();
        assert!(e.contains(says), "{says}: {e}");
    }
    // The server's own ADC file may use a file source, and the endpoints
    // the server is configured with.
    let env = WifEnv {
        sts_endpoint: "http://127.0.0.1:9999".into(),
        ..WifEnv::default()
    };
    let adc = ExternalAccount::parse(
        &config("http://127.0.0.1:9999/v1/token", iam, json!({"file": "/var/run/token"})),
        &env,
        false,
    )
    .unwrap();
    assert!(matches!(adc.exchange.subject.source, SubjectSource::File { .. }));
}

#[test]
fn tokens_are_renewed_ahead_of_expiry() {
    let now = Instant::now();
    let hour = refresh_at(Duration::from_secs(3600)) - now;
    assert!(
        hour >= Duration::from_secs(3300) && hour < Duration::from_secs(3301),
        "{hour:?}"
    );
    let short = refresh_at(Duration::from_secs(8)) - now;
    assert!(
        short >= Duration::from_secs(6) && short < Duration::from_secs(7),
        "{short:?}"
    );
    assert!(refresh_at(Duration::ZERO) <= Instant::now());
}

#[test]
fn the_aws_subject_token_has_googles_shape_and_binds_the_audience() {
    let credentials = aws_credential_types::Credentials::new("AKID", "secret", Some("session".into()), None, "test");
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let token = aws::signed_get_caller_identity(&credentials, "us-east-1", "//iam.googleapis.com/aud", at).unwrap();
    let value: Value = serde_json::from_str(&token).unwrap();
    assert_eq!(
        value["url"],
        "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
    );
    assert_eq!(value["method"], "POST");
    assert_eq!(value["body"], "");
    let headers: Vec<(String, String)> = value["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap().to_owned(),
                h["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Authorization",
            "host",
            "x-amz-date",
            "x-amz-security-token",
            "x-goog-cloud-target-resource"
        ]
    );
    let auth = &headers[0].1;
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/sts/aws4_request, "),
        "{auth}"
    );
    assert!(auth.contains("x-goog-cloud-target-resource"), "{auth}");
    assert_eq!(headers[2].1, "20231114T221320Z");
    assert_eq!(headers[4].1, "//iam.googleapis.com/aud");
    assert!(!token.contains("secret"), "the secret key never leaves");
}
