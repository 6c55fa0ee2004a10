//! The test kit's fakes of Workload Identity Federation for the end-to-end
//! suite (which drives the real binary from Python): the EC2 metadata
//! service, Google STS and IAM Credentials ([`FakeWif`]), and a proxy in
//! front of the GCS emulator that lets through only the service-account
//! tokens the fake IAM issued.
//!
//! `labelport-fakes --gcs <emulator URL> --key <service-account key file>
//! --audience <pool provider>` prints one JSON line, `{"wif": URL,
//! "iam_api": URL, "gcs": URL, "report": URL}`, then runs until killed. `GET <report>` answers
//! what was served and every check that failed; `POST <report>/sign-blob`
//! with `{"refuse": true}` makes IAM refuse signBlob with a 403 (and its
//! testIamPermissions say the permission is not held) until posted
//! `false`. The proxy keeps the bucket's CORS policy, as GCS does (the
//! emulator keeps none), starting empty.

use std::sync::Arc;

use axum::routing::{get, post};
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
    proxy.set_cors(vec![]);
    let refusals = {
        let wif = wif.clone();
        move |Json(body): Json<serde_json::Value>| {
            let wif = wif.clone();
            async move {
                let refuse = body["refuse"].as_bool().unwrap_or(false);
                wif.configure(|e| {
                    e.refuse_sign_blob = refuse.then(|| {
                        (
                            403,
                            "Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist)."
                                .to_owned(),
                        )
                    })
                });
                Json(json!({ "refuse": refuse }))
            }
        }
    };
    let report = {
        let (wif, proxy) = (wif.clone(), proxy.clone());
        axum::Router::new()
            .route(
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
            .route("/sign-blob", post(refusals))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let report_url = format!("http://{}", listener.local_addr()?);
    println!(
        "{}",
        json!({"wif": wif.url, "iam_api": wif.iam_api_url, "gcs": proxy.endpoint, "report": report_url})
    );
    axum::serve(listener, report).await?;
    Ok(())
}
