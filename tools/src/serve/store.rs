//! Where `annals serve` keeps the log: the embedded store (segment files in the data
//! directory, the default), or a replicated NATS JetStream stream (`--store nats://...`),
//! the data directory then holding this node's copy, indexes and read models
//! (`eventstore::replicated`; docs/ARCHITECTURE.md, "The log on JetStream").

use anyhow::Context;
use eventstore::{EventStore, ReplicatedConfig, StoreConfig};

use super::Settings;

/// The log's backend, from `--store`, `--store-stream` and `--store-replicas`.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreBackend {
    /// Segment files in the data directory.
    Embedded,
    /// A JetStream stream on these servers.
    JetStream(ReplicatedConfig),
}

impl StoreBackend {
    /// `embedded` (or nothing), or `nats://H1:P1,H2:P2,...` (each host may carry its own
    /// scheme, `nats://` or `tls://`).
    pub fn parse(
        store: Option<&str>,
        stream: Option<String>,
        replicas: Option<usize>,
    ) -> anyhow::Result<StoreBackend> {
        let spec = store.map(str::trim).unwrap_or("embedded");
        if spec == "embedded" {
            anyhow::ensure!(
                stream.is_none() && replicas.is_none(),
                "--store-stream and --store-replicas need --store nats://..."
            );
            return Ok(StoreBackend::Embedded);
        }
        let defaults = ReplicatedConfig::default();
        let replicas = replicas.unwrap_or(defaults.replicas);
        anyhow::ensure!(
            (1..=5).contains(&replicas),
            "--store-replicas must be 1 to 5 (JetStream keeps at most 5 copies), not {replicas}"
        );
        Ok(StoreBackend::JetStream(ReplicatedConfig {
            urls: nats_urls(spec)?,
            stream: stream.unwrap_or(defaults.stream),
            replicas,
            ..defaults
        }))
    }
}

/// `nats://a:1,b:2` as `nats://a:1,nats://b:2`: the scheme of the first URL for hosts
/// without one.
fn nats_urls(spec: &str) -> anyhow::Result<String> {
    let mut scheme = None;
    let mut urls = Vec::new();
    for part in spec
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let url = match part.split_once("://") {
            Some((given, rest)) => {
                anyhow::ensure!(!rest.is_empty(), "--store nats:// names no server");
                anyhow::ensure!(
                    matches!(given, "nats" | "tls"),
                    "--store takes `embedded` or nats://HOST:PORT[,HOST:PORT...] (or tls://), not a {given}:// URL"
                );
                scheme.get_or_insert(given.to_owned());
                part.to_owned()
            }
            None => {
                let scheme = scheme.as_deref().context(
                    "--store takes `embedded` or nats://HOST:PORT[,HOST:PORT...]: the first server needs its nats:// or tls://",
                )?;
                format!("{scheme}://{part}")
            }
        };
        urls.push(url);
    }
    anyhow::ensure!(!urls.is_empty(), "--store nats:// names no server");
    Ok(urls.join(","))
}

/// Opens the store the settings name.
pub async fn open(settings: &Settings, config: StoreConfig) -> anyhow::Result<EventStore> {
    let data_dir = settings.data_dir.clone();
    match &settings.store {
        StoreBackend::Embedded => {
            tokio::task::spawn_blocking(move || EventStore::open(&data_dir, config))
                .await
                .context("opening the store panicked")?
                .with_context(|| {
                    format!("cannot open the store in {}", settings.data_dir.display())
                })
        }
        StoreBackend::JetStream(replicated) => {
            tracing::info!(
                nats_url = %outbox::config::redact(&replicated.urls),
                stream = %replicated.stream,
                replicas = replicated.replicas,
                "the log is on JetStream; catching this node's copy up"
            );
            let store = EventStore::open_replicated(&data_dir, config, replicated.clone())
                .await
                .with_context(|| {
                    format!(
                        "cannot open the log on JetStream stream {} (this node's copy in {})",
                        replicated.stream,
                        settings.data_dir.display()
                    )
                })?;
            tracing::info!(
                position = store.next_position().0,
                "this node's copy of the log caught up"
            );
            Ok(store)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_flag_takes_embedded_or_nats_servers() {
        assert_eq!(
            StoreBackend::parse(None, None, None).unwrap(),
            StoreBackend::Embedded
        );
        let StoreBackend::JetStream(config) =
            StoreBackend::parse(Some("nats://h1:1,h2:2, tls://h3:3"), None, None).unwrap()
        else {
            panic!("a JetStream store");
        };
        assert_eq!(config.urls, "nats://h1:1,nats://h2:2,tls://h3:3");
        assert_eq!((config.stream.as_str(), config.replicas), ("ANNALS_LOG", 3));
        let StoreBackend::JetStream(config) =
            StoreBackend::parse(Some("nats://h:1"), Some("LOG".into()), Some(1)).unwrap()
        else {
            panic!("a JetStream store");
        };
        assert_eq!((config.stream.as_str(), config.replicas), ("LOG", 1));
        for (store, replicas, says) in [
            ("http://h:1", None, "not a http:// URL"),
            ("h:1", None, "needs its nats://"),
            ("nats://", None, "names no server"),
            ("nats://h:1", Some(7), "1 to 5"),
            ("embedded", Some(3), "need --store nats://"),
        ] {
            let error = StoreBackend::parse(Some(store), None, replicas).unwrap_err();
            assert!(error.to_string().contains(says), "{store}: {error}");
        }
    }
}
