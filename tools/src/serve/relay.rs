//! The outbox relay inside `annals serve` (`--nats-url`): started beside the HTTP server,
//! stopped after it drained and before the store closes.

use std::time::Duration;

use anyhow::Context;
use eventstore::EventStore;
use outbox::{Relay, RelayConfig, StatusHandle};

use super::Settings;

/// The outbox relay the server runs (under its supervisor).
pub(super) struct ServerRelay {
    pub(super) relay: Relay,
    /// How long the relay may take to stop: its own grace for pending acknowledgements,
    /// plus a margin.
    pub(super) stop_timeout: Duration,
}

impl ServerRelay {
    /// A handle on the relay's status, kept across its runs.
    pub(super) fn status(&self) -> StatusHandle {
        self.relay.status()
    }
}

/// Prepares the outbox relay on `store` if `settings` name a NATS URL; says so if not.
pub(super) fn start_relay(
    settings: &Settings,
    store: &EventStore,
    chaos: &chaos::Chaos,
) -> anyhow::Result<Option<ServerRelay>> {
    let Some(url) = &settings.nats_url else {
        tracing::info!("outbox relay off (no --nats-url or ANNALS_NATS_URL)");
        return Ok(None);
    };
    let config = RelayConfig {
        tls: settings.nats_tls.clone(),
        chaos: chaos.clone(),
        json_payloads: crate::event_json::json_payloads(),
        ..RelayConfig::new(url.clone())
    };
    let stop_timeout = config.shutdown_grace + Duration::from_secs(5);
    let stream = config.stream.clone();
    let relay = Relay::new(store.clone(), config).context("cannot start the outbox relay")?;
    tracing::info!(
        nats_url = %outbox::config::redact(url),
        %stream,
        "outbox relay on"
    );
    Ok(Some(ServerRelay {
        relay,
        stop_timeout,
    }))
}
