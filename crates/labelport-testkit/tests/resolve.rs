//! Media resolution against the emulator: URI rewriting on reads, the
//! resolve endpoints' refusals, the streaming proxy (ranges, ETag/304,
//! content types), and presigned redirects.

use labelport_testkit::{backends, FakeGcs, TestApp};
use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"<View><Image name="image" value="$image"/><HyperText name="html" value="$html"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;

fn b64(uri: &str) -> String {
    labelport_domain::resolve::encode_fileuri(uri)
}

async fn raw_get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{}{path}", app.base_url))
        .header("Authorization", format!("Token {}", app.token));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn rewriting_refusals_and_proxy() {
    let gcs = FakeGcs::start().await.unwrap();
    for backend in backends() {
        let bucket = format!("media-{backend:?}").to_lowercase();
        gcs.create_bucket(&bucket).await.unwrap();
        gcs.create_bucket(&format!("{bucket}-other")).await.unwrap();
        let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        gcs.upload(&bucket, "imgs/a b/ü.jpg", body.clone(), "image/jpeg")
            .await
            .unwrap();
        gcs.upload(
            &bucket,
            "imgs/clip.mp4",
            b"0123456789".to_vec(),
            "application/octet-stream",
        )
        .await
        .unwrap();
        gcs.upload(
            &bucket,
            "imgs/page.html",
            b"<script>alert(document.cookie)</script>".to_vec(),
            "text/html",
        )
        .await
        .unwrap();
        gcs.upload(
            &bucket,
            "imgs/evil.js",
            b"fetch('/api/users', {method: 'POST'})".to_vec(),
            "text/javascript",
        )
        .await
        .unwrap();
        gcs.upload(
            &format!("{bucket}-other"),
            "secret.txt",
            b"secret".to_vec(),
            "text/plain",
        )
        .await
        .unwrap();

        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "m", "label_config": CONFIG}))
            .await;
        let pid = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "prefix": "imgs", "presign": false, "use_blob_urls": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let a_uri = format!("gs://{bucket}/imgs/a b/ü.jpg");
        let other_uri = format!("gs://{bucket}-other/secret.txt");
        let html = format!("<img src=\"{a_uri}\"><img src='gs://{bucket}/imgs/clip.mp4'><img src=\"{other_uri}\">");
        let (_, t) = app
            .post(
                "/api/tasks",
                json!({"project": pid, "data": {"image": a_uri, "html": html, "list": [{"deep": a_uri}, other_uri]}}),
            )
            .await;
        let tid = t["id"].as_i64().unwrap();

        // Reads rewrite every URI of the project's buckets; others stay; the stored data does not change.
        let resolve = |uri: &str| format!("/tasks/{tid}/resolve/?fileuri={}", b64(uri));
        let (_, got) = app.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(got["data"]["image"], resolve(&a_uri));
        assert_eq!(got["data"]["list"][0]["deep"], resolve(&a_uri));
        assert_eq!(got["data"]["list"][1], other_uri.as_str());
        let html_out = got["data"]["html"].as_str().unwrap();
        assert!(
            html_out.contains(&resolve(&a_uri)) && html_out.contains(&resolve(&format!("gs://{bucket}/imgs/clip.mp4"))),
            "{html_out}"
        );
        assert!(html_out.contains(&other_uri), "{html_out}");
        let (_, list) = app.get(&format!("/api/tasks?project={pid}")).await;
        assert_eq!(list["tasks"][0]["data"]["image"], resolve(&a_uri));
        let (s, next) = app.get(&format!("/api/projects/{pid}/next")).await;
        assert_eq!(s, StatusCode::OK, "{next}");
        assert_eq!(
            (next["id"].as_i64(), &next["data"]["image"]),
            (Some(tid), &json!(resolve(&a_uri)))
        );
        assert!(
            app.db().get_task(tid).await.unwrap().data.contains(&a_uri),
            "stored data unchanged"
        );
        let (_, export) = app
            .get(&format!("/api/projects/{pid}/export?download_all_tasks=true"))
            .await;
        assert_eq!(
            export[0]["data"]["image"],
            a_uri.as_str(),
            "exports keep the stored URIs"
        );

        // Proxy: the whole object, with type, length, ETag, Last-Modified, caching headers.
        let url = resolve(&a_uri);
        let r = raw_get(&app, &url, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "image/jpeg");
        assert_eq!(h[header::CONTENT_LENGTH], "100000");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        assert!(h[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .starts_with("private, max-age="));
        assert!(h.contains_key(header::LAST_MODIFIED));
        let etag = h[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
        // The /presign alias and the project route serve the same.
        let r = raw_get(&app, &format!("/tasks/{tid}/presign?fileuri={}", b64(&a_uri)), &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = raw_get(&app, &format!("/projects/{pid}/resolve/?fileuri={}", b64(&a_uri)), &[]).await;
        assert_eq!(r.bytes().await.unwrap().len(), 100_000);

        // Ranges: a-b, a-, -n → 206 with Content-Range; past the end → 416.
        for (range, start, end) in [
            ("bytes=10-19", 10usize, 19usize),
            ("bytes=99990-", 99_990, 99_999),
            ("bytes=-5", 99_995, 99_999),
            ("bytes=99995-200000", 99_995, 99_999),
        ] {
            let r = raw_get(&app, &url, &[("Range", range)]).await;
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(
                r.headers()[header::CONTENT_RANGE].to_str().unwrap(),
                format!("bytes {start}-{end}/100000"),
                "{range}"
            );
            assert_eq!(
                r.headers()[header::CONTENT_LENGTH].to_str().unwrap(),
                (end - start + 1).to_string()
            );
            assert_eq!(r.bytes().await.unwrap().as_ref(), &body[start..=end], "{range}");
        }
        let r = raw_get(&app, &url, &[("Range", "bytes=100000-")]).await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */100000");
        // ETag: If-None-Match → 304 without a body.
        let r = raw_get(&app, &url, &[("If-None-Match", &etag)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(r.bytes().await.unwrap().is_empty());
        let r = raw_get(&app, &url, &[("If-None-Match", "\"other\"")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        // RFC 9110 through the real proxy: a stale If-Range gets the whole
        // object (never a splice of two versions); the current one a range.
        let r = raw_get(&app, &url, &[("Range", "bytes=100-199"), ("If-Range", "\"stale\"")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().len(), 100_000);
        let r = raw_get(&app, &url, &[("Range", "bytes=100-199"), ("If-Range", &etag)]).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[100..200]);
        let r = raw_get(&app, &url, &[("If-Match", "\"stale\"")]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let last_modified = h[header::LAST_MODIFIED].to_str().unwrap().to_owned();
        let r = raw_get(&app, &url, &[("If-Modified-Since", &last_modified)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = raw_get(&app, &url, &[("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")]).await;
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        // octet-stream is replaced by a guess from the extension.
        let r = raw_get(&app, &resolve(&format!("gs://{bucket}/imgs/clip.mp4")), &[]).await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "video/mp4");

        // Refusals: no fileuri 400; unknown task 404; anything not an object of the project's storages 404.
        let r = raw_get(&app, &format!("/tasks/{tid}/resolve/"), &[]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = raw_get(&app, &format!("/tasks/999999/resolve/?fileuri={}", b64(&a_uri)), &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        for uri in [
            other_uri.clone(),
            "file:///etc/passwd".into(),
            "http://169.254.169.254/computeMetadata/v1/".into(),
            format!("{}/storage/v1/b", gcs.endpoint),
            "fileuri".into(),
            format!("gs://{bucket}"),
        ] {
            let r = raw_get(&app, &format!("/tasks/{tid}/resolve/?fileuri={}", b64(&uri)), &[]).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
            let text = r.text().await.unwrap();
            assert!(!text.contains("secret"), "{uri}: {text}");
        }
        let r = raw_get(
            &app,
            &format!("/tasks/{tid}/resolve/?fileuri=gs%3A%2F%2F{bucket}%2Fimgs%2Fclip.mp4"),
            &[],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "percent-encoded URIs are accepted");
        // Without a token: 401.
        let r = app.http.get(format!("{}{url}", app.base_url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // The browser's session cookie works for media (GET) but never for writes.
        let r = app
            .http
            .post(format!("{}/api/auth/login", app.base_url))
            .json(&json!({"username": "tester@example.com", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = app
            .http
            .post(format!("{}/api/auth/login", app.base_url))
            .json(&json!({"email": "tester@example.com", "password": "test-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let set_cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let r = app
            .http
            .get(format!("{}{url}", app.base_url))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().len(), 100_000);
        let r = app
            .http
            .post(format!("{}/api/projects", app.base_url))
            .header("Cookie", &cookie)
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "a cookie without the page's CSRF token never authorises a write"
        );
        let r = app
            .http
            .post(format!("{}/api/auth/logout", app.base_url))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = app
            .http
            .get(format!("{}{url}", app.base_url))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "logged out");
        // A task's resolve URL serves only URIs of that task's data, even
        // of the same bucket (task-level check, nothing fetched).
        let page_uri = format!("gs://{bucket}/imgs/page.html");
        let r = raw_get(&app, &resolve(&page_uri), &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "not in the task's data");
        // The project route keeps Label Studio's bucket-level rule. Media
        // cannot attack the app: never sniffed, sandboxed, and a type that
        // runs script is a download, not a page on our origin.
        let r = raw_get(
            &app,
            &format!("/projects/{pid}/resolve/?fileuri={}", b64(&page_uri)),
            &[],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.starts_with("sandbox"), "{csp}");
        assert_eq!(r.headers()[header::CONTENT_DISPOSITION], "attachment");
        // A bucket object is never a script of the app's pages (their CSP
        // allows scripts of this origin): asked for as a script it is
        // refused; otherwise script is sent as plain text (with nosniff).
        let script = format!(
            "/projects/{pid}/resolve/?fileuri={}",
            b64(&format!("gs://{bucket}/imgs/evil.js"))
        );
        for dest in ["script", "worker", "style"] {
            let r = raw_get(&app, &script, &[("Sec-Fetch-Dest", dest)]).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{dest}");
        }
        let r = raw_get(&app, &script, &[("Sec-Fetch-Dest", "document")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let r = raw_get(&app, &url, &[("Sec-Fetch-Dest", "image")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = raw_get(&app, &url, &[]).await;
        assert!(
            r.headers().get(header::CONTENT_DISPOSITION).is_none(),
            "images stay inline"
        );
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        // A missing object is the storage's failure: 424 in Label Studio's shape.
        let gone = format!("gs://{bucket}/imgs/gone.jpg");
        let r = raw_get(&app, &format!("/projects/{pid}/resolve/?fileuri={}", b64(&gone)), &[]).await;
        assert_eq!(r.status(), StatusCode::FAILED_DEPENDENCY);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "Storage stream failed while proxying data");
        app.stop().await;
    }
}

fn test_service_account() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance/test_service_account.not-a-test.json"
    );
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (shared/ must sit beside the repository)"))
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn presign_redirects_to_an_exact_v4_signed_url_the_emulator_serves() {
    use labelport_storage::signing::{signed_url, KeySigner, SignedUrlRequest};

    let gcs = FakeGcs::start().await.unwrap();
    let key_json = test_service_account();
    for backend in backends() {
        let bucket = format!("signed-{backend:?}").to_lowercase();
        gcs.create_bucket(&bucket).await.unwrap();
        gcs.upload(&bucket, "v/clip one.mp4", b"video bytes".to_vec(), "video/mp4")
            .await
            .unwrap();
        let app = TestApp::spawn_with_gcs(backend, &gcs, 1).await;
        let (_, p) = app
            .post("/api/projects", json!({"title": "s", "label_config": CONFIG}))
            .await;
        let pid = p["id"].as_i64().unwrap();
        let (s, st) = app
            .post(
                "/api/storages/gcs",
                json!({"project": pid, "bucket": bucket, "presign": true, "presign_ttl": 15,
                "google_application_credentials": key_json}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{st}");
        let uri = format!("gs://{bucket}/v/clip one.mp4");
        let (_, t) = app
            .post("/api/tasks", json!({"project": pid, "data": {"image": uri}}))
            .await;
        let tid = t["id"].as_i64().unwrap();

        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_redirect
            .get(format!("{}/tasks/{tid}/resolve/?fileuri={}", app.base_url, b64(&uri)))
            .header("Authorization", format!("Token {}", app.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store, max-age=900");
        let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!(
                "{}/{bucket}/v/clip%20one.mp4?X-Goog-Algorithm=GOOG4-RSA-SHA256",
                gcs.endpoint
            )),
            "{location}"
        );
        assert_eq!(query_param(&location, "X-Goog-Expires"), "900");
        // The same request signed independently with the key gives the same URL, byte for byte.
        let date = query_param(&location, "X-Goog-Date");
        let at = chrono::NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        let mut req = SignedUrlRequest::new("GET", &bucket, "v/clip one.mp4", 900, at);
        req.host = Some(gcs.endpoint.clone());
        let expected = signed_url(&req, &KeySigner::from_service_account_json(&key_json).unwrap())
            .await
            .unwrap();
        assert_eq!(location, expected);
        // The emulator serves it.
        let body = reqwest::get(&location).await.unwrap();
        assert_eq!(body.status(), StatusCode::OK);
        assert_eq!(body.bytes().await.unwrap().as_ref(), b"video bytes");
        // Refusals happen before signing.
        let r = raw_get(
            &app,
            &format!("/tasks/{tid}/resolve/?fileuri={}", b64("gs://elsewhere/x.jpg")),
            &[],
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_upstream_read() {
    use futures::StreamExt;

    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("big").await.unwrap();
    const MIB: usize = 1024 * 1024;
    gcs.upload("big", "large.bin", vec![1u8; 256 * MIB], "application/octet-stream")
        .await
        .unwrap();
    let app = TestApp::spawn_with_gcs(labelport_testkit::Backend::Sqlite, &gcs, 0).await;
    let (_, p) = app
        .post("/api/projects", json!({"title": "b", "label_config": CONFIG}))
        .await;
    let pid = p["id"].as_i64().unwrap();
    let (s, _) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "big", "presign": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let url = format!("/projects/{pid}/resolve/?fileuri={}", b64("gs://big/large.bin"));

    let before = gcs.bytes_written();
    let r = raw_get(&app, &url, &[]).await;
    assert_eq!(r.headers()[header::CONTENT_LENGTH], (256 * MIB).to_string());
    let mut stream = r.bytes_stream();
    let mut got = 0;
    while got < 2 * MIB {
        got += stream.next().await.unwrap().unwrap().len();
    }
    drop(stream); // the browser goes away after 2 MiB
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let sent = gcs.bytes_written() - before;
    assert!(
        sent < 64 * MIB as u64,
        "the emulator sent {} MiB of 256 after the client left",
        sent / MIB as u64
    );
    // The whole object still streams for a client that stays.
    let r = raw_get(&app, &url, &[]).await;
    let mut total = 0;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, 256 * MIB);
    app.stop().await;
}

/// HEAD (a player probing size and range support) answers the headers a
/// GET would, with no body, and downloads nothing from the bucket.
#[tokio::test]
async fn head_requests_download_nothing() {
    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("heads").await.unwrap();
    gcs.upload("heads", "clip.mp4", vec![3u8; 300_000], "video/mp4")
        .await
        .unwrap();
    let upstream = labelport_testkit::FaultProxy::start(&gcs.endpoint).await.unwrap();
    let app = TestApp::spawn_with_gcs_endpoint(labelport_testkit::Backend::Sqlite, &upstream.endpoint, 0).await;
    let (_, p) = app
        .post("/api/projects", json!({"title": "h", "label_config": CONFIG}))
        .await;
    let pid = p["id"].as_i64().unwrap();
    let (s, _) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "heads", "presign": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let url = format!(
        "{}/projects/{pid}/resolve/?fileuri={}",
        app.base_url,
        b64("gs://heads/clip.mp4")
    );
    let head = |range: Option<&'static str>| {
        let mut req = app
            .http
            .head(&url)
            .header("Authorization", format!("Token {}", app.token));
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.send()
    };
    let r = head(None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "300000");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "video/mp4");
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    assert!(r.headers().contains_key(header::ETAG));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = head(Some("bytes=100-199")).await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "100");
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 100-199/300000");
    assert_eq!(upstream.downloads(), 0, "HEAD downloaded the object");

    // A GET downloads it, once.
    let r = raw_get(
        &app,
        &format!("/projects/{pid}/resolve/?fileuri={}", b64("gs://heads/clip.mp4")),
        &[],
    )
    .await;
    assert_eq!(r.bytes().await.unwrap().len(), 300_000);
    assert_eq!(upstream.downloads(), 1);
    app.stop().await;
}

/// With a media origin, task media are served from another host name with
/// signed URLs, and that host serves nothing else.
#[tokio::test]
async fn media_origin_serves_signed_task_media_only() {
    let gcs = FakeGcs::start().await.expect("fake-gcs-server");
    gcs.create_bucket("origin").await.unwrap();
    gcs.upload("origin", "a.jpg", b"jpeg-bytes".to_vec(), "image/jpeg")
        .await
        .unwrap();
    gcs.upload("origin", "b.jpg", b"other".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let app = TestApp::spawn_with_media_origin(backends()[0], &gcs).await;
    let (_, p) = app
        .post("/api/projects", json!({"title": "m", "label_config": CONFIG}))
        .await;
    let pid = p["id"].as_i64().unwrap();
    let (s, st) = app
        .post(
            "/api/storages/gcs",
            json!({"project": pid, "bucket": "origin", "presign": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    let (_, t) = app
        .post(
            "/api/tasks",
            json!({"project": pid, "data": {"image": "gs://origin/a.jpg"}}),
        )
        .await;
    let tid = t["id"].as_i64().unwrap();
    let (_, got) = app.get(&format!("/api/tasks/{tid}")).await;
    let url = got["data"]["image"].as_str().unwrap().to_owned();
    let port = app.base_url.rsplit(':').next().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("http://localhost:{port}/tasks/{tid}/resolve/?fileuri=")),
        "{url}"
    );
    assert!(url.contains("&exp=") && url.contains("&sig="), "{url}");
    // No cookie, no token: the signature is the credential.
    let anon = reqwest::Client::new();
    let r = anon.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"jpeg-bytes");
    // Another object, another task, a changed signature: refused.
    let other = url.replace(&b64("gs://origin/a.jpg"), &b64("gs://origin/b.jpg"));
    assert_eq!(anon.get(&other).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let bad = format!("{}x", url);
    assert_eq!(anon.get(&bad).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    // The media host serves nothing but media, even with a token.
    let r = anon
        .get(format!("http://localhost:{port}/api/projects/{pid}"))
        .header("Authorization", format!("Token {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The app's host still needs credentials for the same path.
    let path = url.trim_start_matches(&format!("http://localhost:{port}"));
    let r = anon.get(format!("{}{path}", app.base_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
