//! How the server meets the network: it listens (with TLS or without), keeps at most
//! `--max-connections` open ([`super::connections`]), serves until the shutdown begins
//! (a SIGTERM or SIGINT, [`cancel_on_signal`]), then drains within the shutdown timeout.

use anyhow::Context as _;
use api::AppState;
use tokio_util::sync::CancellationToken;

use super::{Settings, connections};

/// Listens on `settings.listen`, with TLS if `tls` is given, and serves `state` until
/// `shutdown` (then drains within the shutdown timeout).
pub(super) async fn serve_state(
    settings: &Settings,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr().context("no local address")?;
    let data_dir = settings.data_dir.display();
    match tls {
        Some(config) => {
            tracing::info!(%address, %data_dir, scheme = "https", "annals serving");
            let listener = crate::tls::TlsListener::new(listener, config)
                .context("cannot start the TLS listener")?;
            drain(settings, listener, state, shutdown).await
        }
        None => {
            tracing::info!(%address, %data_dir, scheme = "http", "annals serving");
            drain(settings, listener, state, shutdown).await
        }
    }
}

/// The default of `--max-connections`. Keep the limit below the process's open-file
/// limit (`ulimit -n`) less the store's files (the log's segments, sled's) and a few for
/// NATS and the providers, or accepting fails for want of descriptors before it does.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Serves `state` on `listener` until `shutdown`, then lets in-flight requests finish
/// within the shutdown timeout.
async fn drain<L>(
    settings: &Settings,
    listener: L,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // Live event streams end and /readyz turns 503 as soon as the shutdown begins.
    let api_shutdown = state.shutdown_token();
    let begin = shutdown.clone();
    let listener = connections::Limited::new(listener, settings.max_connections);
    let server = axum::serve(listener, api::app(state)).with_graceful_shutdown(async move {
        begin.cancelled().await;
        api_shutdown.cancel();
    });
    let drain_limit = async {
        shutdown.cancelled().await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    tokio::select! {
        served = server => served.context("the HTTP server failed")?,
        () = drain_limit => tracing::warn!(
            timeout = ?settings.shutdown_timeout,
            "requests still in flight after the shutdown timeout; closing anyway"
        ),
    }
    tracing::info!("HTTP server stopped");
    Ok(())
}

/// Cancels `shutdown` at the first SIGTERM or SIGINT.
pub(super) async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}
