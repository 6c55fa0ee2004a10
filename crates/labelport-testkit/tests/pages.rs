//! The web pages' access rules, walked for every page route
//! (`labelport_web::ROUTES`) and every kind of caller; writes made with the
//! session cookie and the CSRF token; the editor's files; task file
//! uploads. (What the pages do in a browser: `tests/e2e/test_web_ui.py`.)

use labelport_api::access::Need;
use labelport_domain::access::Role;
use labelport_testkit::{backends, TestApp};
use labelport_web::{rule, ROUTES};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

const CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;

#[test]
fn every_page_has_an_access_rule() {
    for route in ROUTES {
        assert!(rule(&Method::GET, route).is_some(), "page {route} has no access rule");
        // Pages are read-only: every write goes through the API.
        assert!(rule(&Method::POST, route).is_none(), "page {route} takes a POST");
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn concrete(route: &str, project: i64) -> String {
    route
        .replace("{id}", &project.to_string())
        .replace("{version}", labelport_web::assets::EDITOR_VERSION)
        .replace(
            "{file}",
            if route.starts_with("/static/lsf") {
                "main.css"
            } else {
                "app.css"
            },
        )
}

#[tokio::test]
async fn no_page_shows_more_than_its_role_and_membership_allow() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let mut callers = Vec::new();
        let (s, p) = app
            .post("/api/projects", json!({"title": "pages", "label_config": CONFIG}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let project = p["id"].as_i64().unwrap();
        for (name, role, member) in [
            ("mm", Role::Manager, true),
            ("am", Role::Annotator, true),
            ("mx", Role::Manager, false),
            ("ax", Role::Annotator, false),
        ] {
            let (s, u) = app
                .post("/api/users", json!({"username": name, "role": role.as_str()}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{u}");
            if member {
                let (s, r) = app
                    .post(&format!("/api/projects/{project}/members"), json!({"user": u["id"]}))
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{r}");
            }
            callers.push((name, u["token"].as_str().unwrap().to_owned(), role, member));
        }
        callers.push(("admin", app.token.clone(), Role::Admin, false));
        let (s, t) = app
            .post(
                "/api/tasks",
                json!({"project": project, "data": {"image": "https://example.invalid/a.png"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let http = no_redirects();
        let mut checked = 0;
        for route in ROUTES {
            let need = rule(&Method::GET, route).unwrap();
            let path = concrete(route, project);
            let url = format!("{}{path}", app.base_url);
            // Without a session: public pages answer, the others send the
            // browser to sign in and come back.
            let r = http.get(&url).send().await.unwrap();
            match need {
                Need::Public => assert!(
                    r.status() == StatusCode::OK || r.status() == StatusCode::SEE_OTHER,
                    "{path}: {}",
                    r.status()
                ),
                _ => {
                    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path} without a session");
                    let location = r.headers()[header::LOCATION].to_str().unwrap();
                    assert!(location.starts_with("/user/login?next=%2F"), "{path}: {location}");
                }
            }
            for (who, token, role, member) in &callers {
                let (min, scoped) = match need {
                    Need::Public => continue,
                    Need::Role(min) => (min, false),
                    Need::Project(_, min) => (min, true),
                    Need::PubSubPush => unreachable!("no page takes push requests"),
                };
                let visible = !scoped || *member || *role == Role::Admin;
                let r = http
                    .get(&url)
                    .header(header::AUTHORIZATION, format!("Token {token}"))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let location = r
                    .headers()
                    .get(header::LOCATION)
                    .map(|l| l.to_str().unwrap().to_owned());
                let body = r.text().await.unwrap();
                checked += 1;
                if !visible {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{who}: {path} is hidden");
                } else if *role < min {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {path}");
                    assert!(body.contains("Not allowed"), "{who}: {path}: an HTML page says why");
                } else if *route == "/projects/{id}" {
                    // The project opens on its data manager.
                    assert_eq!(status, StatusCode::SEE_OTHER, "{who}: {path}");
                    assert_eq!(location.as_deref(), Some(format!("/projects/{project}/data").as_str()));
                } else {
                    assert_eq!(status, StatusCode::OK, "{who}: {path} should be shown");
                }
                // No page shows the caller's API token.
                assert!(!body.contains(token.as_str()), "{who}: {path} shows the API token");
            }
        }
        assert!(checked >= 30, "only {checked} page calls were checked");
        // Hand-edited URLs: a cursor that is not an id shows the first
        // page; a task that is not an id, or of another project, is a 404 page.
        let (s, other) = app.post("/api/projects", json!({"title": "other"})).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, ot) = app
            .post("/api/tasks", json!({"project": other["id"], "data": {"text": "x"}}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        for (path, status) in [
            (
                format!("/projects/{project}/data?after=abc&before=&filter=nonsense"),
                StatusCode::OK,
            ),
            (format!("/projects/{project}/label?task=abc"), StatusCode::NOT_FOUND),
            (
                format!("/projects/{project}/label?task={}", ot["id"]),
                StatusCode::NOT_FOUND,
            ),
            (format!("/projects/{project}/label?task={}", t["id"]), StatusCode::OK),
            ("/projects/999999/data".to_owned(), StatusCode::NOT_FOUND),
        ] {
            let r = http
                .get(format!("{}{path}", app.base_url))
                .header(header::AUTHORIZATION, format!("Token {}", app.token))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{path}");
            assert!(
                r.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{path}"
            );
        }
        app.stop().await;
    }
}

async fn login(app: &TestApp) -> String {
    let r = app
        .http
        .post(format!("{}/api/auth/login", app.base_url))
        .json(&json!({"username": "tester@example.com", "password": "test-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

#[tokio::test]
async fn session_writes_need_the_pages_csrf_token() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let session = login(&app).await;
        let cookie = format!("labelport_session={session}");
        let expected = labelport_api::extract::csrf_token(&session);
        // The page carries the token.
        let page = app
            .http
            .get(format!("{}/projects", app.base_url))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        let html = page.text().await.unwrap();
        assert!(html.contains(&format!(r#"<meta name="csrf-token" content="{expected}">"#)));
        assert!(!html.contains(&session), "the page shows the session token");
        let post = |csrf: Option<String>| {
            let mut req = app
                .http
                .post(format!("{}/api/projects", app.base_url))
                .header(header::COOKIE, &cookie)
                .json(&json!({"title": "by cookie"}));
            if let Some(t) = csrf {
                req = req.header("X-CSRFToken", t);
            }
            req.send()
        };
        // The cookie alone, or with a wrong token, writes nothing: 403 says why.
        let refused = post(None).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.text().await.unwrap().contains("CSRF Failed"));
        assert_eq!(
            post(Some("0".repeat(64))).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let other = labelport_api::extract::csrf_token("another session");
        assert_eq!(post(Some(other)).await.unwrap().status(), StatusCode::FORBIDDEN);
        let (_, list) = app.get("/api/projects").await;
        assert_eq!(list["count"], 0, "{list}");
        // With the session's token it is the user's write.
        let r = post(Some(expected.clone())).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let (_, list) = app.get("/api/projects").await;
        assert_eq!(list["count"], 1, "{list}");
        // After sign-out the token is worth nothing.
        let r = app
            .http
            .post(format!("{}/api/auth/logout", app.base_url))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(post(Some(expected)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_editor_is_served_compressed_and_cached() {
    let app = TestApp::spawn(labelport_testkit::Backend::Sqlite).await;
    let url = format!("{}/static/lsf/1.4.0/main.js", app.base_url);
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = raw
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        r.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let gz = r.bytes().await.unwrap();
    assert!(gz.len() < 700_000, "{}", gz.len());
    let r = raw
        .get(&url)
        .header(header::ACCEPT_ENCODING, "identity")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    // The npm tarball's build/static/js/main.js, byte for byte in size.
    assert_eq!(r.bytes().await.unwrap().len(), 2_035_212);
    for missing in [
        "/static/lsf/1.8.0/main.js",
        "/static/lsf/1.4.0/other.js",
        "/static/nothing.js",
    ] {
        let r = raw.get(format!("{}{missing}", app.base_url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
    }
    let r = raw
        .get(format!("{}/static/lsf/1.4.0/LICENSE", app.base_url))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Apache License"));
    app.stop().await;
}

async fn upload(app: &TestApp, project: i64, files: &[(&str, &[u8])]) -> (StatusCode, Value) {
    // multipart/form-data as a browser's FormData sends it (RFC 7578).
    let boundary = "----labelport-test-boundary";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = app
        .http
        .post(format!("{}/api/projects/{project}/import", app.base_url))
        .header(header::AUTHORIZATION, format!("Token {}", app.token))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn task_number(app: &TestApp, project: i64) -> i64 {
    app.get(&format!("/api/projects/{project}")).await.1["task_number"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn task_files_upload_whole_or_not_at_all() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "upload", "label_config": CONFIG}))
            .await;
        let project = p["id"].as_i64().unwrap();
        // Each refusal names the file (and line); nothing is imported.
        for (files, expected) in [
            (vec![("a.txt", &b"x"[..])], "a.txt: unsupported file type"),
            (
                vec![
                    ("ok.json", &b"[{\"image\": \"x\"}]"[..]),
                    ("b.jsonl", &b"{\"image\": \"y\"}\n{\"nope\": 1}\n"[..]),
                ],
                "b.jsonl:line 2",
            ),
            (
                vec![("c.jsonl", &b"{\"image\": \"y\"}\nnot json\n"[..])],
                "c.jsonl:line 2: JSON parse error",
            ),
            (vec![("d.csv", &b"image,other\nx,1\ny\n"[..])], "d.csv"),
            (vec![("e.json", &b"{\"image\": "[..])], "e.json: JSON parse error"),
            (vec![("f.csv", &b"other\n1\n"[..])], "f.csv:line 2"),
        ] {
            let (s, body) = upload(&app, project, &files).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{files:?}: {body}");
            assert!(body.to_string().contains(expected), "{expected}: {body}");
            assert_eq!(task_number(&app, project).await, 0);
        }
        let (s, body) = upload(
            &app,
            project,
            &[
                ("a.json", b"[{\"image\": \"j1\"}, {\"data\": {\"image\": \"j2\"}}]"),
                ("b.JSONL", b"{\"image\": \"l1\"}\r\n\n{\"image\": \"l2\"}\n"),
                ("c.csv", b"image,n\n\"c,1\",1\nc2,2\n"),
                ("d.tsv", b"image\tn\nt1\t1\n"),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        assert_eq!(body["task_count"], 7, "{body}");
        let (_, tasks) = app.get(&format!("/api/projects/{project}/tasks?page_size=20")).await;
        let mut images: Vec<&str> = tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["data"]["image"].as_str().unwrap())
            .collect();
        images.sort();
        assert_eq!(images, ["c,1", "c2", "j1", "j2", "l1", "l2", "t1"]);
        app.stop().await;
    }
}

/// Walks every page forward, then back from the end, and checks each page
/// against the expected slice of ids.
async fn walk(db: &labelport_db::Db, project: i64, ids: &[i64], descending: bool, labeled: Option<bool>) {
    use labelport_db::TaskCursor;
    const SIZE: usize = 5;
    let expected: Vec<i64> = if descending {
        ids.iter().rev().copied().collect()
    } else {
        ids.to_vec()
    };
    let mut seen: Vec<i64> = Vec::new();
    let mut cursor = TaskCursor::Start;
    loop {
        let page = db
            .task_keyset(project, cursor, descending, labeled, SIZE as i64)
            .await
            .unwrap();
        let page: Vec<i64> = page.iter().map(|t| t.id).collect();
        assert_eq!(
            page,
            expected[seen.len()..(seen.len() + SIZE).min(expected.len())],
            "{descending} {labeled:?}"
        );
        seen.extend(&page);
        match page.last() {
            Some(last) if page.len() == SIZE => cursor = TaskCursor::After(*last),
            _ => break,
        }
    }
    assert_eq!(seen, expected);
    // Backwards from past the end: the same pages, reversed.
    let mut back: Vec<i64> = Vec::new();
    let mut before = if descending { i64::MIN } else { i64::MAX };
    loop {
        let page = db
            .task_keyset(project, TaskCursor::Before(before), descending, labeled, SIZE as i64)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let ids: Vec<i64> = page.iter().map(|t| t.id).collect();
        // Each page is in display order.
        let mut sorted = ids.clone();
        sorted.sort();
        if descending {
            sorted.reverse();
        }
        assert_eq!(ids, sorted);
        before = ids[0];
        back.splice(0..0, ids);
    }
    assert_eq!(back, expected, "backwards {descending} {labeled:?}");
}

#[tokio::test]
async fn keyset_pages_cover_every_task_once_in_both_orders_and_filters() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "keyset", "label_config": CONFIG}))
            .await;
        let project = p["id"].as_i64().unwrap();
        // Another project's tasks sit between ours and must never show.
        let (_, other) = app.post("/api/projects", json!({"title": "other"})).await;
        let mut body = Vec::new();
        for i in 0..23 {
            let mut task = json!({"data": {"image": format!("img{i}")}});
            if i % 4 == 0 {
                task["annotations"] = json!([{"result": []}]);
            }
            body.push(task);
        }
        let (s, _) = app
            .post(
                &format!("/api/projects/{project}/import"),
                Value::Array(body[..10].to_vec()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = app
            .post(
                &format!("/api/projects/{}/import", other["id"]),
                json!([{"image": "x"}, {"image": "y"}]),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = app
            .post(
                &format!("/api/projects/{project}/import"),
                Value::Array(body[10..].to_vec()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, tasks) = app.get(&format!("/api/projects/{project}/tasks?page_size=100")).await;
        let tasks = tasks.as_array().unwrap();
        let all: Vec<i64> = tasks.iter().map(|t| t["id"].as_i64().unwrap()).collect();
        let labeled: Vec<i64> = tasks
            .iter()
            .filter(|t| t["is_labeled"] == true)
            .map(|t| t["id"].as_i64().unwrap())
            .collect();
        let unlabeled: Vec<i64> = all.iter().filter(|id| !labeled.contains(id)).copied().collect();
        assert_eq!((all.len(), labeled.len()), (23, 6));
        for descending in [false, true] {
            walk(app.db(), project, &all, descending, None).await;
            walk(app.db(), project, &labeled, descending, Some(true)).await;
            walk(app.db(), project, &unlabeled, descending, Some(false)).await;
        }
        app.stop().await;
    }
}
