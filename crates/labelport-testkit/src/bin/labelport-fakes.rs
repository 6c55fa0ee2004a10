//! The test kit's fakes of Workload Identity Federation for the end-to-end
//! suite (which drives the real binary from Python): the EC2 metadata
//! service, Google STS and IAM Credentials ([`FakeWif`]), and a proxy in
//! front of the GCS emulator that lets through only the service-account
//! tokens the fake IAM issued.
//!
//! `labelport-fakes --gcs <emulator URL> --key <service-account key file>
//! --audience <pool provider>` prints one JSON line, `{"wif": URL, "gcs":
//! URL, "report": URL}`, then runs until killed. `GET <report>` answers
//! what was served and every check that failed.

use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use labelport_testkit::{FakeWif, FaultProxy};
use serde_json::json;

fn arg(name: &str) -> anyhow::Result<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!("usage: labelport-fakes --gcs URL --key FILE --audience AUDIENCE (missing {name})")
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let gcs = arg("--gcs")?;
    let key = std::fs::read_to_string(arg("--key")?)?;
    let wif = Arc::new(FakeWif::start(&key, &arg("--audience")?).await?);
    let proxy = Arc::new(FaultProxy::start(&gcs).await?);
    proxy.require_bearer(wif.bearer_check());
    let report = {
        let (wif, proxy) = (wif.clone(), proxy.clone());
        axum::Router::new().route(
            "/",
            get(move || {
                let (wif, proxy) = (wif.clone(), proxy.clone());
                async move {
                    Json(json!({
                        "seen": wif.seen(),
                        "violations": wif.violations(),
                        "unauthorized": proxy.unauthorized(),
                        "authorized": proxy.authorized(),
                    }))
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let report_url = format!("http://{}", listener.local_addr()?);
    println!(
        "{}",
        json!({"wif": wif.url, "gcs": proxy.endpoint, "report": report_url})
    );
    axum::serve(listener, report).await?;
    Ok(())
}
