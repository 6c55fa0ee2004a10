//! Browser sessions and logins: cookie attributes, the same answer for an
//! unknown user as for a wrong password, a rate limit per account, and
//! sessions ended by a token or password reset.

use labelport_api::state::LoginLimits;
use labelport_testkit::{backends, TestApp};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

async fn login(app: &TestApp, username: &str, password: &str) -> (StatusCode, Option<String>, Value) {
    let r = app
        .http
        .post(format!("{}/api/auth/login", app.base_url))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cookie, r.json().await.unwrap_or(Value::Null))
}

async fn whoami_with(app: &TestApp, cookie: &str) -> StatusCode {
    app.http
        .get(format!("{}/api/current-user/whoami", app.base_url))
        .header(header::COOKIE, cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn logins_sessions_and_their_limits() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let (s, u) = app
            .post(
                "/api/users",
                json!({"username": "ann", "password": "ann-password", "role": "annotator"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        let ann_token = u["token"].as_str().unwrap().to_owned();

        let (s, cookie, me) = login(&app, "ann", "ann-password").await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(me["role"], "annotator");
        let cookie = cookie.expect("a session cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Max-Age="] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(
            !cookie.contains("Secure"),
            "no Secure flag without an https public URL: {cookie}"
        );
        assert_eq!(whoami_with(&app, &cookie).await, StatusCode::OK);

        // Unknown user and wrong password: the same answer.
        let (s1, _, wrong) = login(&app, "ann", "not-it").await;
        let (s2, _, unknown) = login(&app, "nobody", "not-it").await;
        assert_eq!((s1, s2), (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST));
        assert_eq!(wrong["validation_errors"], unknown["validation_errors"]);

        // A token reset ends the sessions.
        let (s, t) = app
            .call_as(&ann_token, reqwest::Method::POST, "/api/current-user/reset-token", None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        assert_eq!(whoami_with(&app, &cookie).await, StatusCode::UNAUTHORIZED);
        let (s, _) = app
            .call_as(&ann_token, reqwest::Method::GET, "/api/current-user/whoami", None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "the old token is dead");
        // So does a password reset by an admin.
        let (_, cookie, _) = login(&app, "ann", "ann-password").await;
        let cookie = cookie.unwrap();
        let (s, r) = app
            .patch(
                &format!("/api/users/{}", u["id"]),
                json!({"password": "another-password"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(whoami_with(&app, &cookie).await, StatusCode::UNAUTHORIZED);

        // The account's attempts are limited, right password or not.
        let mut limited = false;
        for _ in 0..=LoginLimits::PER_ACCOUNT {
            let (s, _, body) = login(&app, "ann", "wrong-again").await;
            if s == StatusCode::TOO_MANY_REQUESTS {
                assert!(body["detail"].as_str().unwrap().contains("Too many"), "{body}");
                limited = true;
                break;
            }
        }
        assert!(limited, "no limit after {} attempts", LoginLimits::PER_ACCOUNT + 1);
        let (s, _, _) = login(&app, "ann", "another-password").await;
        assert_eq!(
            s,
            StatusCode::TOO_MANY_REQUESTS,
            "the limit holds for the right password too"
        );
        // Other accounts are not held up by it.
        let (s, _, r) = login(&app, "tester@example.com", "test-password").await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }
}

#[tokio::test]
async fn bodies_and_lists_are_bounded() {
    let app = TestApp::spawn(backends()[0]).await;
    // 17 MiB: too much for a project, fine for a bulk import.
    let big = "x".repeat(17 * 1024 * 1024);
    let (s, r) = app
        .post("/api/projects", json!({"title": "p", "description": big}))
        .await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::PAYLOAD_TOO_LARGE,
        "{s} {r}"
    );
    let (s, p) = app.post("/api/projects", json!({"title": "p"})).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_i64().unwrap();
    let tasks: Vec<Value> = (0..3)
        .map(|i| json!({"text": format!("{i}{}", "y".repeat(6 * 1024 * 1024))}))
        .collect();
    let (s, r) = app.post(&format!("/api/projects/{pid}/import"), json!(tasks)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    // Predictions come in pages (a plain list, as Label Studio's).
    let (_, list) = app.get(&format!("/api/tasks?project={pid}")).await;
    let task = list["tasks"][0]["id"].as_i64().unwrap();
    for _ in 0..3 {
        let (s, r) = app.post("/api/predictions", json!({"task": task, "result": []})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
    }
    let (_, page) = app.get(&format!("/api/predictions?task={task}&page_size=2")).await;
    assert_eq!(page.as_array().map(Vec::len), Some(2), "{page}");
    let (_, page) = app
        .get(&format!("/api/predictions?task={task}&page_size=2&page=2"))
        .await;
    assert_eq!(page.as_array().map(Vec::len), Some(1), "{page}");
    let (s, _) = app.get(&format!("/api/predictions?task={task}&page_size=100000")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, users) = app.get("/api/users?page_size=1").await;
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");
    // A page whose offset would overflow is a 400, not a 500.
    for path in [
        format!("/api/tasks?project={pid}&page=9223372036854775807"),
        "/api/projects?page=9223372036854775807".to_string(),
        format!("/api/predictions?task={task}&page=9223372036854775807"),
    ] {
        let (s, r) = app.get(&path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {r}");
    }
    // A login body is small.
    let r = app
        .http
        .post(format!("{}/api/auth/login", app.base_url))
        .json(&json!({"username": "x".repeat(32 * 1024), "password": "p"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}
