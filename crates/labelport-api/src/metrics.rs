//! Prometheus metrics (`GET /metrics`, admins only): the `metrics` facade
//! records where things happen (HTTP requests here, storage errors in
//! `labelport-storage`, syncs in `labelport-sync`, jobs in
//! `labelport-jobs`); scrape-time gauges read the database (queue depth,
//! export backlog and lag), so every process reports the same queue.
//! Rendered in the Prometheus text exposition format 0.0.4 by
//! `metrics-exporter-prometheus`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiResult;
use crate::state::AppState;

/// Counter: requests answered, by `method`, `route` (the route template,
/// `/api/tasks/{id}`; paths of no route are not counted) and `status`.
pub const HTTP_REQUESTS: &str = "labelport_http_requests_total";
/// Histogram (seconds): time to the response's head, by `method` and `route`.
pub const HTTP_DURATION: &str = "labelport_http_request_duration_seconds";
/// Counter: media bytes relayed by the proxy (`/tasks/{id}/resolve`, …).
pub const PROXY_BYTES: &str = "labelport_proxy_bytes_total";
/// Gauge: jobs by `kind` and `status` (`queued`, `running`, `done`, `failed`).
pub const JOBS: &str = "labelport_jobs";
/// Gauge: annotation saves not yet written to their export storages.
pub const EXPORT_PENDING: &str = "labelport_export_pending";
/// Gauge (seconds): age of the oldest save not yet exported (0: none).
pub const EXPORT_LAG: &str = "labelport_export_lag_seconds";

/// Seconds from `oldest` (RFC 3339; None: nothing waits) to `now`, never
/// negative (another process's clock may run ahead).
pub fn lag_seconds(oldest: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> f64 {
    oldest
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0.0, |t| {
            (now - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0) as f64 / 1000.0
        })
}

/// Serves `GET /metrics` alone, without credentials, for a process without
/// the API (`labelport worker --metrics-addr`): bind it to an address only
/// Prometheus reaches. Until `shutdown` resolves.
pub async fn serve_standalone(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    handle();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// The process's recorder, installed on first use (one per process: every
/// server and worker in it shares the counters). Call it when the process
/// starts ([`crate::serve`] and `labelport worker` do), so that nothing
/// recorded before the first scrape is lost. A thread of its own runs the
/// exporter's upkeep every 5 s (histograms are summarised even when nobody
/// scrapes, so their memory stays bounded).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(HTTP_DURATION.to_owned()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            )
            .expect("static buckets are valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's): ours
        // still renders, with what is recorded through it.
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows scrape-time gauges only");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!("metrics upkeep thread: {e}");
        }
        handle
    })
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to the response head, by method and route"
    );
    describe_counter!(PROXY_BYTES, Unit::Bytes, "Media bytes relayed by the streaming proxy");
    describe_gauge!(JOBS, "Jobs in the queue, by kind and status");
    describe_gauge!(
        EXPORT_PENDING,
        "Annotation saves not yet written to their export storages"
    );
    describe_gauge!(
        EXPORT_LAG,
        Unit::Seconds,
        "Age of the oldest annotation save not yet exported"
    );
    describe_counter!(
        labelport_sync::import::SYNC_OBJECTS,
        "Objects handled by syncs, by direction (import: listed; export: written, deleted)"
    );
    describe_counter!(labelport_sync::import::SYNC_TASKS, "Tasks created by import syncs");
    describe_counter!(
        labelport_storage::STORAGE_ERRORS,
        "Failed storage requests (each try), by family: transient, permission, auth, missing, invalid, other"
    );
    describe_counter!(labelport_jobs::JOBS_STARTED, "Job attempts begun, by kind");
    describe_counter!(
        labelport_jobs::JOBS_ENDED,
        "Job attempts ended, by kind and outcome (done, retried, failed, interrupted)"
    );
    describe_counter!(
        labelport_jobs::JOB_TAKEOVERS,
        "Jobs taken over from a worker whose lease ran out, by kind"
    );
}

/// Middleware: counts every request and times it, labelled by its route
/// template (never the raw path, so ids do not multiply the series).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    // A route layer: the route is always matched here.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unknown".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    ::metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// The metrics in Prometheus's text format, after reading the queue and
/// the export backlog from the database (when it cannot be read, those
/// gauges keep their last values and the scrape still succeeds).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let handle = handle();
    // A kind and status seen before but absent now (its jobs moved on or
    // were pruned) reads 0, not its last count.
    static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    // A database that does not answer leaves the gauges as they were; the
    // counters still render (they matter most then).
    let jobs = state.db.count_jobs_by_kind().await.unwrap_or_else(|e| {
        tracing::warn!("/metrics: reading the job queue: {e}");
        Vec::new()
    });
    if !jobs.is_empty() {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, status) in seen.iter() {
            if !jobs.iter().any(|(k, s, _)| k == kind && s == status) {
                ::metrics::gauge!(JOBS, "kind" => kind.clone(), "status" => status.clone()).set(0.0);
            }
        }
        for (kind, status, n) in &jobs {
            ::metrics::gauge!(JOBS, "kind" => kind.clone(), "status" => status.clone()).set(*n as f64);
            if !seen.iter().any(|(k, s)| k == kind && s == status) {
                seen.push((kind.clone(), status.clone()));
            }
        }
    }
    match state.db.export_backlog().await {
        Ok((pending, oldest)) => {
            ::metrics::gauge!(EXPORT_PENDING).set(pending as f64);
            let lag = oldest
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map_or(0.0, |t| {
                    (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                        .num_milliseconds()
                        .max(0) as f64
                        / 1000.0
                });
            ::metrics::gauge!(EXPORT_LAG).set(lag);
        }
        // As with the queue: the export gauges keep their last values.
        Err(e) => tracing::warn!("/metrics: reading the export backlog: {e}"),
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    ))
}
