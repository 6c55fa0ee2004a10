//! `labelport-bench media`: media resolution speed against the GCS
//! emulator. Prints figures; asserts nothing.
//! - resolve (proxy) latency of a small object vs a direct emulator GET;
//! - proxy throughput of a large object vs a direct download, peak RSS;
//! - V4 signed URLs per second (local key), and presign redirects per second.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use labelport_api::AppState;
use labelport_storage::signing::{signed_url, KeySigner, SignedUrlRequest};
use labelport_testkit::FakeGcs;

use crate::setup;
use crate::stats::{pct, peak_rss_mb};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct BenchMediaArgs {
    /// Size of the large object in MiB.
    #[arg(long, default_value_t = 256)]
    large_mib: usize,
    /// Requests for the latency figures.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// A service-account key file to sign with (default: Google's test key
    /// in testdata/conformance).
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // `rest` starts at field 3, so utime (14) and stime (15) are 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// A plain TCP relay in front of the emulator: bytes copied through user
/// space with 1 MiB buffers, no HTTP. Downloads through it show what any
/// copying proxy can reach on this machine, the ceiling for the proxy's
/// figure when emulator, server and client share the cores.
async fn start_relay(upstream: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = client.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, 1 << 20, 1 << 20).await;
                }
            });
        }
    });
    Ok(addr)
}

async fn timed_get(http: &reqwest::Client, url: &str, auth: Option<&str>) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut req = http.get(url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await?.error_for_status()?;
    let mut stream = resp.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk?.len() as u64;
    }
    Ok((started.elapsed(), n))
}

