//! The plain relay: the ceiling of a figure measured over HTTP. A minimal
//! axum server on loopback answers fixed responses from memory, the bytes
//! Labelport gave for the same request, fetched once: no database, no
//! authentication, no rendering. The same client timed against it in the
//! same run (same requests, same repeats) measures what the client, HTTP
//! and loopback alone cost on this machine, which no server can go below;
//! whatever Labelport takes beyond it is its own work. Used by `api`
//! (task-list pages), `load` (the writing clients) and `ui` (the data
//! manager's HTML and whole page loads).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// One answer as Labelport gave it: status, headers and body.
#[derive(Clone)]
pub struct Fixed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fixed {
    /// Labelport's `response`, read whole. Headers about the connection or
    /// the transfer (length, chunking, date, cookies) are left out: the
    /// relay's HTTP stack writes its own.
    pub async fn from_response(response: reqwest::Response) -> anyhow::Result<Fixed> {
        let status = response.status();
        let mut headers = response.headers().clone();
        for name in [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::DATE,
            header::SET_COOKIE,
        ] {
            headers.remove(name);
        }
        let body = response.bytes().await?;
        Ok(Fixed { status, headers, body })
    }
}

/// A plain relay on `127.0.0.1`, serving until [`Relay::stop`].
pub struct Relay {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Relay {
    /// Serves `answers`, keyed by path and query (`/api/tasks?page=2`), to
    /// any method on a free port; a request's body is read and dropped, a
    /// path not in the map gets 404. Accepted connections set
    /// `TCP_NODELAY`, as Labelport's do.
    pub async fn start(answers: HashMap<String, Fixed>) -> anyhow::Result<Relay> {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::new(answers))
            .layer(DefaultBodyLimit::disable());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Relay { base, stop, handle })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await??;
        Ok(())
    }
}

async fn answer(State(answers): State<Arc<HashMap<String, Fixed>>>, uri: Uri, _body: Bytes) -> Response {
    let key = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match answers.get(key) {
        Some(fixed) => (fixed.status, fixed.headers.clone(), fixed.body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
