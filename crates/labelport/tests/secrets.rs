//! Secrets at rest and in logs, through the real binary: a pasted
//! service-account key is used (create, sync, Test connection, export),
//! then the SQLite files and a trace-level log are searched for any piece
//! of it; plaintext rows of an older version are sealed by `migrate`; a key
//! change with `secrets rotate` keeps every credential readable.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labelport_testkit::{private_key_piece, test_service_account_key, FakeGcs};
use serde_json::{json, Value};

const TOKEN: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labelport"))
}

fn serve(data: &Path, port: u16, gcs: &FakeGcs, log: &Path, key: Option<(&str, &str)>) -> Child {
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--port",
        &port.to_string(),
        "--username",
        "admin",
        "--password",
        "pw-pw-pw-pw",
    ])
    .args(["--user-token", TOKEN, "--workers", "1", "--data-dir"])
    .arg(data)
    .env("STORAGE_EMULATOR_HOST", &gcs.endpoint)
    .env("LABELPORT_LOG", "trace")
    .env_remove("DATABASE_URL")
    .env_remove("LABELPORT_SECRET_KEY")
    .env_remove("LABELPORT_OLD_SECRET_KEYS")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap());
    if let Some((current, old)) = key {
        cmd.env("LABELPORT_SECRET_KEY", current)
            .env("LABELPORT_OLD_SECRET_KEYS", old);
    }
    cmd.spawn().expect("server starts")
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = http
        .request(method, url)
        .header("Authorization", format!("Token {TOKEN}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    let started = Instant::now();
    while !http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(started.elapsed() < Duration::from_secs(30), "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every byte of the database files (main file and write-ahead log).
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["labelport.db", "labelport.db-wal", "labelport.db-shm"] {
        if let Ok(bytes) = std::fs::read(data.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

/// The `credentials` column of import storage `id`, as stored.
async fn stored_credentials(data: &Path, id: i64) -> String {
    let db = labelport_db::Db::connect(&format!("sqlite://{}", data.join("labelport.db").display()))
        .await
        .unwrap();
    let labelport_db::Pool::Sqlite { write, .. } = &db.pool else {
        unreachable!("a SQLite data directory")
    };
    let value: String =
        labelport_db::sqlx_reexport::query_scalar("SELECT credentials FROM import_storages WHERE id = $1")
            .bind(id)
            .fetch_one(write)
            .await
            .unwrap();
    db.close().await;
    value
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn keys_are_sealed_at_rest_never_logged_and_survive_a_key_change() {
    let gcs = FakeGcs::start().await.unwrap();
    gcs.create_bucket("sealed").await.unwrap();
    gcs.upload("sealed", "imgs/a.jpg", b"a".to_vec(), "image/jpeg")
        .await
        .unwrap();
    let key = test_service_account_key();
    let piece = private_key_piece(&key);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let server = serve(&data, port, &gcs, &log, None);
    wait_up(&http, &base).await;

    // The key file: made at first start, readable by its owner only.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(data.join("secret.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "secret.key mode {mode:o}");

    let post = reqwest::Method::POST;
    let (s, p) = call(
        &http,
        post.clone(),
        format!("{base}/api/projects"),
        Some(json!({"title": "s"})),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_i64().unwrap();
    let body = json!({"project": pid, "bucket": "sealed", "prefix": "imgs", "use_blob_urls": true,
                      "google_application_credentials": key});
    let (s, st) = call(
        &http,
        post.clone(),
        format!("{base}/api/storages/gcs"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 201, "{st}");
    let sid = st["id"].as_i64().unwrap();
    let (s, _) = call(&http, post.clone(), format!("{base}/api/storages/gcs/{sid}/sync"), None).await;
    assert_eq!(s, 200);
    let started = Instant::now();
    loop {
        let (_, st) = call(
            &http,
            reqwest::Method::GET,
            format!("{base}/api/storages/gcs/{sid}"),
            None,
        )
        .await;
        if st["status"] == "completed" {
            assert_eq!(st["last_sync_count"], 1, "{st}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sync did not complete: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A failed Test connection with the key, and a target storage with it.
    let mut wrong = body.clone();
    wrong["bucket"] = "no-such-bucket".into();
    let (s, e) = call(
        &http,
        post.clone(),
        format!("{base}/api/storages/gcs/validate"),
        Some(wrong),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, ex) = call(
        &http,
        post.clone(),
        format!("{base}/api/storages/export/gcs"),
        Some(json!({"project": pid, "bucket": "sealed", "prefix": "out", "google_application_credentials": key})),
    )
    .await;
    assert_eq!(s, 201, "{ex}");
    stop(server);

    let bytes = database_bytes(&data);
    assert!(!bytes.is_empty());
    assert!(!contains(&bytes, &piece), "key material in the SQLite files");
    assert!(!contains(&bytes, "PRIVATE KEY"), "a PEM header in the SQLite files");
    assert!(contains(&bytes, "lp1:"), "sealed values are there");
    assert!(
        stored_credentials(&data, sid).await.starts_with("lp1:"),
        "the import storage's key is sealed"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "the log is at trace level"
    );
    assert!(!log_text.contains(&piece), "key material in the trace log");
    assert!(!log_text.contains("PRIVATE KEY"), "a PEM header in the trace log");

    // A row from before sealing existed is sealed by `migrate`.
    {
        let db = labelport_db::Db::connect(&format!("sqlite://{}", data.join("labelport.db").display()))
            .await
            .unwrap();
        if let labelport_db::Pool::Sqlite { write, .. } = &db.pool {
            labelport_db::sqlx_reexport::query("UPDATE import_storages SET credentials = $1 WHERE id = $2")
                .bind(&key)
                .bind(sid)
                .execute(write)
                .await
                .unwrap();
        }
        db.close().await;
    }
    // Read back through SQL, not by searching the files: in CI (stop 24)
    // a byte search of the files just after the pool closed once missed
    // this row, which the row's size (about 3 KB, one page) does not
    // explain; the value in the database is what this step depends on.
    assert_eq!(
        stored_credentials(&data, sid).await,
        key,
        "the plaintext row is written"
    );
    let out = bin()
        .args(["migrate", "--data-dir"])
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env_remove("LABELPORT_SECRET_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Checkpoint the write-ahead log so the old page is gone from the files.
    {
        let db = labelport_db::Db::connect(&format!("sqlite://{}", data.join("labelport.db").display()))
            .await
            .unwrap();
        if let labelport_db::Pool::Sqlite { write, .. } = &db.pool {
            labelport_db::sqlx_reexport::query("VACUUM")
                .execute(write)
                .await
                .unwrap();
            labelport_db::sqlx_reexport::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(write)
                .await
                .unwrap();
        }
        db.close().await;
    }
    let sealed = stored_credentials(&data, sid).await;
    assert!(
        sealed.starts_with("lp1:") && !sealed.contains(&piece),
        "migrate sealed the plaintext row: {}",
        &sealed[..sealed.len().min(12)]
    );
    assert!(
        !contains(&database_bytes(&data), &piece),
        "no copy of the plaintext row is left in the files"
    );

    // A key change: the new key current, the file's key old; rotate; the
    // server then runs on the new key alone and every credential still works.
    let old_key = std::fs::read_to_string(data.join("secret.key")).unwrap();
    let new_key = String::from_utf8(bin().args(["secrets", "new-key"]).output().unwrap().stdout).unwrap();
    let new_key = new_key.trim();
    // A process restarted with both keys (step 2 of a key change) leaves
    // values under the old key alone: the others still read them.
    let out = bin()
        .args(["migrate", "--data-dir"])
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env("LABELPORT_SECRET_KEY", new_key)
        .env("LABELPORT_OLD_SECRET_KEYS", old_key.trim())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin()
        .args(["secrets", "rotate", "--data-dir"])
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env("LABELPORT_SECRET_KEY", new_key)
        .env("LABELPORT_OLD_SECRET_KEYS", old_key.trim())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("2 credentials re-sealed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = serve(&data, port, &gcs, &log, Some((new_key, "")));
    wait_up(&http, &base).await;
    let (s, _) = call(
        &http,
        post.clone(),
        format!("{base}/api/storages/gcs/validate"),
        Some(json!({"id": sid})),
    )
    .await;
    assert_eq!(s, 200, "the stored key opens under the new key alone");
    stop(server);
    // Without the key that sealed them, credentials do not open: the
    // server refuses to start and says why, instead of running half-blind.
    let other = String::from_utf8(bin().args(["secrets", "new-key"]).output().unwrap().stdout).unwrap();
    let mut server = serve(&data, free_port(), &gcs, &log, Some((other.trim(), "")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server started with a wrong key"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("which this server does not have"),
        "the log says why: {log_text}"
    );
}

#[test]
fn the_cli_keeps_roles_unless_told_and_never_demotes_the_last_admin() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        bin()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("LABELPORT_SECRET_KEY")
            .env("LABELPORT_PASSWORD", "a-password")
            .output()
            .unwrap()
    };
    assert!(run(&["user", "create", "--username", "boss", "--role", "admin"])
        .status
        .success());
    assert!(run(&["user", "create", "--username", "ann"]).status.success());
    // A password reset without --role keeps the role.
    assert!(run(&["user", "create", "--username", "boss"]).status.success());
    let list = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    assert!(list.lines().any(|l| l.contains("\tboss\tadmin\t")), "{list}");
    assert!(list.lines().any(|l| l.contains("\tann\tannotator\t")), "{list}");
    // The only admin cannot become an annotator.
    let out = run(&["user", "create", "--username", "boss", "--role", "annotator"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key file others can read is refused.
    std::fs::set_permissions(
        dir.path().join("secret.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = run(&["user", "list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
