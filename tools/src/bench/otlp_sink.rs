//! A local OTLP/HTTP trace receiver for the benchmarks that measure the cost of
//! exporting traces (`--compare-observability`): it accepts every `POST /v1/traces`,
//! counts the requests and bytes, and answers 200 with an empty
//! `ExportTraceServiceResponse` (an empty protobuf message is zero bytes). It decodes
//! nothing: what is measured is the exporting side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// What the receiver got.
#[derive(Debug, Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// A running receiver; stops when dropped.
pub(super) struct OtlpSink {
    /// `http://127.0.0.1:<port>`: the `--otlp-endpoint` to give.
    pub(super) endpoint: String,
    received: Arc<Received>,
    stop: CancellationToken,
}

impl OtlpSink {
    /// Binds a free loopback port and serves there until dropped.
    pub(super) async fn start() -> anyhow::Result<OtlpSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the OTLP receiver")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Received::default());
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(received.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
        });
        Ok(OtlpSink {
            endpoint,
            received,
            stop,
        })
    }

    /// Export requests and bytes received so far.
    pub(super) fn received(&self) -> (u64, u64) {
        (
            self.received.requests.load(Ordering::Relaxed),
            self.received.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(State(received): State<Arc<Received>>, body: Bytes) -> impl IntoResponse {
    received.requests.fetch_add(1, Ordering::Relaxed);
    received
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Bytes::new(),
    )
}