pub async fn run(args: BenchMediaArgs) -> anyhow::Result<()> {
    let gcs = FakeGcs::start()
        .await
        .context("starting fake-gcs-server (set FAKE_GCS_SERVER_BIN or run ./scripts/test once)")?;
    gcs.create_bucket("media").await?;
    gcs.upload("media", "small.jpg", vec![7u8; 2048], "image/jpeg").await?;
    // Uploaded as a stream of 1 MiB chunks so this process never holds it:
    // the peak RSS below is the server's and the client's streaming only.
    let chunk: bytes::Bytes = (0..1024 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let chunks = futures::stream::iter((0..args.large_mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = reqwest::Client::new()
        .post(format!(
            "{}/upload/storage/v1/b/media/o?uploadType=media&name=large.mp4",
            gcs.endpoint
        ))
        .header("Content-Type", "video/mp4")
        .header("Content-Length", (args.large_mib * 1024 * 1024).to_string())
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "uploading the large object: {}", r.status());
    let rss_before = peak_rss_mb();

    let tmp = tempfile::tempdir()?;
    let db = setup::open_db(None, tmp.path()).await?;
    let token = setup::bench_user(&db).await?;
    let mut state = AppState::new(db.clone());
    state.storage_env.emulator = Some(gcs.endpoint.clone());
    let server = setup::Server::start(state).await?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let auth = format!("Token {token}");
    let project: Value = http
        .post(format!("{base}/api/projects"))
        .header("Authorization", &auth)
        .json(&json!({"title": "media", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"}))
        .send()
        .await?
        .json()
        .await?;
    let pid = project["id"].as_i64().context("project")?;
    let key_json = match &args.key_file {
        Some(p) => std::fs::read_to_string(p)?,
        None => std::fs::read_to_string("testdata/conformance/test_service_account.not-a-test.json")
            .context("a key to sign with: pass --key-file")?,
    };
    for (presign, creds) in [(false, Value::Null), (true, json!(key_json))] {
        let mut body = json!({"project": pid, "bucket": "media", "presign": presign, "presign_ttl": 15});
        if presign {
            body["google_application_credentials"] = creds;
        }
        let r = http
            .post(format!("{base}/api/storages/gcs"))
            .header("Authorization", &auth)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "storage: {}", r.text().await?);
    }
    // The first storage (proxy) owns the bucket for resolution.
    let (_, _) = (pid, ());
    let task: Value = http
        .post(format!("{base}/api/tasks"))
        .header("Authorization", &auth)
        // Both objects in the task: resolve serves only URIs of its task.
        .json(&json!({"project": pid, "data": {"image": "gs://media/small.jpg", "video": "gs://media/large.mp4"}}))
        .send()
        .await?
        .json()
        .await?;
    let tid = task["id"].as_i64().context("task")?;
    let resolve = |key: &str| {
        format!(
            "{base}/tasks/{tid}/resolve/?fileuri={}",
            labelport_domain::resolve::encode_fileuri(&format!("gs://media/{key}"))
        )
    };
    let direct = |key: &str| format!("{}/storage/v1/b/media/o/{key}?alt=media", gcs.endpoint);

    // Latency, small object.
    for (name, url, a) in [
        ("direct emulator GET", direct("small.jpg"), None),
        ("resolve (proxy)", resolve("small.jpg"), Some(auth.as_str())),
    ] {
        let mut times = Vec::with_capacity(args.requests);
        for _ in 0..args.requests + 10 {
            times.push(timed_get(&http, &url, a).await?.0);
        }
        let mut times = times.split_off(10);
        times.sort();
        println!(
            "{name}, 2 KiB object: p50 {:.2} ms, p99 {:.2} ms over {} requests",
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.len()
        );
    }

    // Throughput, large object: 5 alternating rounds (direct, plain relay,
    // proxy), so all see the same machine state; medians and their ratios.
    let relay = start_relay(([127, 0, 0, 1], gcs.port).into()).await?;
    let (direct_url, proxy_url) = (direct("large.mp4"), resolve("large.mp4"));
    let relay_url = direct_url.replace(&gcs.endpoint, &format!("http://{relay}"));
    let (mut d_rates, mut r_rates, mut p_rates) = (Vec::new(), Vec::new(), Vec::new());
    // CPU seconds per GB moved, [bench process (server + client), emulator],
    // summed over the runs: where the proxy's cost goes.
    let (mut d_cpu, mut r_cpu, mut p_cpu) = ([0f64; 2], [0f64; 2], [0f64; 2]);
    let emulator_pid = gcs.pid().to_string();
    for _ in 0..5 {
        for (url, a, rates, cpu) in [
            (&direct_url, None, &mut d_rates, &mut d_cpu),
            (&relay_url, None, &mut r_rates, &mut r_cpu),
            (&proxy_url, Some(auth.as_str()), &mut p_rates, &mut p_cpu),
        ] {
            let before = [cpu_seconds("self"), cpu_seconds(&emulator_pid)];
            let (took, n) = timed_get(&http, url, a).await?;
            anyhow::ensure!(n as usize == args.large_mib * 1024 * 1024, "short read {n}");
            rates.push(n as f64 / 1e6 / took.as_secs_f64());
            cpu[0] += (cpu_seconds("self") - before[0]) / (n as f64 / 1e9);
            cpu[1] += (cpu_seconds(&emulator_pid) - before[1]) / (n as f64 / 1e9);
        }
    }
    for (name, cpu) in [("direct", d_cpu), ("plain relay", r_cpu), ("proxy", p_cpu)] {
        println!(
            "{name}: CPU seconds per GB, bench process (server + client, and the relay when used) {:.2}, emulator {:.2}",
            cpu[0] / 5.0,
            cpu[1] / 5.0
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (d, r, p) = (median(&mut d_rates), median(&mut r_rates), median(&mut p_rates));
    for (name, m, rates) in [
        ("direct emulator download", d, &d_rates),
        ("plain TCP relay download", r, &r_rates),
        ("proxy download", p, &p_rates),
    ] {
        println!(
            "{name}, {} MiB: median {m:.0} MB/s (runs {:.0?})",
            args.large_mib, rates
        );
    }
    println!(
        "proxy / direct = {:.2} (medians of 5 alternating runs; target ≥ 0.8)",
        p / d
    );
    println!(
        "plain relay / direct = {:.2}, proxy / plain relay = {:.2} (what any copying proxy reaches here)",
        r / d,
        p / r
    );
    println!(
        "peak RSS of the bench process (server + client, streaming {} MiB ten times): {:.0} MB ({rss_before:.0} MB before)",
        args.large_mib,
        peak_rss_mb()
    );

    // Signing speed.
    let signer = KeySigner::from_service_account_json(&key_json)?;
    let started = Instant::now();
    let n = 2000;
    for i in 0..n {
        let mut req = SignedUrlRequest::new("GET", "media", format!("images/img_{i}.jpg"), 900, chrono::Utc::now());
        req.host = Some(gcs.endpoint.clone());
        signed_url(&req, &signer).await?;
    }
    println!(
        "V4 signed URLs (local RSA-2048 key): {:.0} per second",
        n as f64 / started.elapsed().as_secs_f64()
    );
    server.stop().await?;
    db.close().await;
    Ok(())
}
